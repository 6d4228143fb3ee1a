// napkin-stream-partition: exponentials shifted by a maximum over the streamed axis, written
// box by box, in the online form (x = 10, chunks of 4, the last one partial).
// RUN: %napkin-opt %s --split-input-file --napkin-stream-partition='axis=x size=4' | filecheck %s

// A softmax by hand: m = max_x s, e = exp(s - m), l = Σ_x e, o = Σ_x (e / l) v. The exp is
// shifted by the max of its own scores, so it streams online with the running max, as
// napkin.softmax does: m' = max(m, max s), c = (m' == -inf ? 0 : m'), p = exp(s - c),
// α = exp(m - c), l' = l·α + Σ p, o' = o·α + p V (the shift c is 0 for a row that has seen
// only -inf: p = α = 0 there, not NaN); the division by l moves to finish.

// CHECK-LABEL: func.func @softmax_by_hand
// CHECK:         %[[O:.*]] = "napkin.stream"(%{{.*}}, %{{.*}}, %{{.*}}) ({
// CHECK-NEXT:      %[[M0:.*]] = "napkin.fill"() {value = 0xFFF0000000000000 : f64} : () -> tensor<8xf32, {axes = ["q"]}>
// CHECK-NEXT:      %[[L0:.*]] = "napkin.fill"() {value = 0.000000e+00 : f64} : () -> tensor<8xf32, {axes = ["q"]}>
// CHECK-NEXT:      %[[A0:.*]] = "napkin.fill"() {value = 0.000000e+00 : f64} : () -> tensor<8x4xf32, {axes = ["q", "d"]}>
// CHECK-NEXT:      gpu.yield %[[M0]], %[[L0]], %[[A0]]
// CHECK-NEXT:    }, {
// CHECK-NEXT:    ^bb0(%[[QC:.*]]: tensor<8x4xf32, {axes = ["q", "d"]}>, %[[KC:.*]]: tensor<4x4xf32, {axes = ["x", "d"]}>, %[[VC:.*]]: tensor<4x4xf32, {axes = ["x", "d"]}>, %{{.*}}: index, %[[M:.*]]: tensor<8xf32, {axes = ["q"]}>, %[[L:.*]]: tensor<8xf32, {axes = ["q"]}>, %[[ACC:.*]]: tensor<8x4xf32, {axes = ["q", "d"]}>):
// CHECK-NEXT:      %[[S:.*]] = "napkin.contract"(%[[QC]], %[[KC]]) {{.*}} -> tensor<8x4xf32, {axes = ["q", "x"]}>
// CHECK-NEXT:      %[[MC:.*]] = "napkin.reduce"(%[[S]]) {axis = "x", kind = "max"}
// CHECK-NEXT:      %[[MN:.*]] = "napkin.max"(%[[M]], %[[MC]])
// CHECK-NEXT:      %[[C:.*]] = "napkin.map"(%[[MN]]) ({
// CHECK-NEXT:      ^bb0(%[[X:.*]]: f32):
// CHECK-NEXT:        %[[NINF:.*]] = arith.constant 0xFF800000 : f32
// CHECK-NEXT:        %[[ZERO:.*]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:        %[[EMPTY:.*]] = arith.cmpf oeq, %[[X]], %[[NINF]] : f32
// CHECK-NEXT:        %[[SAFE:.*]] = arith.select %[[EMPTY]], %[[ZERO]], %[[X]] : f32
// CHECK-NEXT:        gpu.yield %[[SAFE]] : f32
// CHECK-NEXT:      })
// CHECK-NEXT:      %[[D:.*]] = "napkin.sub"(%[[S]], %[[C]])
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
// CHECK-NEXT:    }) {axis = "x"
// CHECK-NEXT:    return %[[O]]
func.func @softmax_by_hand(%Q: tensor<8x4xf32, {axes = ["q", "d"]}>, %K: tensor<10x4xf32, {axes = ["x", "d"]}>, %V: tensor<10x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}> {
  %s = "napkin.contract"(%Q, %K) : (tensor<8x4xf32, {axes = ["q", "d"]}>, tensor<10x4xf32, {axes = ["x", "d"]}>) -> tensor<8x10xf32, {axes = ["q", "x"]}>
  %m = "napkin.reduce"(%s) {axis = "x", kind = "max"} : (tensor<8x10xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}>
  %c = "napkin.sub"(%s, %m) : (tensor<8x10xf32, {axes = ["q", "x"]}>, tensor<8xf32, {axes = ["q"]}>) -> tensor<8x10xf32, {axes = ["q", "x"]}>
  %e = "napkin.exp"(%c) : (tensor<8x10xf32, {axes = ["q", "x"]}>) -> tensor<8x10xf32, {axes = ["q", "x"]}>
  %l = "napkin.reduce"(%e) {axis = "x", kind = "sum"} : (tensor<8x10xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}>
  %p = "napkin.div"(%e, %l) : (tensor<8x10xf32, {axes = ["q", "x"]}>, tensor<8xf32, {axes = ["q"]}>) -> tensor<8x10xf32, {axes = ["q", "x"]}>
  %o = "napkin.contract"(%p, %V) : (tensor<8x10xf32, {axes = ["q", "x"]}>, tensor<10x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}>
  return %o : tensor<8x4xf32, {axes = ["q", "d"]}>
}

