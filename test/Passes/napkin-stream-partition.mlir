// napkin-stream-partition: a reduced axis consumed in chunks with a carried state
// (init = head, step = body, finish = tail).
// RUN: %napkin-opt %s --split-input-file --napkin-stream-partition='axis=x size=4' | filecheck %s

// Attention (causal): the online softmax. Init fills m = -inf, l = 0, o = 0; the step
// computes the chunk scores, masks them at the chunk offset, and updates
//   m' = max(m, max_x s), c = (m' == -inf ? 0 : m'), p = exp(s - c), alpha = exp(m - c),
//   l' = l * alpha + sum_x p, o' = o * alpha + p V;
// (the shift c is 0 for a row that has seen only -inf: p = alpha = 0 there, not NaN);
// finish divides o by l.

// CHECK-LABEL: func.func @attention
// CHECK:         %[[O:.*]] = "napkin.stream"(%{{.*}}, %{{.*}}, %{{.*}}) ({
// CHECK-NEXT:      %[[M0:.*]] = "napkin.fill"() {value = 0xFFF0000000000000 : f64} : () -> tensor<8xf32, {axes = ["q"]}>
// CHECK-NEXT:      %[[L0:.*]] = "napkin.fill"() {value = 0.000000e+00 : f64} : () -> tensor<8xf32, {axes = ["q"]}>
// CHECK-NEXT:      %[[A0:.*]] = "napkin.fill"() {value = 0.000000e+00 : f64} : () -> tensor<8x4xf32, {axes = ["q", "d"]}>
// CHECK-NEXT:      gpu.yield %[[M0]], %[[L0]], %[[A0]]
// CHECK-NEXT:    }, {
// CHECK-NEXT:    ^bb0(%[[QC:.*]]: tensor<8x4xf32, {axes = ["q", "d"]}>, %[[KC:.*]]: tensor<4x4xf32, {axes = ["x", "d"]}>, %[[VC:.*]]: tensor<4x4xf32, {axes = ["x", "d"]}>, %[[X0:.*]]: index, %[[M:.*]]: tensor<8xf32, {axes = ["q"]}>, %[[L:.*]]: tensor<8xf32, {axes = ["q"]}>, %[[ACC:.*]]: tensor<8x4xf32, {axes = ["q", "d"]}>):
// CHECK-NEXT:      %[[S:.*]] = "napkin.contract"(%[[QC]], %[[KC]]) {{.*}} -> tensor<8x4xf32, {axes = ["q", "x"]}>
// CHECK:           %[[SM:.*]] = "napkin.mask"(%[[S]], %{{.*}}, %[[X0]]) ({
// CHECK:           }) {cols = "x", extents = array<i64: 8, 16>, {{.*}}rows = "q"}
// CHECK-NEXT:      %[[MC:.*]] = "napkin.reduce"(%[[SM]]) {axis = "x", kind = "max"}
// CHECK-NEXT:      %[[MN:.*]] = "napkin.max"(%[[M]], %[[MC]])
// CHECK-NEXT:      %[[C:.*]] = "napkin.map"(%[[MN]]) ({
// CHECK-NEXT:      ^bb0(%[[X:.*]]: f32):
// CHECK-NEXT:        %[[NINF:.*]] = arith.constant 0xFF800000 : f32
// CHECK-NEXT:        %[[ZERO:.*]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:        %[[EMPTY:.*]] = arith.cmpf oeq, %[[X]], %[[NINF]] : f32
// CHECK-NEXT:        %[[SAFE:.*]] = arith.select %[[EMPTY]], %[[ZERO]], %[[X]] : f32
// CHECK-NEXT:        gpu.yield %[[SAFE]] : f32
// CHECK-NEXT:      }) {{.*}} : (tensor<8xf32, {axes = ["q"]}>) -> tensor<8xf32, {axes = ["q"]}>
// CHECK-NEXT:      %[[D:.*]] = "napkin.sub"(%[[SM]], %[[C]])
// CHECK-NEXT:      %[[P:.*]] = "napkin.exp"(%[[D]]) {{.*}} -> tensor<8x4xf32, {axes = ["q", "x"]}>
// CHECK-NEXT:      %[[DM:.*]] = "napkin.sub"(%[[M]], %[[C]])
// CHECK-NEXT:      %[[ALPHA:.*]] = "napkin.exp"(%[[DM]]) {{.*}} -> tensor<8xf32, {axes = ["q"]}>
// CHECK-NEXT:      %[[PS:.*]] = "napkin.reduce"(%[[P]]) {axis = "x", kind = "sum"}
// CHECK-NEXT:      %[[LA:.*]] = "napkin.mul"(%[[L]], %[[ALPHA]])
// CHECK-NEXT:      %[[LN:.*]] = "napkin.add"(%[[LA]], %[[PS]])
// CHECK-NEXT:      %[[PV:.*]] = "napkin.contract"(%[[P]], %[[VC]]) {{.*}} -> tensor<8x4xf32, {axes = ["q", "d"]}>
// CHECK-NEXT:      %[[OA:.*]] = "napkin.mul"(%[[ACC]], %[[ALPHA]])
// CHECK-NEXT:      %[[ON:.*]] = "napkin.add"(%[[OA]], %[[PV]])
// CHECK-NEXT:      gpu.yield %[[MN]], %[[LN]], %[[ON]]
// CHECK-NEXT:    }, {
// CHECK-NEXT:    ^bb0(%{{.*}}: tensor<8xf32, {axes = ["q"]}>, %[[LF:.*]]: tensor<8xf32, {axes = ["q"]}>, %[[AF:.*]]: tensor<8x4xf32, {axes = ["q", "d"]}>):
// CHECK-NEXT:      %[[OF:.*]] = "napkin.div"(%[[AF]], %[[LF]])
// CHECK-NEXT:      gpu.yield %[[OF]]
// CHECK-NEXT:    }) {axis = "x", {{.*}}size = 4 : i64} : {{.*}} -> tensor<8x4xf32, {axes = ["q", "d"]}>
// CHECK:         return %[[O]]
func.func @attention(%Q: tensor<8x4xf32, {axes = ["q", "d"]}>, %K: tensor<16x4xf32, {axes = ["x", "d"]}>, %V: tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}> {
  %s = "napkin.contract"(%Q, %K) : (tensor<8x4xf32, {axes = ["q", "d"]}>, tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %m = "napkin.mask"(%s) ({
  ^bb0(%mi7: index, %mj7: index, %mr7: index, %mc7: index):
    %mk7 = arith.cmpi sle, %mj7, %mi7 : index
    gpu.yield %mk7 : i1
  }) {rows = "q", cols = "x", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %p = "napkin.softmax"(%m) {axis = "x"} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %o = "napkin.contract"(%p, %V) : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}>
  return %o : tensor<8x4xf32, {axes = ["q", "d"]}>
}

// -----

// A monoid reduction (max over x, x=10 not a multiple of 4): init -inf, step max of the
// carried state and the chunk's max, finish passes the state through.

// CHECK-LABEL: func.func @rowmax
// CHECK:         "napkin.stream"(%{{.*}}) ({
// CHECK-NEXT:      %[[H:.*]] = "napkin.fill"() {value = 0xFFF0000000000000 : f64} : () -> tensor<8xf32, {axes = ["q"]}>
// CHECK-NEXT:      gpu.yield %[[H]]
// CHECK-NEXT:    }, {
// CHECK-NEXT:    ^bb0(%[[SC:.*]]: tensor<8x4xf32, {axes = ["q", "x"]}>, %{{.*}}: index, %[[ST:.*]]: tensor<8xf32, {axes = ["q"]}>):
// CHECK-NEXT:      %[[E:.*]] = "napkin.exp"(%[[SC]])
// CHECK-NEXT:      %[[R:.*]] = "napkin.reduce"(%[[E]]) {axis = "x", kind = "max"}
// CHECK-NEXT:      %[[N:.*]] = "napkin.max"(%[[ST]], %[[R]])
// CHECK-NEXT:      gpu.yield %[[N]]
// CHECK-NEXT:    }, {
// CHECK-NEXT:    ^bb0(%[[F:.*]]: tensor<8xf32, {axes = ["q"]}>):
// CHECK-NEXT:      gpu.yield %[[F]]
// CHECK-NEXT:    }) {axis = "x", {{.*}}size = 4 : i64} : (tensor<8x10xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}>
func.func @rowmax(%S: tensor<8x10xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}> {
  %0 = "napkin.exp"(%S) : (tensor<8x10xf32, {axes = ["q", "x"]}>) -> tensor<8x10xf32, {axes = ["q", "x"]}>
  %1 = "napkin.reduce"(%0) {axis = "x", kind = "max"} : (tensor<8x10xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}>
  return %1 : tensor<8xf32, {axes = ["q"]}>
}
