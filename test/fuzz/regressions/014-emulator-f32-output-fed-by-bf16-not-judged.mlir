module {
  func.func @fuzz16000452(%arg0: tensor<1x1x1xbf16, {axes = ["k", "x", "e"]}>, %arg1: tensor<1x1xbf16, {axes = ["e", "k"]}>, %arg2: tensor<1x1xf32, {axes = ["x", "k"]}>) -> (tensor<1x1x1xbf16, {axes = ["k", "x", "e"]}>, tensor<1x1xf32, {axes = ["e", "x"]}>) attributes {arg_names = ["A0", "A1", "A2"]} {
    %0 = "napkin.gelu"(%arg0) : (tensor<1x1x1xbf16, {axes = ["k", "x", "e"]}>) -> tensor<1x1x1xbf16, {axes = ["k", "x", "e"]}>
    %1 = "napkin.cast"(%arg2) : (tensor<1x1xf32, {axes = ["x", "k"]}>) -> tensor<1x1xbf16, {axes = ["x", "k"]}>
    %2 = "napkin.contract"(%1, %arg1) : (tensor<1x1xbf16, {axes = ["x", "k"]}>, tensor<1x1xbf16, {axes = ["e", "k"]}>) -> tensor<1x1xf32, {axes = ["e", "x"]}>
    return %0, %2 : tensor<1x1x1xbf16, {axes = ["k", "x", "e"]}>, tensor<1x1xf32, {axes = ["e", "x"]}>
  }
}
