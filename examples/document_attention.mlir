// Document masking (packed sequences): a query sees causally the keys of its own document, read from segment ids per query (QDoc[b, q]) and per key (KDoc[b, x]).
// Written by examples/build_examples.py; re-size with --dims.
module {
  func.func @document_attention(%arg0: tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>, %arg1: tensor<1x2x37x16xbf16, {axes = ["b", "h", "x", "d"]}>, %arg2: tensor<1x2x37x16xbf16, {axes = ["b", "h", "x", "d"]}>, %arg3: tensor<1x37xi32, {axes = ["b", "q"]}>, %arg4: tensor<1x37xi32, {axes = ["b", "x"]}>) -> tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}> attributes {arg_names = ["Q", "K", "V", "QDoc", "KDoc"]} {
    %0 = "napkin.contract"(%arg0, %arg1) : (tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>, tensor<1x2x37x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>
    %1 = "napkin.scale"(%0) {factor = 2.500000e-01 : f64} : (tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>
    %2 = "napkin.mask"(%1, %arg3, %arg4) ({
    ^bb0(%arg5: index, %arg6: index, %arg7: index, %arg8: index, %arg9: i32, %arg10: i32):
      %7 = arith.cmpi eq, %arg9, %arg10 : i32
      %8 = arith.cmpi sle, %arg6, %arg5 : index
      %9 = arith.andi %7, %8 : i1
      gpu.yield %9 : i1
    }) {cols = "x", operandSegmentSizes = array<i32: 1, 0, 1, 1, 0, 0>, rows = "q"} : (tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>, tensor<1x37xi32, {axes = ["b", "q"]}>, tensor<1x37xi32, {axes = ["b", "x"]}>) -> tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>
    %3 = "napkin.softmax"(%2) {axis = "x"} : (tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>
    %4 = "napkin.cast"(%3) : (tensor<1x2x37x37xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x37xbf16, {axes = ["b", "h", "q", "x"]}>
    %5 = "napkin.contract"(%4, %arg2) : (tensor<1x2x37x37xbf16, {axes = ["b", "h", "q", "x"]}>, tensor<1x2x37x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x16xf32, {axes = ["b", "h", "q", "d"]}>
    %6 = "napkin.cast"(%5) : (tensor<1x2x37x16xf32, {axes = ["b", "h", "q", "d"]}>) -> tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>
    return %6 : tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>
  }
}