// -----

// Attention with a per-head sink logit (gpt-oss), the max taken over the scores and the sink:
//   m = max(max_x s, sink),  o = Σ_x e^(s - m) v / (e^(sink - m) + Σ_x e^(s - m)).
// m is a max of the row max with something else, so it bounds s: e^(s - m) streams online with
// the running max M of s alone (shifted by 0 while M is -inf, as above), and finish rescales
// by e^(M - m) <= 1: a row masked throughout gives 0 / e^0 = 0, as the diagram. The sink has no x: it
// rides along in the state (head 0, every step sets it) and enters finish:
//   m = max(M, sink), α = e^(M - m), l = α·l' + e^(sink - m), o = (o' / l)·α.

// CHECK-LABEL: func.func @sink_in_max
// CHECK:         %[[O:.*]] = "napkin.stream"(%{{.*}}, %{{.*}}, %[[SINK:.*]]) ({
// CHECK-NEXT:      %[[M0:.*]] = "napkin.fill"() {value = 0xFFF0000000000000 : f64} : () -> tensor<2x8xf32, {axes = ["h", "q"]}>
// CHECK-NEXT:      %[[L0:.*]] = "napkin.fill"() {value = 0.000000e+00 : f64} : () -> tensor<2x8xf32, {axes = ["h", "q"]}>
// CHECK-NEXT:      %[[A0:.*]] = "napkin.fill"() {value = 0.000000e+00 : f64} : () -> tensor<2x8x4xf32, {axes = ["h", "q", "d"]}>
// CHECK-NEXT:      %[[K0:.*]] = "napkin.fill"() {value = 0.000000e+00 : f64} : () -> tensor<2xf32, {axes = ["h"]}>
// CHECK-NEXT:      gpu.yield %[[M0]], %[[L0]], %[[A0]], %[[K0]]
// CHECK-NEXT:    }, {
// CHECK-NEXT:    ^bb0(%[[SC:.*]]: tensor<2x8x4xf32, {axes = ["h", "q", "x"]}>, %[[VC:.*]]: tensor<2x4x4xf32, {axes = ["h", "x", "d"]}>, %[[SK:.*]]: tensor<2xf32, {axes = ["h"]}>, %{{.*}}: index, %[[M:.*]]: tensor<2x8xf32, {axes = ["h", "q"]}>, %[[L:.*]]: tensor<2x8xf32, {axes = ["h", "q"]}>, %[[ACC:.*]]: tensor<2x8x4xf32, {axes = ["h", "q", "d"]}>, %{{.*}}: tensor<2xf32, {axes = ["h"]}>):
// CHECK-NEXT:      %[[MC:.*]] = "napkin.reduce"(%[[SC]]) {axis = "x", kind = "max"}
// CHECK-NEXT:      %[[MN:.*]] = "napkin.max"(%[[M]], %[[MC]])
// CHECK-NEXT:      %[[C:.*]] = "napkin.map"(%[[MN]]) ({
// CHECK-NEXT:      ^bb0(%[[X:.*]]: f32):
// CHECK-NEXT:        %[[NINF:.*]] = arith.constant 0xFF800000 : f32
// CHECK-NEXT:        %[[ZERO:.*]] = arith.constant 0.000000e+00 : f32
// CHECK-NEXT:        %[[EMPTY:.*]] = arith.cmpf oeq, %[[X]], %[[NINF]] : f32
// CHECK-NEXT:        %[[SAFE:.*]] = arith.select %[[EMPTY]], %[[ZERO]], %[[X]] : f32
// CHECK-NEXT:        gpu.yield %[[SAFE]] : f32
// CHECK-NEXT:      })
// CHECK-NEXT:      %[[D:.*]] = "napkin.sub"(%[[SC]], %[[C]])
// CHECK-NEXT:      %[[P:.*]] = "napkin.exp"(%[[D]])
// CHECK-NEXT:      %[[DM:.*]] = "napkin.sub"(%[[M]], %[[C]])
// CHECK-NEXT:      %[[ALPHA:.*]] = "napkin.exp"(%[[DM]])
// CHECK-NEXT:      %[[PS:.*]] = "napkin.reduce"(%[[P]]) {axis = "x", kind = "sum"}
// CHECK-NEXT:      %[[LA:.*]] = "napkin.mul"(%[[L]], %[[ALPHA]])
// CHECK-NEXT:      %[[LN:.*]] = "napkin.add"(%[[LA]], %[[PS]])
// CHECK-NEXT:      %[[PV:.*]] = "napkin.contract"(%[[P]], %[[VC]])
// CHECK-NEXT:      %[[OA:.*]] = "napkin.mul"(%[[ACC]], %[[ALPHA]])
// CHECK-NEXT:      %[[ON:.*]] = "napkin.add"(%[[OA]], %[[PV]])
// CHECK-NEXT:      gpu.yield %[[MN]], %[[LN]], %[[ON]], %[[SK]]
// CHECK-NEXT:    }, {
// CHECK-NEXT:    ^bb0(%[[MF:.*]]: tensor<2x8xf32, {axes = ["h", "q"]}>, %[[LF:.*]]: tensor<2x8xf32, {axes = ["h", "q"]}>, %[[AF:.*]]: tensor<2x8x4xf32, {axes = ["h", "q", "d"]}>, %[[SF:.*]]: tensor<2xf32, {axes = ["h"]}>):
// CHECK-NEXT:      %[[MM:.*]] = "napkin.max"(%[[MF]], %[[SF]])
// CHECK-NEXT:      %[[DR:.*]] = "napkin.sub"(%[[MF]], %[[MM]])
// CHECK-NEXT:      %[[RS:.*]] = "napkin.exp"(%[[DR]])
// CHECK-NEXT:      %[[LR:.*]] = "napkin.mul"(%[[LF]], %[[RS]])
// CHECK-NEXT:      %[[DS:.*]] = "napkin.sub"(%[[SF]], %[[MM]])
// CHECK-NEXT:      %[[ES:.*]] = "napkin.exp"(%[[DS]])
// CHECK-NEXT:      %[[Z:.*]] = "napkin.add"(%[[LR]], %[[ES]])
// CHECK-NEXT:      %[[OZ:.*]] = "napkin.div"(%[[AF]], %[[Z]])
// CHECK-NEXT:      %[[OF:.*]] = "napkin.mul"(%[[OZ]], %[[RS]]) {{.*}} -> tensor<2x8x4xf32, {axes = ["h", "q", "d"]}>
// CHECK-NEXT:      gpu.yield %[[OF]]
// CHECK-NEXT:    }) {axis = "x"
// CHECK-NEXT:    return %[[O]]
func.func @sink_in_max(%S: tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>, %V: tensor<2x10x4xf32, {axes = ["h", "x", "d"]}>, %Sink: tensor<2xf32, {axes = ["h"]}>) -> tensor<2x8x4xf32, {axes = ["h", "q", "d"]}> {
  %ms = "napkin.reduce"(%S) {axis = "x", kind = "max"} : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %m = "napkin.max"(%ms, %Sink) : (tensor<2x8xf32, {axes = ["h", "q"]}>, tensor<2xf32, {axes = ["h"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %c = "napkin.sub"(%S, %m) : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>, tensor<2x8xf32, {axes = ["h", "q"]}>) -> tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>
  %e = "napkin.exp"(%c) : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>) -> tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>
  %l = "napkin.reduce"(%e) {axis = "x", kind = "sum"} : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %ds = "napkin.sub"(%Sink, %m) : (tensor<2xf32, {axes = ["h"]}>, tensor<2x8xf32, {axes = ["h", "q"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %es = "napkin.exp"(%ds) : (tensor<2x8xf32, {axes = ["h", "q"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %z = "napkin.add"(%l, %es) : (tensor<2x8xf32, {axes = ["h", "q"]}>, tensor<2x8xf32, {axes = ["h", "q"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %p = "napkin.div"(%e, %z) : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>, tensor<2x8xf32, {axes = ["h", "q"]}>) -> tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>
  %o = "napkin.contract"(%p, %V) : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>, tensor<2x10x4xf32, {axes = ["h", "x", "d"]}>) -> tensor<2x8x4xf32, {axes = ["h", "q", "d"]}>
  return %o : tensor<2x8x4xf32, {axes = ["h", "q", "d"]}>
}

// -----

// The sink left out of the max (m = max_x s, the epilogue of gpt-oss kernels), and the
// division written after the contraction: the stream yields the reductions the boxes after it
// use (the max, Σ e and Σ e v, the online state as it is); the sink term follows the stream
// as written, e^(sink - m) with the final max.

// CHECK-LABEL: func.func @sink_after
// CHECK:         %[[ST:.*]]:3 = "napkin.stream"(%{{.*}}, %{{.*}}) ({
// CHECK:         ^bb0(%[[MF:[a-z0-9]+]]: tensor<2x8xf32, {axes = ["h", "q"]}>, %[[LF:[a-z0-9]+]]: tensor<2x8xf32, {axes = ["h", "q"]}>, %[[AF:[a-z0-9]+]]: tensor<2x8x4xf32, {axes = ["h", "q", "d"]}>):
// CHECK-NEXT:      gpu.yield %[[MF]], %[[LF]], %[[AF]]
// CHECK-NEXT:    }) {axis = "x"
// CHECK-NEXT:    %[[DS:.*]] = "napkin.sub"(%{{.*}}, %[[ST]]#0)
// CHECK-NEXT:    %[[ES:.*]] = "napkin.exp"(%[[DS]])
// CHECK-NEXT:    %[[Z:.*]] = "napkin.add"(%[[ST]]#1, %[[ES]])
// CHECK-NEXT:    %[[O:.*]] = "napkin.div"(%[[ST]]#2, %[[Z]])
// CHECK-NEXT:    return %[[O]]
func.func @sink_after(%S: tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>, %V: tensor<2x10x4xf32, {axes = ["h", "x", "d"]}>, %Sink: tensor<2xf32, {axes = ["h"]}>) -> tensor<2x8x4xf32, {axes = ["h", "q", "d"]}> {
  %m = "napkin.reduce"(%S) {axis = "x", kind = "max"} : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %c = "napkin.sub"(%S, %m) : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>, tensor<2x8xf32, {axes = ["h", "q"]}>) -> tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>
  %e = "napkin.exp"(%c) : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>) -> tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>
  %l = "napkin.reduce"(%e) {axis = "x", kind = "sum"} : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %ds = "napkin.sub"(%Sink, %m) : (tensor<2xf32, {axes = ["h"]}>, tensor<2x8xf32, {axes = ["h", "q"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %es = "napkin.exp"(%ds) : (tensor<2x8xf32, {axes = ["h", "q"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %z = "napkin.add"(%l, %es) : (tensor<2x8xf32, {axes = ["h", "q"]}>, tensor<2x8xf32, {axes = ["h", "q"]}>) -> tensor<2x8xf32, {axes = ["h", "q"]}>
  %u = "napkin.contract"(%e, %V) : (tensor<2x8x10xf32, {axes = ["h", "q", "x"]}>, tensor<2x10x4xf32, {axes = ["h", "x", "d"]}>) -> tensor<2x8x4xf32, {axes = ["h", "q", "d"]}>
  %o = "napkin.div"(%u, %z) : (tensor<2x8x4xf32, {axes = ["h", "q", "d"]}>, tensor<2x8xf32, {axes = ["h", "q"]}>) -> tensor<2x8x4xf32, {axes = ["h", "q", "d"]}>
  return %o : tensor<2x8x4xf32, {axes = ["h", "q", "d"]}>
}
