func.func @f(%arg0: tensor<3x2xf32, {axes = ["n", "i"]}>) -> tensor<2xf32, {axes = ["i"]}> {
  %0 = "napkin.mask"(%arg0) ({
  ^bb0(%mi3: index, %mj3: index, %mr3: index, %mc3: index):
    %mk3 = arith.cmpi sle, %mj3, %mi3 : index
    gpu.yield %mk3 : i1
  }) {rows = "i", cols = "n", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>} : (tensor<3x2xf32, {axes = ["n", "i"]}>) -> tensor<3x2xf32, {axes = ["n", "i"]}>
  %1 = "napkin.reduce"(%0) {axis = "n", kind = "max"} : (tensor<3x2xf32, {axes = ["n", "i"]}>) -> tensor<2xf32, {axes = ["i"]}>
  return %1 : tensor<2xf32, {axes = ["i"]}>
}
