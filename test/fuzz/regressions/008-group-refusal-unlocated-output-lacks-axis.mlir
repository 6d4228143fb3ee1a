// fuzz failure [unlocated-refusal]: napkin-group-partition{axes=k sizes=1 level=grid}: napkin-group-partition: cannot group-partition axis 'k': output #1 ([r=4] f32) does not have it
// inputs: napkin_mlir.check.reference.random_inputs(<argument types>, seed=0)
// pipeline: builtin.module(napkin-verify,napkin-group-partition{axes=k sizes=1 level=grid},napkin-verify)
// replay: python -m napkin_mlir.fuzz --replay 008-group-refusal-unlocated-output-lacks-axis.json
func.func @lacks(%a: tensor<3x4xf32, {axes = ["k", "r"]}>, %b: tensor<4xf32, {axes = ["r"]}>) -> (tensor<3x4xf32, {axes = ["k", "r"]}>, tensor<4xf32, {axes = ["r"]}>) {
  %0 = "napkin.exp"(%a) : (tensor<3x4xf32, {axes = ["k", "r"]}>) -> tensor<3x4xf32, {axes = ["k", "r"]}>
  %1 = "napkin.tanh"(%b) : (tensor<4xf32, {axes = ["r"]}>) -> tensor<4xf32, {axes = ["r"]}>
  return %0, %1 : tensor<3x4xf32, {axes = ["k", "r"]}>, tensor<4xf32, {axes = ["r"]}>
}
