// fuzz failure [wrong-result]: output #0 [x=2, s=1] bf16: rel. Frobenius 4.452e-03 (JAX 1.262e-03), max |err| 5.056e-03 (JAX 1.150e-03); rule: max |err| <= 2 x JAX's + 1e-6 = 2.301e-03
// inputs: napkin_mlir.check.reference.random_inputs(<argument types>, seed=23000106)
// pipeline: builtin.module(napkin-verify,napkin-verify)
// replay: python -m napkin_mlir.fuzz --replay 015-cpu-bf16-map-math-chain-rounding.json
module {
  func.func @fuzz23000106(%arg0: tensor<2x1xbf16, {axes = ["x", "s"]}>) -> tensor<2x1xbf16, {axes = ["x", "s"]}> attributes {arg_names = ["A0"]} {
    %0 = "napkin.map"(%arg0) ({
    ^bb0(%arg1: bf16):
      %1 = math.atan %arg1 : bf16
      %2 = math.cos %1 : bf16
      %3 = math.erf %1 : bf16
      %4 = math.fma %1, %3, %3 : bf16
      %5 = arith.mulf %3, %3 : bf16
      %cst = arith.constant 1.000000e+00 : bf16
      %6 = arith.addf %5, %cst : bf16
      %7 = math.rsqrt %6 : bf16
      gpu.yield %7 : bf16
    }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<2x1xbf16, {axes = ["x", "s"]}>) -> tensor<2x1xbf16, {axes = ["x", "s"]}>
    return %0 : tensor<2x1xbf16, {axes = ["x", "s"]}>
  }
}
