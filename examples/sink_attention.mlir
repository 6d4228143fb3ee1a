// Attention with a per-head sink logit in the normalizer (gpt-oss): O = Σ_x e^(s_x - m) V_x / (e^(Sink_h - m) + Σ_x e^(s_x - m)) with m = max(max_x s, Sink_h), written box by box.
// Written by examples/build_examples.py; re-size with --dims.
module {
  func.func @sink_attention(%arg0: tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>, %arg1: tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>, %arg2: tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>, %arg3: tensor<2xbf16, {axes = ["h"]}>) -> tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}> attributes {arg_names = ["Q", "K", "V", "Sink"]} {
    %0 = "napkin.contract"(%arg0, %arg1) : (tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>, tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %1 = "napkin.scale"(%0) {factor = 2.500000e-01 : f64} : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %2 = "napkin.cast"(%arg3) : (tensor<2xbf16, {axes = ["h"]}>) -> tensor<2xf32, {axes = ["h"]}>
    %3 = "napkin.reduce"(%1) {axis = "x", kind = "max"} : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37xf32, {axes = ["b", "h", "q"]}>
    %4 = "napkin.max"(%3, %2) : (tensor<1x2x37xf32, {axes = ["b", "h", "q"]}>, tensor<2xf32, {axes = ["h"]}>) -> tensor<1x2x37xf32, {axes = ["b", "h", "q"]}>
    %5 = "napkin.sub"(%1, %4) : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>, tensor<1x2x37xf32, {axes = ["b", "h", "q"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %6 = "napkin.exp"(%5) : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %7 = "napkin.reduce"(%6) {axis = "x", kind = "sum"} : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37xf32, {axes = ["b", "h", "q"]}>
    %8 = "napkin.sub"(%2, %4) : (tensor<2xf32, {axes = ["h"]}>, tensor<1x2x37xf32, {axes = ["b", "h", "q"]}>) -> tensor<2x1x37xf32, {axes = ["h", "b", "q"]}>
    %9 = "napkin.exp"(%8) : (tensor<2x1x37xf32, {axes = ["h", "b", "q"]}>) -> tensor<2x1x37xf32, {axes = ["h", "b", "q"]}>
    %10 = "napkin.add"(%7, %9) : (tensor<1x2x37xf32, {axes = ["b", "h", "q"]}>, tensor<2x1x37xf32, {axes = ["h", "b", "q"]}>) -> tensor<1x2x37xf32, {axes = ["b", "h", "q"]}>
    %11 = "napkin.div"(%6, %10) : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>, tensor<1x2x37xf32, {axes = ["b", "h", "q"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %12 = "napkin.cast"(%11) : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x29xbf16, {axes = ["b", "h", "q", "x"]}>
    %13 = "napkin.contract"(%12, %arg2) : (tensor<1x2x37x29xbf16, {axes = ["b", "h", "q", "x"]}>, tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x16xf32, {axes = ["b", "h", "q", "d"]}>
    %14 = "napkin.cast"(%13) : (tensor<1x2x37x16xf32, {axes = ["b", "h", "q", "d"]}>) -> tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>
    return %14 : tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>
  }
}
