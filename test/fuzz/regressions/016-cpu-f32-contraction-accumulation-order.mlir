// fuzz failure [wrong-result]: output #0 [p=4, a=3, e=16, z=5] f32: rel. Frobenius 1.731e-05 (JAX 3.867e-06), max |err| 4.648e-05 (JAX 1.039e-05); rule: rel. Frobenius <= 1e-05
// inputs: napkin_mlir.check.reference.random_inputs(<argument types>, seed=23000356)
// pipeline: builtin.module(napkin-verify,napkin-verify)
// replay: python -m napkin_mlir.fuzz --replay 016-cpu-f32-contraction-accumulation-order.json
module {
  func.func @fuzz23000356(%arg0: tensor<4x5xf32, {axes = ["p", "z"]}>, %arg1: tensor<4x3x16xf32, {axes = ["p", "a", "e"]}>, %arg2: tensor<3x29x5xf32, {axes = ["a", "r", "z"]}>) -> tensor<4x3x16x5xf32, {axes = ["p", "a", "e", "z"]}> attributes {arg_names = ["A0", "A1", "A2"]} {
    %0 = "napkin.contract"(%arg1, %arg2) : (tensor<4x3x16xf32, {axes = ["p", "a", "e"]}>, tensor<3x29x5xf32, {axes = ["a", "r", "z"]}>) -> tensor<3xf32, {axes = ["a"]}>
    %1 = "napkin.contract"(%0, %arg0) : (tensor<3xf32, {axes = ["a"]}>, tensor<4x5xf32, {axes = ["p", "z"]}>) -> tensor<3x5xf32, {axes = ["a", "z"]}>
    %2 = "napkin.map"(%arg1, %1) ({
    ^bb0(%arg3: f32, %arg4: f32):
      %3 = math.tanh %arg4 : f32
      gpu.yield %3 : f32
    }) {operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 0, 0, 0>} : (tensor<4x3x16xf32, {axes = ["p", "a", "e"]}>, tensor<3x5xf32, {axes = ["a", "z"]}>) -> tensor<4x3x16x5xf32, {axes = ["p", "a", "e", "z"]}>
    return %2 : tensor<4x3x16x5xf32, {axes = ["p", "a", "e", "z"]}>
  }
}
