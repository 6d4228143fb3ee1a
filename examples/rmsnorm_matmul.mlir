// RMSNorm feeding a matmul: Y = (X / sqrt(mean_k X² + eps) · g) W.
// Written by examples/build_examples.py; re-size with --dims.
module {
  func.func @rmsnorm_matmul(%arg0: tensor<45x64xbf16, {axes = ["m", "k"]}>, %arg1: tensor<64xbf16, {axes = ["k"]}>, %arg2: tensor<64x24xbf16, {axes = ["k", "n"]}>) -> tensor<45x24xbf16, {axes = ["m", "n"]}> attributes {arg_names = ["X", "G", "W"]} {
    %0 = "napkin.cast"(%arg0) : (tensor<45x64xbf16, {axes = ["m", "k"]}>) -> tensor<45x64xf32, {axes = ["m", "k"]}>
    %1 = "napkin.mul"(%0, %0) : (tensor<45x64xf32, {axes = ["m", "k"]}>, tensor<45x64xf32, {axes = ["m", "k"]}>) -> tensor<45x64xf32, {axes = ["m", "k"]}>
    %2 = "napkin.reduce"(%1) {axis = "k", kind = "sum"} : (tensor<45x64xf32, {axes = ["m", "k"]}>) -> tensor<45xf32, {axes = ["m"]}>
    %3 = "napkin.map"(%2) ({
    ^bb0(%arg3: f32):
      %cst = arith.constant 1.562500e-02 : f32
      %10 = arith.mulf %arg3, %cst : f32
      %cst_0 = arith.constant 9.99999997E-7 : f32
      %11 = arith.addf %10, %cst_0 : f32
      %12 = math.rsqrt %11 : f32
      gpu.yield %12 : f32
    }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<45xf32, {axes = ["m"]}>) -> tensor<45xf32, {axes = ["m"]}>
    %4 = "napkin.mul"(%0, %3) : (tensor<45x64xf32, {axes = ["m", "k"]}>, tensor<45xf32, {axes = ["m"]}>) -> tensor<45x64xf32, {axes = ["m", "k"]}>
    %5 = "napkin.cast"(%arg1) : (tensor<64xbf16, {axes = ["k"]}>) -> tensor<64xf32, {axes = ["k"]}>
    %6 = "napkin.mul"(%4, %5) : (tensor<45x64xf32, {axes = ["m", "k"]}>, tensor<64xf32, {axes = ["k"]}>) -> tensor<45x64xf32, {axes = ["m", "k"]}>
    %7 = "napkin.cast"(%6) : (tensor<45x64xf32, {axes = ["m", "k"]}>) -> tensor<45x64xbf16, {axes = ["m", "k"]}>
    %8 = "napkin.contract"(%7, %arg2) : (tensor<45x64xbf16, {axes = ["m", "k"]}>, tensor<64x24xbf16, {axes = ["k", "n"]}>) -> tensor<45x24xf32, {axes = ["m", "n"]}>
    %9 = "napkin.cast"(%8) : (tensor<45x24xf32, {axes = ["m", "n"]}>) -> tensor<45x24xbf16, {axes = ["m", "n"]}>
    return %9 : tensor<45x24xbf16, {axes = ["m", "n"]}>
  }
}
