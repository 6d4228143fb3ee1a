// napkin-stream-partition: a normalized contraction (a factor without the streamed axis).
// RUN: %napkin-opt %s --napkin-stream-partition='axis=x size=4' | filecheck %s

// A normalizer that divides by a row sum (relu(s) / sum_x relu(s)) before the contraction:
// the division does not depend on x, so the stream carries the row sum and the undivided
// contraction, and finish divides (sum_x (r / l) v = (sum_x r v) / l).

// CHECK-LABEL: func.func @normalized
// CHECK:         %[[O:.*]] = "napkin.stream"(%{{.*}}, %{{.*}}) ({
// CHECK-NEXT:      %[[L0:.*]] = "napkin.fill"() {value = 0.000000e+00 : f64} : () -> tensor<8xf32, {axes = ["q"]}>
// CHECK-NEXT:      %[[A0:.*]] = "napkin.fill"() {value = 0.000000e+00 : f64} : () -> tensor<8x4xf32, {axes = ["q", "d"]}>
// CHECK-NEXT:      gpu.yield %[[L0]], %[[A0]]
// CHECK-NEXT:    }, {
// CHECK-NEXT:    ^bb0(%[[SC:.*]]: tensor<8x4xf32, {axes = ["q", "x"]}>, %[[VC:.*]]: tensor<4x4xf32, {axes = ["x", "d"]}>, %{{.*}}: index, %[[L:.*]]: tensor<8xf32, {axes = ["q"]}>, %[[ACC:.*]]: tensor<8x4xf32, {axes = ["q", "d"]}>):
// CHECK-NEXT:      %[[R:.*]] = "napkin.relu"(%[[SC]])
// CHECK-NEXT:      %[[RS:.*]] = "napkin.reduce"(%[[R]]) {axis = "x", kind = "sum"}
// CHECK-NEXT:      %[[LN:.*]] = "napkin.add"(%[[L]], %[[RS]])
// CHECK-NEXT:      %[[RV:.*]] = "napkin.contract"(%[[R]], %[[VC]])
// CHECK-NEXT:      %[[AN:.*]] = "napkin.add"(%[[ACC]], %[[RV]])
// CHECK-NEXT:      gpu.yield %[[LN]], %[[AN]]
// CHECK-NEXT:    }, {
// CHECK-NEXT:    ^bb0(%[[LF:.*]]: tensor<8xf32, {axes = ["q"]}>, %[[AF:.*]]: tensor<8x4xf32, {axes = ["q", "d"]}>):
// CHECK-NEXT:      %[[OF:.*]] = "napkin.div"(%[[AF]], %[[LF]]) {{.*}} -> tensor<8x4xf32, {axes = ["q", "d"]}>
// CHECK-NEXT:      gpu.yield %[[OF]]
// CHECK-NEXT:    }) {axis = "x"
// CHECK-NEXT:    return %[[O]]
func.func @normalized(%S: tensor<8x16xf32, {axes = ["q", "x"]}>, %V: tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}> {
  %r = "napkin.relu"(%S) : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %l = "napkin.reduce"(%r) {axis = "x", kind = "sum"} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}>
  %p = "napkin.div"(%r, %l) : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<8xf32, {axes = ["q"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %o = "napkin.contract"(%p, %V) : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}>
  return %o : tensor<8x4xf32, {axes = ["q", "d"]}>
}
