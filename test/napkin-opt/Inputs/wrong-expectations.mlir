// Input for verify-diagnostics.mlir: a wrong expectation and an unexpected error.

func.func @wrong_message(%a: tensor<4x8xf32, {axes = ["m", "k"]}>, %b: tensor<9x6xf32, {axes = ["k", "n"]}>) {
  // expected-error @+1 {{axis 'k' has size 7}}
  %0 = "napkin.contract"(%a, %b) : (tensor<4x8xf32, {axes = ["m", "k"]}>, tensor<9x6xf32, {axes = ["k", "n"]}>) -> tensor<4x6xf32, {axes = ["m", "n"]}>
  return
}

// -----

// No expectation here.
func.func @unexpected(%a: tensor<4xf32>) {
  %0 = "napkin.exp"(%a) : (tensor<4xf32>) -> tensor<4xf32>
  return
}
