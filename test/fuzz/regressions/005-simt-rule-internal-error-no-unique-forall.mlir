module {
  func.func @fuzz2(%arg0: tensor<1xf32, {axes = ["c"]}>) -> tensor<1xf32, {axes = ["c"]}> attributes {arg_names = ["A0"]} {
    %0 = "napkin.softmax"(%arg0) {axis = "c"} : (tensor<1xf32, {axes = ["c"]}>) -> tensor<1xf32, {axes = ["c"]}>
    return %0 : tensor<1xf32, {axes = ["c"]}>
  }
}
