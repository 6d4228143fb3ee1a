// Grouped-query attention (2 key/value heads, 2 query heads each) with a bias table per key/value head shared by its query heads.
// Written by examples/build_examples.py; re-size with --dims.
module {
  func.func @gqa_bias_attention(%arg0: tensor<1x2x2x37x16xbf16, {axes = ["b", "h", "r", "q", "d"]}>, %arg1: tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>, %arg2: tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>, %arg3: tensor<2x37x29xbf16, {axes = ["h", "q", "x"]}>) -> tensor<1x2x2x37x16xbf16, {axes = ["b", "h", "r", "q", "d"]}> attributes {arg_names = ["Q", "K", "V", "Bias"]} {
    %0 = "napkin.contract"(%arg0, %arg1) : (tensor<1x2x2x37x16xbf16, {axes = ["b", "h", "r", "q", "d"]}>, tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x2x37x29xf32, {axes = ["b", "h", "r", "q", "x"]}>
    %1 = "napkin.scale"(%0) {factor = 2.500000e-01 : f64} : (tensor<1x2x2x37x29xf32, {axes = ["b", "h", "r", "q", "x"]}>) -> tensor<1x2x2x37x29xf32, {axes = ["b", "h", "r", "q", "x"]}>
    %2 = "napkin.cast"(%arg3) : (tensor<2x37x29xbf16, {axes = ["h", "q", "x"]}>) -> tensor<2x37x29xf32, {axes = ["h", "q", "x"]}>
    %3 = "napkin.add"(%1, %2) : (tensor<1x2x2x37x29xf32, {axes = ["b", "h", "r", "q", "x"]}>, tensor<2x37x29xf32, {axes = ["h", "q", "x"]}>) -> tensor<1x2x2x37x29xf32, {axes = ["b", "h", "r", "q", "x"]}>
    %4 = "napkin.softmax"(%3) {axis = "x"} : (tensor<1x2x2x37x29xf32, {axes = ["b", "h", "r", "q", "x"]}>) -> tensor<1x2x2x37x29xf32, {axes = ["b", "h", "r", "q", "x"]}>
    %5 = "napkin.cast"(%4) : (tensor<1x2x2x37x29xf32, {axes = ["b", "h", "r", "q", "x"]}>) -> tensor<1x2x2x37x29xbf16, {axes = ["b", "h", "r", "q", "x"]}>
    %6 = "napkin.contract"(%5, %arg2) : (tensor<1x2x2x37x29xbf16, {axes = ["b", "h", "r", "q", "x"]}>, tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x2x37x16xf32, {axes = ["b", "h", "r", "q", "d"]}>
    %7 = "napkin.cast"(%6) : (tensor<1x2x2x37x16xf32, {axes = ["b", "h", "r", "q", "d"]}>) -> tensor<1x2x2x37x16xbf16, {axes = ["b", "h", "r", "q", "d"]}>
    return %7 : tensor<1x2x2x37x16xbf16, {axes = ["b", "h", "r", "q", "d"]}>
  }
}
