// fuzz failure [crash]: pass napkin-stream-partition: ValueError: max() arg is an empty sequence
// inputs: napkin_mlir.check.reference.random_inputs(<argument types>, seed=10000223)
// pipeline: builtin.module(napkin-verify,napkin-stream-partition{axis=a size=1},napkin-verify)
// replay: python -m napkin_mlir.fuzz --replay 006-stream-partition-crash-dead-reduction.json
module {
  func.func @fuzz10000223(%arg0: tensor<1x1xf32, {axes = ["a", "b"]}>, %arg1: tensor<1xf32, {axes = ["b"]}>) -> tensor<1xf32, {axes = ["b"]}> attributes {arg_names = ["A0", "A1"]} {
    %0 = "napkin.mask"(%arg0) ({
    ^bb0(%mi2: index, %mj2: index, %mr2: index, %mc2: index):
      %mk2 = arith.cmpi sle, %mj2, %mi2 : index
      gpu.yield %mk2 : i1
    }) {rows = "a", cols = "b", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>} : (tensor<1x1xf32, {axes = ["a", "b"]}>) -> tensor<1x1xf32, {axes = ["a", "b"]}>
    %1 = "napkin.relu"(%arg1) : (tensor<1xf32, {axes = ["b"]}>) -> tensor<1xf32, {axes = ["b"]}>
    return %1 : tensor<1xf32, {axes = ["b"]}>
  }
}
