// fuzz failure [unlocated-refusal]: napkin-stream-partition{axis=y size=2}: napkin-stream-partition: chunk size 2 for axis 'y' must be between 1 and its size 1
// inputs: napkin_mlir.check.reference.random_inputs(<argument types>, seed=0)
// pipeline: builtin.module(napkin-verify,napkin-group-partition{axes=y sizes=1 level=grid},napkin-stream-partition{axis=y size=2},napkin-verify)
// replay: python -m napkin_mlir.fuzz --replay 009-stream-refusal-unlocated-chunk-larger-than-tile.json
func.func @tile(%a: tensor<2xf32, {axes = ["y"]}>) -> tensor<2xf32, {axes = ["y"]}> {
  %0 = "napkin.exp"(%a) : (tensor<2xf32, {axes = ["y"]}>) -> tensor<2xf32, {axes = ["y"]}>
  return %0 : tensor<2xf32, {axes = ["y"]}>
}
