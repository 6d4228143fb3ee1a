// Causal sliding-window attention (Mistral, Gemma 2's local layers): query i sees keys i - w < j <= i, with the window w a quarter of the keys (so --dims keeps it a quarter).
// Written by examples/build_examples.py; re-size with --dims.
module {
  func.func @sliding_window_attention(%arg0: tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>, %arg1: tensor<1x2x37x16xbf16, {axes = ["b", "h", "x", "d"]}>, %arg2: tensor<1x2x37x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}> attributes {arg_names = ["Q", "K", "V"]} {
    %0 = "napkin.contract"(%arg0, %arg1) : (tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>, tensor<1x2x37x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>
    %1 = "napkin.scale"(%0) {factor = 2.500000e-01 : f64} : (tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>
    %2 = "napkin.mask"(%1) ({
    ^bb0(%arg3: index, %arg4: index, %arg5: index, %arg6: index):
      %c4 = arith.constant 4 : index
      %7 = arith.ceildivsi %arg6, %c4 : index
      %8 = arith.cmpi sle, %arg4, %arg3 : index
      %9 = arith.subi %arg3, %arg4 : index
      %10 = arith.cmpi slt, %9, %7 : index
      %11 = arith.andi %8, %10 : i1
      gpu.yield %11 : i1
    }) {cols = "x", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>, rows = "q"} : (tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>
    %3 = "napkin.softmax"(%2) {axis = "x"} : (tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>
    %4 = "napkin.cast"(%3) : (tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x37xbf16, {axes = ["b", "h", "q", "x"]}>
    %5 = "napkin.contract"(%4, %arg2) : (tensor<1x2x37x37xbf16, {axes = ["b", "h", "q", "x"]}>, tensor<1x2x37x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x16xf32, {axes = ["b", "h", "q", "d"]}>
    %6 = "napkin.cast"(%5) : (tensor<1x2x37x16xf32, {axes = ["b", "h", "q", "d"]}>) -> tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>
    return %6 : tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>
  }
}
