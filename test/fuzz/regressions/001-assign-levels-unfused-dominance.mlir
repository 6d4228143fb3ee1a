// fuzz failure [verifier-after-pass]: napkin-assign-levels{hierarchy=gmem,smem,reg fuse=false}: a.mlir:3:8: operand #0 does not dominate this use
// inputs: napkin_mlir.check.reference.random_inputs(<argument types>, seed=0)
// pipeline: builtin.module(napkin-verify,napkin-assign-levels{hierarchy=gmem,smem,reg fuse=false},napkin-verify)
// replay: python -m napkin_mlir.fuzz --replay 001-assign-levels-unfused-dominance.json
func.func @unfused(%a: tensor<3xf32, {axes = ["k"]}>) -> (tensor<3xf32, {axes = ["k"]}>, tensor<3xf32, {axes = ["k"]}>) {
  %0 = "napkin.exp"(%a) : (tensor<3xf32, {axes = ["k"]}>) -> tensor<3xf32, {axes = ["k"]}>
  %1 = "napkin.relu"(%0) : (tensor<3xf32, {axes = ["k"]}>) -> tensor<3xf32, {axes = ["k"]}>
  %2 = "napkin.tanh"(%0) : (tensor<3xf32, {axes = ["k"]}>) -> tensor<3xf32, {axes = ["k"]}>
  return %1, %2 : tensor<3xf32, {axes = ["k"]}>, tensor<3xf32, {axes = ["k"]}>
}
