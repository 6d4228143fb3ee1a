// Attention with its softmax written box by box: m = max_x s, p = e^(s - m), l = Σ_x p, O = (p / l) V.
// Written by examples/build_examples.py; re-size with --dims.
module {
  func.func @softmax_attention_by_hand(%arg0: tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>, %arg1: tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>, %arg2: tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}> attributes {arg_names = ["Q", "K", "V"]} {
    %0 = "napkin.contract"(%arg0, %arg1) : (tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>, tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %1 = "napkin.scale"(%0) {factor = 2.500000e-01 : f64} : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %2 = "napkin.reduce"(%1) {axis = "x", kind = "max"} : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37xf32, {axes = ["b", "h", "q"]}>
    %3 = "napkin.sub"(%1, %2) : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>, tensor<1x2x37xf32, {axes = ["b", "h", "q"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %4 = "napkin.exp"(%3) : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %5 = "napkin.reduce"(%4) {axis = "x", kind = "sum"} : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37xf32, {axes = ["b", "h", "q"]}>
    %6 = "napkin.div"(%4, %5) : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>, tensor<1x2x37xf32, {axes = ["b", "h", "q"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %7 = "napkin.cast"(%6) : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x29xbf16, {axes = ["b", "h", "q", "x"]}>
    %8 = "napkin.contract"(%7, %arg2) : (tensor<1x2x37x29xbf16, {axes = ["b", "h", "q", "x"]}>, tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x16xf32, {axes = ["b", "h", "q", "d"]}>
    %9 = "napkin.cast"(%8) : (tensor<1x2x37x16xf32, {axes = ["b", "h", "q", "d"]}>) -> tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>
    return %9 : tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>
  }
}
