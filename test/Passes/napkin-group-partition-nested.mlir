// napkin-group-partition applied twice: the second run partitions the body of the innermost
// existing group (CTA tiles of 8 rows split into warp tiles of 2 rows): relabelings recurse.
// RUN: %napkin-opt %s --napkin-group-partition='axes=m sizes=8 level=grid' --napkin-group-partition='axes=m sizes=2 level=warp' | filecheck %s

// CHECK-LABEL: func.func @rowsum
// CHECK:         %[[G:.*]] = "napkin.group"(%{{.*}}) ({
// CHECK-NEXT:    ^bb0(%[[CTA:.*]]: tensor<8x16xf32, {axes = ["m", "k"]}>, %[[M0:.*]]: index):
// CHECK-NEXT:      %[[W:.*]] = "napkin.group"(%[[CTA]]) ({
// CHECK-NEXT:      ^bb0(%[[WT:.*]]: tensor<2x16xf32, {axes = ["m", "k"]}>, %[[M1:.*]]: index):
// CHECK-NEXT:        %[[R:.*]] = "napkin.reduce"(%[[WT]]) {axis = "k", kind = "sum"} {{.*}} -> tensor<2xf32, {axes = ["m"]}>
// CHECK-NEXT:        gpu.yield %[[R]]
// CHECK-NEXT:      }) {axes = ["m"], level = "warp", {{.*}}sizes = array<i64: 2>} {{.*}} -> tensor<8xf32, {axes = ["m"]}>
// CHECK-NEXT:      gpu.yield %[[W]]
// CHECK-NEXT:    }) {axes = ["m"], level = "grid", {{.*}}sizes = array<i64: 8>} {{.*}} -> tensor<20xf32, {axes = ["m"]}>
// CHECK:         return %[[G]]
func.func @rowsum(%A: tensor<20x16xf32, {axes = ["m", "k"]}>) -> tensor<20xf32, {axes = ["m"]}> {
  %0 = "napkin.reduce"(%A) {axis = "k", kind = "sum"} : (tensor<20x16xf32, {axes = ["m", "k"]}>) -> tensor<20xf32, {axes = ["m"]}>
  return %0 : tensor<20xf32, {axes = ["m"]}>
}
