// napkin-group-partition: the mapped axes are cut into groups; the body sees tiles and one
// index offset per grouped axis; masks get the group offsets.
// RUN: %napkin-opt %s --split-input-file --napkin-group-partition='axes=m,n sizes=4,2' | filecheck %s

// Matmul grouped over m and n (n=6 is a multiple of 2; m=8 of 4): A tiles along m only,
// B along n only; the offsets are the last two block arguments.

// CHECK-LABEL: func.func @matmul
// CHECK-SAME:    (%[[A:.*]]: tensor<8x16xf32, {axes = ["m", "k"]}>, %[[B:.*]]: tensor<16x6xf32, {axes = ["k", "n"]}>)
// CHECK:         %[[G:.*]] = "napkin.group"(%[[A]], %[[B]]) ({
// CHECK-NEXT:    ^bb0(%[[AT:.*]]: tensor<4x16xf32, {axes = ["m", "k"]}>, %[[BT:.*]]: tensor<16x2xf32, {axes = ["k", "n"]}>, %[[M0:.*]]: index, %[[N0:.*]]: index):
// CHECK-NEXT:      %[[C:.*]] = "napkin.contract"(%[[AT]], %[[BT]]) {{.*}} -> tensor<4x2xf32, {axes = ["m", "n"]}>
// CHECK-NEXT:      gpu.yield %[[C]] : tensor<4x2xf32, {axes = ["m", "n"]}>
// CHECK-NEXT:    }) {axes = ["m", "n"], level = "grid", {{.*}}sizes = array<i64: 4, 2>} : {{.*}} -> tensor<8x6xf32, {axes = ["m", "n"]}>
// CHECK:         return %[[G]]
func.func @matmul(%A: tensor<8x16xf32, {axes = ["m", "k"]}>, %B: tensor<16x6xf32, {axes = ["k", "n"]}>) -> tensor<8x6xf32, {axes = ["m", "n"]}> {
  %0 = "napkin.contract"(%A, %B) : (tensor<8x16xf32, {axes = ["m", "k"]}>, tensor<16x6xf32, {axes = ["k", "n"]}>) -> tensor<8x6xf32, {axes = ["m", "n"]}>
  return %0 : tensor<8x6xf32, {axes = ["m", "n"]}>
}

// -----

// Causal mask with rows m, cols n (4 and 2 do not divide 5 and 7: the last groups are
// partial, the tile types keep the group size): the mask receives both group offsets.

// CHECK-LABEL: func.func @masked
// CHECK:         "napkin.group"(%{{.*}}) ({
// CHECK-NEXT:    ^bb0(%[[ST:.*]]: tensor<4x2xf32, {axes = ["m", "n"]}>, %[[M0:.*]]: index, %[[N0:.*]]: index):
// CHECK:           %[[MK:.*]] = "napkin.mask"(%[[ST]], %[[M0]], %[[N0]]) ({
// CHECK:             arith.cmpi sle
// CHECK:           }) {cols = "n", extents = array<i64: 5, 7>, operandSegmentSizes = array<i32: 1, 2, 0, 0, 0, 0>, rows = "m"}
// CHECK-NEXT:      %[[E:.*]] = "napkin.exp"(%[[MK]])
// CHECK-NEXT:      gpu.yield %[[E]] : tensor<4x2xf32, {axes = ["m", "n"]}>
// CHECK:         sizes = array<i64: 4, 2>} : (tensor<5x7xf32, {axes = ["m", "n"]}>) -> tensor<5x7xf32, {axes = ["m", "n"]}>
func.func @masked(%S: tensor<5x7xf32, {axes = ["m", "n"]}>) -> tensor<5x7xf32, {axes = ["m", "n"]}> {
  %0 = "napkin.mask"(%S) ({
  ^bb0(%mi6: index, %mj6: index, %mr6: index, %mc6: index):
    %mk6 = arith.cmpi sle, %mj6, %mi6 : index
    gpu.yield %mk6 : i1
  }) {rows = "m", cols = "n", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>} : (tensor<5x7xf32, {axes = ["m", "n"]}>) -> tensor<5x7xf32, {axes = ["m", "n"]}>
  %1 = "napkin.exp"(%0) : (tensor<5x7xf32, {axes = ["m", "n"]}>) -> tensor<5x7xf32, {axes = ["m", "n"]}>
  return %1 : tensor<5x7xf32, {axes = ["m", "n"]}>
}
