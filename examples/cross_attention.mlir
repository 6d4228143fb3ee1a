// Cross-attention whose value head dim e (24) differs from the key head dim d (16).
// Written by examples/build_examples.py; re-size with --dims.
module {
  func.func @cross_attention(%arg0: tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>, %arg1: tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>, %arg2: tensor<1x2x29x24xbf16, {axes = ["b", "h", "x", "e"]}>) -> tensor<1x2x37x24xbf16, {axes = ["b", "h", "q", "e"]}> attributes {arg_names = ["Q", "K", "V"]} {
    %0 = "napkin.contract"(%arg0, %arg1) : (tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>, tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %1 = "napkin.scale"(%0) {factor = 2.500000e-01 : f64} : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %2 = "napkin.softmax"(%1) {axis = "x"} : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %3 = "napkin.cast"(%2) : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x29xbf16, {axes = ["b", "h", "q", "x"]}>
    %4 = "napkin.contract"(%3, %arg2) : (tensor<1x2x37x29xbf16, {axes = ["b", "h", "q", "x"]}>, tensor<1x2x29x24xbf16, {axes = ["b", "h", "x", "e"]}>) -> tensor<1x2x37x24xf32, {axes = ["b", "h", "q", "e"]}>
    %5 = "napkin.cast"(%4) : (tensor<1x2x37x24xf32, {axes = ["b", "h", "q", "e"]}>) -> tensor<1x2x37x24xbf16, {axes = ["b", "h", "q", "e"]}>
    return %5 : tensor<1x2x37x24xbf16, {axes = ["b", "h", "q", "e"]}>
  }
}
