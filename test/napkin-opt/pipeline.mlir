// --pass-pipeline mixes napkin passes and upstream passes (nested or not, with options); the
// same pipeline can be given as one flag per pass, in order.
// RUN: %napkin-opt %s --pass-pipeline='builtin.module(napkin-verify,canonicalize{max-iterations=3},func.func(cse),napkin-verify)' | filecheck %s
// RUN: %napkin-opt %s --pass-pipeline='napkin-verify, cse' | filecheck %s
// RUN: %napkin-opt %s --napkin-verify --canonicalize='max-iterations=3' --cse --napkin-verify | filecheck %s

// cse merges the duplicated arith.mulf; the napkin op is kept (it is used).

// CHECK-LABEL: func.func @f
// CHECK-SAME:    (%[[A:.*]]: tensor<4x8xf32, {axes = ["m", "k"]}>, %[[B:.*]]: tensor<8x6xf32, {axes = ["k", "n"]}>, %[[X:.*]]: f32)
// CHECK:         %[[C:.*]] = "napkin.contract"(%[[A]], %[[B]])
// CHECK-NEXT:    %[[Y:.*]] = arith.mulf %[[X]], %[[X]] : f32
// CHECK-NEXT:    return %[[C]], %[[Y]], %[[Y]]
func.func @f(%a: tensor<4x8xf32, {axes = ["m", "k"]}>, %b: tensor<8x6xf32, {axes = ["k", "n"]}>, %x: f32) -> (tensor<4x6xf32, {axes = ["m", "n"]}>, f32, f32) {
  %0 = "napkin.contract"(%a, %b) : (tensor<4x8xf32, {axes = ["m", "k"]}>, tensor<8x6xf32, {axes = ["k", "n"]}>) -> tensor<4x6xf32, {axes = ["m", "n"]}>
  %1 = arith.mulf %x, %x : f32
  %2 = arith.mulf %x, %x : f32
  return %0, %1, %2 : tensor<4x6xf32, {axes = ["m", "n"]}>, f32, f32
}
