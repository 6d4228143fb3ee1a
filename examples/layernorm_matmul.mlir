// LayerNorm feeding a matmul: Y = ((X - μ) / sqrt(var + eps) · g + β) W with μ = mean_k X and var = mean_k (X - μ)².
// Written by examples/build_examples.py; re-size with --dims.
module {
  func.func @layernorm_matmul(%arg0: tensor<45x64xbf16, {axes = ["m", "k"]}>, %arg1: tensor<64xbf16, {axes = ["k"]}>, %arg2: tensor<64xbf16, {axes = ["k"]}>, %arg3: tensor<64x24xbf16, {axes = ["k", "n"]}>) -> tensor<45x24xbf16, {axes = ["m", "n"]}> attributes {arg_names = ["X", "G", "Beta", "W"]} {
    %0 = "napkin.cast"(%arg0) : (tensor<45x64xbf16, {axes = ["m", "k"]}>) -> tensor<45x64xf32, {axes = ["m", "k"]}>
    %1 = "napkin.reduce"(%0) {axis = "k", kind = "sum"} : (tensor<45x64xf32, {axes = ["m", "k"]}>) -> tensor<45xf32, {axes = ["m"]}>
    %2 = "napkin.scale"(%1) {factor = 1.562500e-02 : f64} : (tensor<45xf32, {axes = ["m"]}>) -> tensor<45xf32, {axes = ["m"]}>
    %3 = "napkin.sub"(%0, %2) : (tensor<45x64xf32, {axes = ["m", "k"]}>, tensor<45xf32, {axes = ["m"]}>) -> tensor<45x64xf32, {axes = ["m", "k"]}>
    %4 = "napkin.mul"(%3, %3) : (tensor<45x64xf32, {axes = ["m", "k"]}>, tensor<45x64xf32, {axes = ["m", "k"]}>) -> tensor<45x64xf32, {axes = ["m", "k"]}>
    %5 = "napkin.reduce"(%4) {axis = "k", kind = "sum"} : (tensor<45x64xf32, {axes = ["m", "k"]}>) -> tensor<45xf32, {axes = ["m"]}>
    %6 = "napkin.scale"(%5) {factor = 1.562500e-02 : f64} : (tensor<45xf32, {axes = ["m"]}>) -> tensor<45xf32, {axes = ["m"]}>
    %7 = "napkin.map"(%6) ({
    ^bb0(%arg4: f32):
      %cst = arith.constant 9.99999974E-6 : f32
      %16 = arith.addf %arg4, %cst : f32
      %17 = math.rsqrt %16 : f32
      gpu.yield %17 : f32
    }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<45xf32, {axes = ["m"]}>) -> tensor<45xf32, {axes = ["m"]}>
    %8 = "napkin.mul"(%3, %7) : (tensor<45x64xf32, {axes = ["m", "k"]}>, tensor<45xf32, {axes = ["m"]}>) -> tensor<45x64xf32, {axes = ["m", "k"]}>
    %9 = "napkin.cast"(%arg1) : (tensor<64xbf16, {axes = ["k"]}>) -> tensor<64xf32, {axes = ["k"]}>
    %10 = "napkin.mul"(%8, %9) : (tensor<45x64xf32, {axes = ["m", "k"]}>, tensor<64xf32, {axes = ["k"]}>) -> tensor<45x64xf32, {axes = ["m", "k"]}>
    %11 = "napkin.cast"(%arg2) : (tensor<64xbf16, {axes = ["k"]}>) -> tensor<64xf32, {axes = ["k"]}>
    %12 = "napkin.add"(%10, %11) : (tensor<45x64xf32, {axes = ["m", "k"]}>, tensor<64xf32, {axes = ["k"]}>) -> tensor<45x64xf32, {axes = ["m", "k"]}>
    %13 = "napkin.cast"(%12) : (tensor<45x64xf32, {axes = ["m", "k"]}>) -> tensor<45x64xbf16, {axes = ["m", "k"]}>
    %14 = "napkin.contract"(%13, %arg3) : (tensor<45x64xbf16, {axes = ["m", "k"]}>, tensor<64x24xbf16, {axes = ["k", "n"]}>) -> tensor<45x24xf32, {axes = ["m", "n"]}>
    %15 = "napkin.cast"(%14) : (tensor<45x24xf32, {axes = ["m", "n"]}>) -> tensor<45x24xbf16, {axes = ["m", "n"]}>
    return %15 : tensor<45x24xbf16, {axes = ["m", "n"]}>
  }
}
