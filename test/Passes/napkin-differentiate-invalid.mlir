// napkin-differentiate refuses what it does not differentiate, naming the op and its location.
// RUN: not %napkin-opt %s --split-input-file --napkin-differentiate 2>&1 | filecheck %s
// RUN: not %napkin-opt %s --split-input-file --napkin-differentiate='wrt=Z' 2>&1 | filecheck %s --check-prefix=WRT

// A scalar op without a derivative on the gradient's path inside a map.
// CHECK: error: {{.*}}napkin-differentiate-invalid.mlir:11:10: napkin-differentiate: no derivative for 'math.sin' in the body of a 'napkin.map' (differentiable: arith.addf,
// WRT: error: napkin-differentiate: wrt: unknown input 'Z' (@sine takes S, or positions 0 to 0)
func.func @sine(%S: tensor<8xf32, {axes = ["q"]}>) -> tensor<8xf32, {axes = ["q"]}> attributes {arg_names = ["S"]} {
  %r = "napkin.map"(%S) ({
  ^bb0(%a: f32):
    %b = math.sin %a : f32
    gpu.yield %b : f32
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<8xf32, {axes = ["q"]}>) -> tensor<8xf32, {axes = ["q"]}>
  return %r : tensor<8xf32, {axes = ["q"]}>
}

// -----

// A partitioned program: differentiate the plain diagram, then partition both.
// CHECK: error: {{.*}}napkin-differentiate-invalid.mlir:22:8: napkin-differentiate: takes a plain diagram (before partitioning), found napkin.group
func.func @grouped(%q: tensor<8x4xf32, {axes = ["q", "d"]}>, %k: tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}> {
  %s = "napkin.group"(%q, %k) ({
  ^bb0(%qt: tensor<4x4xf32, {axes = ["q", "d"]}>, %kt: tensor<16x4xf32, {axes = ["x", "d"]}>, %q0: index):
    %st = "napkin.contract"(%qt, %kt) : (tensor<4x4xf32, {axes = ["q", "d"]}>, tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<4x16xf32, {axes = ["q", "x"]}>
    gpu.yield %st : tensor<4x16xf32, {axes = ["q", "x"]}>
  }) {axes = ["q"], sizes = array<i64: 4>, level = "grid", operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<8x4xf32, {axes = ["q", "d"]}>, tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  return %s : tensor<8x16xf32, {axes = ["q", "x"]}>
}

// -----

// Two diagrams in one module: which one to differentiate is ambiguous.
// CHECK: error: napkin-differentiate: expected one diagram function, found 2 (@f, @g)
func.func @f(%a: tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}> {
  %0 = "napkin.exp"(%a) : (tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}>
  return %0 : tensor<4xf32, {axes = ["m"]}>
}
func.func @g(%a: tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}> {
  %0 = "napkin.tanh"(%a) : (tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}>
  return %0 : tensor<4xf32, {axes = ["m"]}>
}

// -----

// A map body that uses a value from outside it cannot be copied into the backward.
// CHECK: error: {{.*}}napkin-differentiate-invalid.mlir:49:8: napkin-differentiate: the body of 'napkin.map' uses values defined outside it
func.func @outer(%S: tensor<8xf32, {axes = ["q"]}>) -> tensor<8xf32, {axes = ["q"]}> {
  %c = arith.constant 2.0 : f32
  %r = "napkin.map"(%S) ({
  ^bb0(%a: f32):
    %b = arith.mulf %a, %c : f32
    gpu.yield %b : f32
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<8xf32, {axes = ["q"]}>) -> tensor<8xf32, {axes = ["q"]}>
  return %r : tensor<8xf32, {axes = ["q"]}>
}
