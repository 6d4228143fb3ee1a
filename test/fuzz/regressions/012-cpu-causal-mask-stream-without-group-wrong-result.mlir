// fuzz failure [wrong-result]: output #0 [c=1] f32: rel. Frobenius 4.177e-01 (JAX 7.587e-09), max |err| 8.635e-01 (JAX 1.568e-08); rule: rel. Frobenius <= 1e-05
// inputs: napkin_mlir.check.reference.random_inputs(<argument types>, seed=16000611)
// pipeline: builtin.module(napkin-verify,napkin-stream-partition{axis=i size=1},napkin-verify)
// replay: python -m napkin_mlir.fuzz --replay 012-cpu-causal-mask-stream-without-group-wrong-result.json
module {
  func.func @fuzz16000611(%arg0: tensor<2x1xf32, {axes = ["i", "c"]}>) -> tensor<1xf32, {axes = ["c"]}> attributes {arg_names = ["A0"]} {
    %0 = "napkin.mask"(%arg0) ({
    ^bb0(%mi4: index, %mj4: index, %mr4: index, %mc4: index):
      %mk4 = arith.cmpi sle, %mj4, %mi4 : index
      gpu.yield %mk4 : i1
    }) {rows = "c", cols = "i", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>} : (tensor<2x1xf32, {axes = ["i", "c"]}>) -> tensor<2x1xf32, {axes = ["i", "c"]}>
    %1 = "napkin.reduce"(%0) {axis = "i", kind = "max"} : (tensor<2x1xf32, {axes = ["i", "c"]}>) -> tensor<1xf32, {axes = ["c"]}>
    %2 = "napkin.contract"(%arg0, %1) : (tensor<2x1xf32, {axes = ["i", "c"]}>, tensor<1xf32, {axes = ["c"]}>) -> tensor<1xf32, {axes = ["c"]}>
    return %2 : tensor<1xf32, {axes = ["c"]}>
  }
}
