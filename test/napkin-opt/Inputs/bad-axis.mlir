// Input for errors.mlir: axis k has size 8 in one operand and 9 in the other (line 4, col 8).

func.func @f(%a: tensor<4x8xf32, {axes = ["m", "k"]}>, %b: tensor<9x6xf32, {axes = ["k", "n"]}>) {
  %0 = "napkin.contract"(%a, %b) : (tensor<4x8xf32, {axes = ["m", "k"]}>, tensor<9x6xf32, {axes = ["k", "n"]}>) -> tensor<4x6xf32, {axes = ["m", "n"]}>
  return
}
