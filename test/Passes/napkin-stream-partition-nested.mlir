// napkin-stream-partition applied twice: x first (online softmax), then d, which the step
// uses only in Q Kᵀ: the contraction axis is consumed in chunks inside each x chunk (a nested
// stream), while V (woven over d, independent of that reduction) stays in the outer step.
// RUN: %napkin-opt %s --napkin-stream-partition='axis=x size=8' --napkin-stream-partition='axis=d size=16' | filecheck %s

// CHECK-LABEL: func.func @attention
// CHECK:         "napkin.stream"(%{{.*}}) ({
// CHECK:         ^bb0(%[[Q:.*]]: tensor<32x24xf32, {axes = ["q", "d"]}>, %[[KC:.*]]: tensor<8x24xf32, {axes = ["x", "d"]}>, %[[VC:.*]]: tensor<8x24xf32, {axes = ["x", "d"]}>, %[[X0:.*]]: index,
// CHECK-NEXT:      %[[S:.*]] = "napkin.stream"(%[[Q]], %[[KC]]) ({
// CHECK-NEXT:        %[[Z:.*]] = "napkin.fill"() {value = 0.000000e+00 : f64} : () -> tensor<32x8xf32, {axes = ["q", "x"]}>
// CHECK:           ^bb0(%[[QD:.*]]: tensor<32x16xf32, {axes = ["q", "d"]}>, %[[KD:.*]]: tensor<8x16xf32, {axes = ["x", "d"]}>, %[[D0:.*]]: index, %[[ACC:.*]]: tensor<32x8xf32, {axes = ["q", "x"]}>):
// CHECK-NEXT:        %[[P:.*]] = "napkin.contract"(%[[QD]], %[[KD]])
// CHECK-NEXT:        %[[SUM:.*]] = "napkin.add"(%[[ACC]], %[[P]])
// CHECK-NEXT:        gpu.yield %[[SUM]]
// CHECK:           }) {axis = "d", {{.*}}size = 16 : i64}
// CHECK:           "napkin.reduce"(%[[S]]) {axis = "x", kind = "max"}
// CHECK:           "napkin.contract"(%{{.*}}, %[[VC]]) {{.*}} -> tensor<32x24xf32, {axes = ["q", "d"]}>
// CHECK:         }) {axis = "x", {{.*}}size = 8 : i64}
func.func @attention(%Q: tensor<32x24xf32, {axes = ["q", "d"]}>, %K: tensor<40x24xf32, {axes = ["x", "d"]}>, %V: tensor<40x24xf32, {axes = ["x", "d"]}>) -> tensor<32x24xf32, {axes = ["q", "d"]}> {
  %s = "napkin.contract"(%Q, %K) : (tensor<32x24xf32, {axes = ["q", "d"]}>, tensor<40x24xf32, {axes = ["x", "d"]}>) -> tensor<32x40xf32, {axes = ["q", "x"]}>
  %p = "napkin.softmax"(%s) {axis = "x"} : (tensor<32x40xf32, {axes = ["q", "x"]}>) -> tensor<32x40xf32, {axes = ["q", "x"]}>
  %o = "napkin.contract"(%p, %V) : (tensor<32x40xf32, {axes = ["q", "x"]}>, tensor<40x24xf32, {axes = ["x", "d"]}>) -> tensor<32x24xf32, {axes = ["q", "d"]}>
  return %o : tensor<32x24xf32, {axes = ["q", "d"]}>
}
