// napkin-fission: one diagram per class of outputs with the same axes; the row statistic
// that a class would recompute in every group (it lacks the class's axis k) is hoisted into
// @<f>_pre and passed to the class diagrams by name.
// RUN: %napkin-opt %s --napkin-fission | filecheck %s
// RUN: not %napkin-opt %s --napkin-fission='func=nope' 2>&1 | filecheck %s --check-prefix=UNKNOWN

// CHECK-LABEL: func.func @two_pre(
// CHECK-SAME:    %[[A:[^:]*]]: tensor<6x5xf32, {axes = ["m", "k"]}>) -> tensor<6xf32, {axes = ["m"]}>
// CHECK-SAME:    arg_names = ["A"], result_names = ["D"]
// CHECK-NEXT:    %[[SQ:.*]] = "napkin.mul"(%[[A]], %[[A]])
// CHECK-NEXT:    %[[R:.*]] = "napkin.reduce"(%[[SQ]]) {axis = "k", kind = "sum"}
// CHECK-NEXT:    return %[[R]]

// CHECK-LABEL: func.func @two_Y(
// CHECK-SAME:    %[[A:[^:]*]]: tensor<6x5xf32, {axes = ["m", "k"]}>, %[[B:[^:]*]]: tensor<5x4xf32, {axes = ["k", "n"]}>, %[[D:[^:]*]]: tensor<6xf32, {axes = ["m"]}>) -> tensor<6x4xf32, {axes = ["m", "n"]}>
// CHECK-SAME:    arg_names = ["A", "B", "D"], result_names = ["Y"]
// CHECK-NEXT:    %[[S:.*]] = "napkin.mul"(%[[A]], %[[D]])
// CHECK-NEXT:    %[[Y:.*]] = "napkin.contract"(%[[S]], %[[B]])
// CHECK-NEXT:    return %[[Y]]

// CHECK-LABEL: func.func @two_Z(
// CHECK-SAME:    arg_names = ["A", "C", "D"], result_names = ["Z"]
// CHECK-NOT:     "napkin.reduce"
// CHECK:         "napkin.contract"
// CHECK-NOT:     func.func @two(

// UNKNOWN: error: napkin-fission: no diagram function @nope in the module
func.func @two(%A: tensor<6x5xf32, {axes = ["m", "k"]}>, %B: tensor<5x4xf32, {axes = ["k", "n"]}>, %C: tensor<6x4xf32, {axes = ["m", "n"]}>) -> (tensor<6x4xf32, {axes = ["m", "n"]}>, tensor<5x4xf32, {axes = ["k", "n"]}>) attributes {arg_names = ["A", "B", "C"], result_names = ["Y", "Z"]} {
  %sq = "napkin.mul"(%A, %A) : (tensor<6x5xf32, {axes = ["m", "k"]}>, tensor<6x5xf32, {axes = ["m", "k"]}>) -> tensor<6x5xf32, {axes = ["m", "k"]}>
  %r = "napkin.reduce"(%sq) {axis = "k", kind = "sum"} : (tensor<6x5xf32, {axes = ["m", "k"]}>) -> tensor<6xf32, {axes = ["m"]}>
  %s = "napkin.mul"(%A, %r) : (tensor<6x5xf32, {axes = ["m", "k"]}>, tensor<6xf32, {axes = ["m"]}>) -> tensor<6x5xf32, {axes = ["m", "k"]}>
  %y = "napkin.contract"(%s, %B) : (tensor<6x5xf32, {axes = ["m", "k"]}>, tensor<5x4xf32, {axes = ["k", "n"]}>) -> tensor<6x4xf32, {axes = ["m", "n"]}>
  %z = "napkin.contract"(%s, %C) : (tensor<6x5xf32, {axes = ["m", "k"]}>, tensor<6x4xf32, {axes = ["m", "n"]}>) -> tensor<5x4xf32, {axes = ["k", "n"]}>
  return %y, %z : tensor<6x4xf32, {axes = ["m", "n"]}>, tensor<5x4xf32, {axes = ["k", "n"]}>
}
