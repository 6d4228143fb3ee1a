// Gemma 2: scores soft-capped as cap·tanh(s/cap) before the softmax (cap = 50).
// Written by examples/build_examples.py; re-size with --dims.
module {
  func.func @softcap_attention(%arg0: tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>, %arg1: tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>, %arg2: tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}> attributes {arg_names = ["Q", "K", "V"]} {
    %0 = "napkin.contract"(%arg0, %arg1) : (tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>, tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %1 = "napkin.scale"(%0) {factor = 2.500000e-01 : f64} : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %2 = "napkin.scale"(%1) {factor = 2.000000e-02 : f64} : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %3 = "napkin.tanh"(%2) : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %4 = "napkin.scale"(%3) {factor = 5.000000e+01 : f64} : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %5 = "napkin.softmax"(%4) {axis = "x"} : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %6 = "napkin.cast"(%5) : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x29xbf16, {axes = ["b", "h", "q", "x"]}>
    %7 = "napkin.contract"(%6, %arg2) : (tensor<1x2x37x29xbf16, {axes = ["b", "h", "q", "x"]}>, tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x16xf32, {axes = ["b", "h", "q", "d"]}>
    %8 = "napkin.cast"(%7) : (tensor<1x2x37x16xf32, {axes = ["b", "h", "q", "d"]}>) -> tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>
    return %8 : tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>
  }
}
