// Causal attention aligned at the bottom right (a chunk of new queries after a cache of keys: the last query sees every key): j - n_cols <= i - n_rows, here 29 queries and 37 keys.
// Written by examples/build_examples.py; re-size with --dims.
module {
  func.func @causal_bottom_right_attention(%arg0: tensor<1x2x29x16xbf16, {axes = ["b", "h", "q", "d"]}>, %arg1: tensor<1x2x37x16xbf16, {axes = ["b", "h", "x", "d"]}>, %arg2: tensor<1x2x37x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x29x16xbf16, {axes = ["b", "h", "q", "d"]}> attributes {arg_names = ["Q", "K", "V"]} {
    %0 = "napkin.contract"(%arg0, %arg1) : (tensor<1x2x29x16xbf16, {axes = ["b", "h", "q", "d"]}>, tensor<1x2x37x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x29x37xf32, {axes = ["b", "h", "q", "x"]}>
    %1 = "napkin.scale"(%0) {factor = 2.500000e-01 : f64} : (tensor<1x2x29x37xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x29x37xf32, {axes = ["b", "h", "q", "x"]}>
    %2 = "napkin.mask"(%1) ({
    ^bb0(%arg3: index, %arg4: index, %arg5: index, %arg6: index):
      %7 = arith.subi %arg4, %arg6 : index
      %8 = arith.subi %arg3, %arg5 : index
      %9 = arith.cmpi sle, %7, %8 : index
      gpu.yield %9 : i1
    }) {cols = "x", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>, rows = "q"} : (tensor<1x2x29x37xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x29x37xf32, {axes = ["b", "h", "q", "x"]}>
    %3 = "napkin.softmax"(%2) {axis = "x"} : (tensor<1x2x29x37xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x29x37xf32, {axes = ["b", "h", "q", "x"]}>
    %4 = "napkin.cast"(%3) : (tensor<1x2x29x37xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x29x37xbf16, {axes = ["b", "h", "q", "x"]}>
    %5 = "napkin.contract"(%4, %arg2) : (tensor<1x2x29x37xbf16, {axes = ["b", "h", "q", "x"]}>, tensor<1x2x37x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x29x16xf32, {axes = ["b", "h", "q", "d"]}>
    %6 = "napkin.cast"(%5) : (tensor<1x2x29x16xf32, {axes = ["b", "h", "q", "d"]}>) -> tensor<1x2x29x16xbf16, {axes = ["b", "h", "q", "d"]}>
    return %6 : tensor<1x2x29x16xbf16, {axes = ["b", "h", "q", "d"]}>
  }
}
