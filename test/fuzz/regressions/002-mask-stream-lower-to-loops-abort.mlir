func.func @f(%arg0: tensor<3x2xf32, {axes = ["n", "i"]}>) -> tensor<2xf32, {axes = ["i"]}> {
  %0 = "napkin.mask"(%arg0) {cols = "n", kind = "causal", rows = "i"} : (tensor<3x2xf32, {axes = ["n", "i"]}>) -> tensor<3x2xf32, {axes = ["n", "i"]}>
  %1 = "napkin.reduce"(%0) {axis = "n", kind = "max"} : (tensor<3x2xf32, {axes = ["n", "i"]}>) -> tensor<2xf32, {axes = ["i"]}>
  return %1 : tensor<2xf32, {axes = ["i"]}>
}
