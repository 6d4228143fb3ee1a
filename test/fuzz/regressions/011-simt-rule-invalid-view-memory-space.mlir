module {
  func.func @fuzz20000006(%arg0: tensor<1x1x1xf32, {axes = ["d", "y", "c"]}>) -> tensor<1x1x1xf32, {axes = ["d", "y", "c"]}> attributes {arg_names = ["A0"]} {
    %0 = "napkin.softmax"(%arg0) {axis = "c"} : (tensor<1x1x1xf32, {axes = ["d", "y", "c"]}>) -> tensor<1x1x1xf32, {axes = ["d", "y", "c"]}>
    return %0 : tensor<1x1x1xf32, {axes = ["d", "y", "c"]}>
  }
}
