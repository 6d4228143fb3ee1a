// napkin-verify: changes nothing on a valid diagram; reports the rules IRDL cannot express.
// RUN: %napkin-opt %s --split-input-file --napkin-verify | filecheck %s
// RUN: %napkin-opt %S/napkin-verify-invalid.mlir.in --split-input-file --verify-diagnostics --napkin-verify

// A valid attention diagram passes through unchanged.

// CHECK-LABEL: func.func @attention
// CHECK-SAME:    (%[[Q:.*]]: tensor<8x4xf32, {axes = ["q", "d"]}>, %[[K:.*]]: tensor<16x4xf32, {axes = ["x", "d"]}>, %[[V:.*]]: tensor<16x4xf32, {axes = ["x", "d"]}>)
// CHECK:         %[[S:.*]] = "napkin.contract"(%[[Q]], %[[K]])
// CHECK:         %[[P:.*]] = "napkin.softmax"(%[[S]]) {axis = "x"}
// CHECK:         %[[O:.*]] = "napkin.contract"(%[[P]], %[[V]])
// CHECK:         return %[[O]]
func.func @attention(%Q: tensor<8x4xf32, {axes = ["q", "d"]}>, %K: tensor<16x4xf32, {axes = ["x", "d"]}>, %V: tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}> {
  %s = "napkin.contract"(%Q, %K) : (tensor<8x4xf32, {axes = ["q", "d"]}>, tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %p = "napkin.softmax"(%s) {axis = "x"} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %o = "napkin.contract"(%p, %V) : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}>
  return %o : tensor<8x4xf32, {axes = ["q", "d"]}>
}
