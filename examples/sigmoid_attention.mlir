// Sigmoid attention (Apple, 2024): O = sigmoid(s + b) V with b = -log(x) and no softmax.
// Written by examples/build_examples.py; re-size with --dims.
module {
  func.func @sigmoid_attention(%arg0: tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>, %arg1: tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>, %arg2: tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}> attributes {arg_names = ["Q", "K", "V"]} {
    %0 = "napkin.contract"(%arg0, %arg1) : (tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>, tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %1 = "napkin.scale"(%0) {factor = 2.500000e-01 : f64} : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %2 = "napkin.map"(%1) ({
    ^bb0(%arg3: f32):
      %cst = arith.constant -3.36729574 : f32
      %6 = arith.addf %arg3, %cst : f32
      %cst_0 = arith.constant 1.000000e+00 : f32
      %7 = arith.negf %6 : f32
      %8 = math.exp %7 : f32
      %9 = arith.addf %cst_0, %8 : f32
      %10 = arith.divf %cst_0, %9 : f32
      gpu.yield %10 : f32
    }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>
    %3 = "napkin.cast"(%2) : (tensor<1x2x37x29xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x37x29xbf16, {axes = ["b", "h", "q", "x"]}>
    %4 = "napkin.contract"(%3, %arg2) : (tensor<1x2x37x29xbf16, {axes = ["b", "h", "q", "x"]}>, tensor<1x2x29x16xbf16, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x37x16xf32, {axes = ["b", "h", "q", "d"]}>
    %5 = "napkin.cast"(%4) : (tensor<1x2x37x16xf32, {axes = ["b", "h", "q", "d"]}>) -> tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>
    return %5 : tensor<1x2x37x16xbf16, {axes = ["b", "h", "q", "d"]}>
  }
}
