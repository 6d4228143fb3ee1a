// Prefix-LM attention (T5, PaliGemma): the first p keys are seen by every query, the rest causally: j < p or j <= i, with p a quarter of the keys.
// Written by examples/build_examples.py; re-size with --dims.
module {
  func.func @prefix_lm_attention(%arg0: tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>, %arg1: tensor<1x2x37x16xbf16, {axes = ["b", "h", "x", "d"]}>, %arg2: tensor<1x2x37x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}> attributes {arg_names = ["Q", "K", "V"]} {
    %0 = "napkin.contract"(%arg0, %arg1) : (tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>, tensor<1x2x37x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>
    %1 = "napkin.scale"(%0) {factor = 2.500000e-01 : f64} : (tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>
    %2 = "napkin.mask"(%1) ({
    ^bb0(%arg3: index, %arg4: index, %arg5: index, %arg6: index):
      %c4 = arith.constant 4 : index
      %7 = arith.ceildivsi %arg6, %c4 : index
      %8 = arith.cmpi slt, %arg4, %7 : index
      %9 = arith.cmpi sle, %arg4, %arg3 : index
      %10 = arith.ori %8, %9 : i1
      gpu.yield %10 : i1
    }) {cols = "x", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>, rows = "q"} : (tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>
    %3 = "napkin.softmax"(%2) {axis = "x"} : (tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>
    %4 = "napkin.cast"(%3) : (tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x37xbf16, {axes = ["b", "h", "q", "x"]}>
    %5 = "napkin.contract"(%4, %arg2) : (tensor<1x2x37x37xbf16, {axes = ["b", "h", "q", "x"]}>, tensor<1x2x37x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x16xf32, {axes = ["b", "h", "q", "d"]}>
    %6 = "napkin.cast"(%5) : (tensor<1x2x37x16xf32, {axes = ["b", "h", "q", "d"]}>) -> tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>
    return %6 : tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>
  }
}
