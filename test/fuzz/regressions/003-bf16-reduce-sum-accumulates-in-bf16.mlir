func.func @red(%arg0: tensor<4x4096xbf16, {axes = ["r", "y"]}>) -> tensor<4xbf16, {axes = ["r"]}> {
  %0 = "napkin.reduce"(%arg0) {axis = "y", kind = "sum"} : (tensor<4x4096xbf16, {axes = ["r", "y"]}>) -> tensor<4xbf16, {axes = ["r"]}>
  return %0 : tensor<4xbf16, {axes = ["r"]}>
}
