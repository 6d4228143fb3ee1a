// napkin-assign-levels: inputs/outputs at gmem, inputs staged to smem through napkin.transfer,
// boxes computing at reg, results moved back up to gmem.
// RUN: %napkin-opt %s --split-input-file --napkin-assign-levels | filecheck %s
// RUN: %napkin-opt %s --split-input-file --napkin-assign-levels='fuse=false' | filecheck %s --check-prefix=UNFUSED

// Matmul: both inputs are transferred gmem -> smem, the contraction computes at reg and the
// result goes back to gmem; the function type is updated.

// CHECK-LABEL: func.func @matmul
// CHECK-SAME:    (%[[A:.*]]: tensor<8x16xf32, {axes = ["m", "k"], level = "gmem"}>, %[[B:.*]]: tensor<16x6xf32, {axes = ["k", "n"], level = "gmem"}>) -> tensor<8x6xf32, {axes = ["m", "n"], level = "gmem"}>
// CHECK:         %[[AS:.*]] = "napkin.transfer"(%[[A]]) : (tensor<8x16xf32, {axes = ["m", "k"], level = "gmem"}>) -> tensor<8x16xf32, {axes = ["m", "k"], level = "smem"}>
// CHECK:         %[[BS:.*]] = "napkin.transfer"(%[[B]]) : (tensor<16x6xf32, {axes = ["k", "n"], level = "gmem"}>) -> tensor<16x6xf32, {axes = ["k", "n"], level = "smem"}>
// CHECK:         %[[C:.*]] = "napkin.contract"(%[[AS]], %[[BS]]) {{.*}} -> tensor<8x6xf32, {axes = ["m", "n"], level = "reg"}>
// CHECK:         %[[CG:.*]] = "napkin.transfer"(%[[C]]) : (tensor<8x6xf32, {axes = ["m", "n"], level = "reg"}>) -> tensor<8x6xf32, {axes = ["m", "n"], level = "gmem"}>
// CHECK:         return %[[CG]]

// UNFUSED-LABEL: func.func @matmul
// UNFUSED-COUNT-3: "napkin.transfer"
// UNFUSED-NOT:     "napkin.transfer"
// UNFUSED:         return
func.func @matmul(%A: tensor<8x16xf32, {axes = ["m", "k"]}>, %B: tensor<16x6xf32, {axes = ["k", "n"]}>) -> tensor<8x6xf32, {axes = ["m", "n"]}> {
  %0 = "napkin.contract"(%A, %B) : (tensor<8x16xf32, {axes = ["m", "k"]}>, tensor<16x6xf32, {axes = ["k", "n"]}>) -> tensor<8x6xf32, {axes = ["m", "n"]}>
  return %0 : tensor<8x6xf32, {axes = ["m", "n"]}>
}

// -----

// Two boxes: fused (default), the intermediate stays at reg with no transfer between the
// boxes; unfused, it goes up to gmem and back down to reg before its user.

// CHECK-LABEL: func.func @chain
// CHECK:         %[[XS:.*]] = "napkin.transfer"(%{{.*}}) {{.*}} -> tensor<8x16xf32, {axes = ["m", "k"], level = "smem"}>
// CHECK:         %[[E:.*]] = "napkin.exp"(%[[XS]]) {{.*}} -> tensor<8x16xf32, {axes = ["m", "k"], level = "reg"}>
// CHECK-NEXT:    %[[T:.*]] = "napkin.tanh"(%[[E]]) {{.*}} -> tensor<8x16xf32, {axes = ["m", "k"], level = "reg"}>
// CHECK-NEXT:    %[[TG:.*]] = "napkin.transfer"(%[[T]]) {{.*}} -> tensor<8x16xf32, {axes = ["m", "k"], level = "gmem"}>
// CHECK-NEXT:    return %[[TG]]

// UNFUSED-LABEL: func.func @chain
// UNFUSED:         %[[E:.*]] = "napkin.exp"
// UNFUSED-NEXT:    %[[UP:.*]] = "napkin.transfer"(%[[E]]) {{.*}} -> tensor<8x16xf32, {axes = ["m", "k"], level = "gmem"}>
// UNFUSED-NEXT:    %[[DOWN:.*]] = "napkin.transfer"(%[[UP]]) {{.*}} -> tensor<8x16xf32, {axes = ["m", "k"], level = "reg"}>
// UNFUSED-NEXT:    "napkin.tanh"(%[[DOWN]])
func.func @chain(%X: tensor<8x16xf32, {axes = ["m", "k"]}>) -> tensor<8x16xf32, {axes = ["m", "k"]}> {
  %0 = "napkin.exp"(%X) : (tensor<8x16xf32, {axes = ["m", "k"]}>) -> tensor<8x16xf32, {axes = ["m", "k"]}>
  %1 = "napkin.tanh"(%0) : (tensor<8x16xf32, {axes = ["m", "k"]}>) -> tensor<8x16xf32, {axes = ["m", "k"]}>
  return %1 : tensor<8x16xf32, {axes = ["m", "k"]}>
}
