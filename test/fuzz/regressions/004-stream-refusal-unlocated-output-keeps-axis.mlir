// fuzz failure [unlocated-refusal]: napkin-stream-partition{axis=x size=1}: napkin-stream-partition: cannot stream axis 'x': output #0 ([x=3, b=4] f32) keeps it; a stream partition needs an axis the function reduces
// inputs: napkin_mlir.check.reference.random_inputs(<argument types>, seed=0)
// pipeline: builtin.module(napkin-verify,napkin-stream-partition{axis=x size=1},napkin-verify)
// replay: python -m napkin_mlir.fuzz --replay 004-stream-refusal-unlocated-output-keeps-axis.json
func.func @keeps(%a: tensor<3x4xf32, {axes = ["x", "b"]}>) -> tensor<3x4xf32, {axes = ["x", "b"]}> {
  %0 = "napkin.exp"(%a) : (tensor<3x4xf32, {axes = ["x", "b"]}>) -> tensor<3x4xf32, {axes = ["x", "b"]}>
  return %0 : tensor<3x4xf32, {axes = ["x", "b"]}>
}
