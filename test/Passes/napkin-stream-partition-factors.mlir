// napkin-stream-partition: sums over the streamed axis with factors constant along it
// (normalizations feeding a matmul). The contraction is linear in its operand: each term's
// partial sum is carried, and the factors, which need the whole axis, are applied in finish.
// RUN: %napkin-opt %s --split-input-file --napkin-stream-partition='axis=k size=4' | filecheck %s

// RMSNorm feeding a matmul (k = 10, chunks of 4, the last one partial):
//   y = Σ_k x·r·g·w = r · Σ_k (x·g)·w  with  r = rsqrt(Σ_k x² / 10 + eps).
// The state is (Σ x², Σ (x·g) w); finish recomputes r from Σ x² (the napkin.map) and scales.

// CHECK-LABEL: func.func @rmsnorm
// CHECK:         %[[Y:.*]] = "napkin.stream"(%{{.*}}, %{{.*}}, %{{.*}}) ({
// CHECK-NEXT:      %[[S0:.*]] = "napkin.fill"() {value = 0.000000e+00 : f64} : () -> tensor<4xf32, {axes = ["m"]}>
// CHECK-NEXT:      %[[A0:.*]] = "napkin.fill"() {value = 0.000000e+00 : f64} : () -> tensor<4x6xf32, {axes = ["m", "n"]}>
// CHECK-NEXT:      gpu.yield %[[S0]], %[[A0]]
// CHECK-NEXT:    }, {
// CHECK-NEXT:    ^bb0(%[[XC:.*]]: tensor<4x4xf32, {axes = ["m", "k"]}>, %[[GC:.*]]: tensor<4xf32, {axes = ["k"]}>, %[[WC:.*]]: tensor<4x6xf32, {axes = ["k", "n"]}>, %{{.*}}: index, %[[SS:.*]]: tensor<4xf32, {axes = ["m"]}>, %[[ACC:.*]]: tensor<4x6xf32, {axes = ["m", "n"]}>):
// CHECK-NEXT:      %[[SQ:.*]] = "napkin.mul"(%[[XC]], %[[XC]])
// CHECK-NEXT:      %[[SQS:.*]] = "napkin.reduce"(%[[SQ]]) {axis = "k", kind = "sum"}
// CHECK-NEXT:      %[[SSN:.*]] = "napkin.add"(%[[SS]], %[[SQS]])
// CHECK-NEXT:      %[[XG:.*]] = "napkin.mul"(%[[XC]], %[[GC]])
// CHECK-NEXT:      %[[XW:.*]] = "napkin.contract"(%[[XG]], %[[WC]]) {{.*}} -> tensor<4x6xf32, {axes = ["m", "n"]}>
// CHECK-NEXT:      %[[ACCN:.*]] = "napkin.add"(%[[ACC]], %[[XW]])
// CHECK-NEXT:      gpu.yield %[[SSN]], %[[ACCN]]
// CHECK-NEXT:    }, {
// CHECK-NEXT:    ^bb0(%[[SSF:.*]]: tensor<4xf32, {axes = ["m"]}>, %[[ACCF:.*]]: tensor<4x6xf32, {axes = ["m", "n"]}>):
// CHECK-NEXT:      %[[R:.*]] = "napkin.map"(%[[SSF]]) ({
// CHECK:             math.rsqrt
// CHECK:           %[[YF:.*]] = "napkin.mul"(%[[ACCF]], %[[R]]) {{.*}} -> tensor<4x6xf32, {axes = ["m", "n"]}>
// CHECK-NEXT:      gpu.yield %[[YF]]
// CHECK-NEXT:    }) {axis = "k"
// CHECK-NEXT:    return %[[Y]]
func.func @rmsnorm(%X: tensor<4x10xf32, {axes = ["m", "k"]}>, %G: tensor<10xf32, {axes = ["k"]}>, %W: tensor<10x6xf32, {axes = ["k", "n"]}>) -> tensor<4x6xf32, {axes = ["m", "n"]}> {
  %sq = "napkin.mul"(%X, %X) : (tensor<4x10xf32, {axes = ["m", "k"]}>, tensor<4x10xf32, {axes = ["m", "k"]}>) -> tensor<4x10xf32, {axes = ["m", "k"]}>
  %ss = "napkin.reduce"(%sq) {axis = "k", kind = "sum"} : (tensor<4x10xf32, {axes = ["m", "k"]}>) -> tensor<4xf32, {axes = ["m"]}>
  %r = "napkin.map"(%ss) ({
  ^bb0(%v: f32):
    %c = arith.constant 0.1 : f32
    %a = arith.mulf %v, %c : f32
    %e = arith.constant 1.0e-6 : f32
    %b = arith.addf %a, %e : f32
    %q = math.rsqrt %b : f32
    gpu.yield %q : f32
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}>
  %xr = "napkin.mul"(%X, %r) : (tensor<4x10xf32, {axes = ["m", "k"]}>, tensor<4xf32, {axes = ["m"]}>) -> tensor<4x10xf32, {axes = ["m", "k"]}>
  %xg = "napkin.mul"(%xr, %G) : (tensor<4x10xf32, {axes = ["m", "k"]}>, tensor<10xf32, {axes = ["k"]}>) -> tensor<4x10xf32, {axes = ["m", "k"]}>
  %y = "napkin.contract"(%xg, %W) : (tensor<4x10xf32, {axes = ["m", "k"]}>, tensor<10x6xf32, {axes = ["k", "n"]}>) -> tensor<4x6xf32, {axes = ["m", "n"]}>
  return %y : tensor<4x6xf32, {axes = ["m", "n"]}>
}

// -----

// LayerNorm feeding a matmul: μ = Σ_k x / 10, var = Σ_k (x - μ)² / 10, r = rsqrt(var + eps),
// y = Σ_k ((x - μ)·r·g + β)·w. x - μ, a difference from the mean of x, is carried centered
// on the running mean M of x (Welford's update: n' = n + |chunk|, M' = M + Σ_chunk (x - M) / n'),
// as (x - M) + (M - μ), so no sum of x itself meets its mean in a subtraction (the one-pass
// variance Σ x² - 10 μ² cancels catastrophically when |μ| is large against the spread).
// The partial sums of powers of x - M are re-centered when M moves (δ = M - M'):
//   Σ (x - M')²   = Σ (x - M)² + 2 δ Σ (x - M) + n δ²  + Σ_chunk (x - M')²,
//   Σ (x - M')    = Σ (x - M) + n δ                    + Σ_chunk (x - M'),
//   Σ (x - M')g w = Σ (x - M)g w + δ Σ g w              + Σ_chunk (x - M')g w.
// Finish: var = (Σ (x - M)² + 2 (M - μ) Σ (x - M) + 10 (M - μ)²) / 10,
//         y   = r · Σ (x - M)g w + (M - μ) r Σ g w + Σ β w.
// The state is (Σ x, n, M, Σ (x - M)², Σ (x - M), Σ (x - M)g w, Σ g w, Σ β w).

// CHECK-LABEL: func.func @layernorm
// CHECK:         %[[Y:.*]] = "napkin.stream"(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) ({
// CHECK-COUNT-8:   "napkin.fill"() {value = 0.000000e+00 : f64}
// CHECK-NEXT:      gpu.yield
// CHECK-NEXT:    }, {
// CHECK-NEXT:    ^bb0(%[[XC:.*]]: tensor<4x4xf32, {axes = ["m", "k"]}>, %[[GC:.*]]: tensor<4xf32, {axes = ["k"]}>, %[[BC:.*]]: tensor<4xf32, {axes = ["k"]}>, %[[WC:.*]]: tensor<4x6xf32, {axes = ["k", "n"]}>, %{{.*}}: index, %[[SX:.*]]: tensor<4xf32, {axes = ["m"]}>, %[[N:.*]]: tensor<4xf32, {axes = ["m"]}>, %[[M:.*]]: tensor<4xf32, {axes = ["m"]}>, %[[S2:.*]]: tensor<4xf32, {axes = ["m"]}>, %[[S1:.*]]: tensor<4xf32, {axes = ["m"]}>, %[[XGW:.*]]: tensor<4x6xf32, {axes = ["m", "n"]}>, %[[GW:.*]]: tensor<6xf32, {axes = ["n"]}>, %[[BW:.*]]: tensor<6xf32, {axes = ["n"]}>):
// CHECK-NEXT:      %[[ONES:.*]] = "napkin.fill"() {value = 1.000000e+00 : f64} : () -> tensor<4x4xf32, {axes = ["m", "k"]}>
// CHECK-NEXT:      %[[LEN:.*]] = "napkin.reduce"(%[[ONES]]) {axis = "k", kind = "sum"}
// CHECK-NEXT:      %[[N1:.*]] = "napkin.add"(%[[N]], %[[LEN]])
// CHECK-NEXT:      %[[XM:.*]] = "napkin.sub"(%[[XC]], %[[M]])
// CHECK-NEXT:      %[[SXM:.*]] = "napkin.reduce"(%[[XM]]) {axis = "k", kind = "sum"}
// CHECK-NEXT:      %[[STEP:.*]] = "napkin.div"(%[[SXM]], %[[N1]])
// CHECK-NEXT:      %[[M1:.*]] = "napkin.add"(%[[M]], %[[STEP]])
// CHECK-NEXT:      %[[D:.*]] = "napkin.sub"(%[[M]], %[[M1]])
// CHECK-NEXT:      %[[P1:.*]] = "napkin.reduce"(%[[XC]]) {axis = "k", kind = "sum"}
// CHECK-NEXT:      %[[SX1:.*]] = "napkin.add"(%[[SX]], %[[P1]])
// CHECK-NEXT:      %[[ND:.*]] = "napkin.mul"(%[[N]], %[[D]])
// CHECK-NEXT:      %[[NDD:.*]] = "napkin.mul"(%[[ND]], %[[D]])
// CHECK-NEXT:      %[[A:.*]] = "napkin.add"(%[[S2]], %[[NDD]])
// CHECK-NEXT:      %[[S1D:.*]] = "napkin.mul"(%[[S1]], %[[D]])
// CHECK-NEXT:      %[[TWO:.*]] = "napkin.scale"(%[[S1D]]) {factor = 2.000000e+00 : f64}
// CHECK-NEXT:      %[[B:.*]] = "napkin.add"(%[[A]], %[[TWO]])
// CHECK-NEXT:      %[[XC1:.*]] = "napkin.sub"(%[[XC]], %[[M1]])
// CHECK-NEXT:      %[[SQ:.*]] = "napkin.mul"(%[[XC1]], %[[XC1]])
// CHECK-NEXT:      %[[PSQ:.*]] = "napkin.reduce"(%[[SQ]]) {axis = "k", kind = "sum"}
// CHECK-NEXT:      %[[S2N:.*]] = "napkin.add"(%[[B]], %[[PSQ]])
// CHECK-NEXT:      %[[ND2:.*]] = "napkin.mul"(%[[N]], %[[D]])
// CHECK-NEXT:      %[[C:.*]] = "napkin.add"(%[[S1]], %[[ND2]])
// CHECK-NEXT:      %[[PS1:.*]] = "napkin.reduce"(%[[XC1]]) {axis = "k", kind = "sum"}
// CHECK-NEXT:      %[[S1N:.*]] = "napkin.add"(%[[C]], %[[PS1]])
// CHECK-NEXT:      %[[GWD:.*]] = "napkin.mul"(%[[GW]], %[[D]]) {{.*}} -> tensor<4x6xf32, {axes = ["m", "n"]}>
// CHECK-NEXT:      %[[E:.*]] = "napkin.add"(%[[XGW]], %[[GWD]])
// CHECK-NEXT:      %[[XG:.*]] = "napkin.mul"(%[[XC1]], %[[GC]])
// CHECK-NEXT:      %[[P3:.*]] = "napkin.contract"(%[[XG]], %[[WC]]) {{.*}} -> tensor<4x6xf32, {axes = ["m", "n"]}>
// CHECK-NEXT:      %[[XGWN:.*]] = "napkin.add"(%[[E]], %[[P3]])
// CHECK-NEXT:      %[[P4:.*]] = "napkin.contract"(%[[GC]], %[[WC]]) {{.*}} -> tensor<6xf32, {axes = ["n"]}>
// CHECK-NEXT:      %[[GWN:.*]] = "napkin.add"(%[[GW]], %[[P4]])
// CHECK-NEXT:      %[[P5:.*]] = "napkin.contract"(%[[BC]], %[[WC]]) {{.*}} -> tensor<6xf32, {axes = ["n"]}>
// CHECK-NEXT:      %[[BWN:.*]] = "napkin.add"(%[[BW]], %[[P5]])
// CHECK-NEXT:      gpu.yield %[[SX1]], %[[N1]], %[[M1]], %[[S2N]], %[[S1N]], %[[XGWN]], %[[GWN]], %[[BWN]]
// CHECK-NEXT:    }, {
// CHECK-NEXT:    ^bb0(%[[SXF:.*]]: tensor<4xf32, {axes = ["m"]}>, %{{.*}}: tensor<4xf32, {axes = ["m"]}>, %[[MF:.*]]: tensor<4xf32, {axes = ["m"]}>, %[[S2F:.*]]: tensor<4xf32, {axes = ["m"]}>, %[[S1F:.*]]: tensor<4xf32, {axes = ["m"]}>, %[[XGWF:.*]]: tensor<4x6xf32, {axes = ["m", "n"]}>, %[[GWF:.*]]: tensor<6xf32, {axes = ["n"]}>, %[[BWF:.*]]: tensor<6xf32, {axes = ["n"]}>):
// CHECK-NEXT:      %[[MU:.*]] = "napkin.scale"(%[[SXF]]) {factor = 1.000000e-01 : f64}
// CHECK-NEXT:      %[[GAP:.*]] = "napkin.sub"(%[[MF]], %[[MU]])
// CHECK-NEXT:      %[[T1:.*]] = "napkin.mul"(%[[S1F]], %[[GAP]])
// CHECK-NEXT:      %{{.*}} = "napkin.scale"(%[[T1]]) {factor = 2.000000e+00 : f64}
// CHECK-NEXT:      %[[TEN:.*]] = "napkin.fill"() {value = 1.000000e+01 : f64} : () -> tensor<4xf32, {axes = ["m"]}>
// CHECK:           %[[V0:.*]] = "napkin.add"(%[[S2F]], %{{.*}})
// CHECK-NEXT:      %[[V:.*]] = "napkin.add"(%[[V0]], %{{.*}})
// CHECK-NEXT:      %[[VAR:.*]] = "napkin.scale"(%[[V]]) {factor = 1.000000e-01 : f64}
// CHECK-NEXT:      %[[R:.*]] = "napkin.map"(%[[VAR]]) ({
// CHECK:             math.rsqrt
// CHECK:           %[[Y1:.*]] = "napkin.mul"(%[[XGWF]], %[[R]]) {{.*}} -> tensor<4x6xf32, {axes = ["m", "n"]}>
// CHECK-NEXT:      %[[GAP2:.*]] = "napkin.sub"(%[[MF]], %[[MU]])
// CHECK-NEXT:      %[[Y2A:.*]] = "napkin.mul"(%[[GWF]], %[[GAP2]]) {{.*}} -> tensor<4x6xf32, {axes = ["m", "n"]}>
// CHECK-NEXT:      %[[Y2:.*]] = "napkin.mul"(%[[Y2A]], %[[R]])
// CHECK-NEXT:      %[[Y12:.*]] = "napkin.add"(%[[Y1]], %[[Y2]])
// CHECK-NEXT:      %[[YF:.*]] = "napkin.add"(%[[Y12]], %[[BWF]]) {{.*}} -> tensor<4x6xf32, {axes = ["m", "n"]}>
// CHECK-NEXT:      gpu.yield %[[YF]]
// CHECK-NEXT:    }) {axis = "k"
// CHECK-NEXT:    return %[[Y]]
func.func @layernorm(%X: tensor<4x10xf32, {axes = ["m", "k"]}>, %G: tensor<10xf32, {axes = ["k"]}>, %B: tensor<10xf32, {axes = ["k"]}>, %W: tensor<10x6xf32, {axes = ["k", "n"]}>) -> tensor<4x6xf32, {axes = ["m", "n"]}> {
  %s = "napkin.reduce"(%X) {axis = "k", kind = "sum"} : (tensor<4x10xf32, {axes = ["m", "k"]}>) -> tensor<4xf32, {axes = ["m"]}>
  %mu = "napkin.scale"(%s) {factor = 0.1 : f64} : (tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}>
  %c = "napkin.sub"(%X, %mu) : (tensor<4x10xf32, {axes = ["m", "k"]}>, tensor<4xf32, {axes = ["m"]}>) -> tensor<4x10xf32, {axes = ["m", "k"]}>
  %c2 = "napkin.mul"(%c, %c) : (tensor<4x10xf32, {axes = ["m", "k"]}>, tensor<4x10xf32, {axes = ["m", "k"]}>) -> tensor<4x10xf32, {axes = ["m", "k"]}>
  %v = "napkin.reduce"(%c2) {axis = "k", kind = "sum"} : (tensor<4x10xf32, {axes = ["m", "k"]}>) -> tensor<4xf32, {axes = ["m"]}>
  %var = "napkin.scale"(%v) {factor = 0.1 : f64} : (tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}>
  %r = "napkin.map"(%var) ({
  ^bb0(%a: f32):
    %e = arith.constant 1.0e-5 : f32
    %b = arith.addf %a, %e : f32
    %q = math.rsqrt %b : f32
    gpu.yield %q : f32
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}>
  %n = "napkin.mul"(%c, %r) : (tensor<4x10xf32, {axes = ["m", "k"]}>, tensor<4xf32, {axes = ["m"]}>) -> tensor<4x10xf32, {axes = ["m", "k"]}>
  %ng = "napkin.mul"(%n, %G) : (tensor<4x10xf32, {axes = ["m", "k"]}>, tensor<10xf32, {axes = ["k"]}>) -> tensor<4x10xf32, {axes = ["m", "k"]}>
  %nb = "napkin.add"(%ng, %B) : (tensor<4x10xf32, {axes = ["m", "k"]}>, tensor<10xf32, {axes = ["k"]}>) -> tensor<4x10xf32, {axes = ["m", "k"]}>
  %y = "napkin.contract"(%nb, %W) : (tensor<4x10xf32, {axes = ["m", "k"]}>, tensor<10x6xf32, {axes = ["k", "n"]}>) -> tensor<4x6xf32, {axes = ["m", "n"]}>
  return %y : tensor<4x6xf32, {axes = ["m", "n"]}>
}

// -----

// A product of differences from two means, Σ_k (x - μx)(y - μy): the centered state carries one
// running mean per partial sum, so this sum falls back to the expansion Σ x y - μy Σ x - μx Σ y
// + 8 μx μy (no running mean in the step), and still streams.

// CHECK-LABEL: func.func @covariance
// CHECK:         "napkin.stream"
// CHECK-NOT:       "napkin.fill"() {value = 1.000000e+00 : f64}
// CHECK:           %[[XY:.*]] = "napkin.mul"(%{{.*}}, %{{.*}}) : (tensor<2x4xf32, {axes = ["m", "k"]}>, tensor<2x4xf32, {axes = ["m", "k"]}>)
// CHECK-NEXT:      "napkin.reduce"(%[[XY]]) {axis = "k", kind = "sum"}
// CHECK:         }) {axis = "k"
func.func @covariance(%X: tensor<2x8xf32, {axes = ["m", "k"]}>, %Y: tensor<2x8xf32, {axes = ["m", "k"]}>) -> tensor<2xf32, {axes = ["m"]}> {
  %sx = "napkin.reduce"(%X) {axis = "k", kind = "sum"} : (tensor<2x8xf32, {axes = ["m", "k"]}>) -> tensor<2xf32, {axes = ["m"]}>
  %mx = "napkin.scale"(%sx) {factor = 0.125 : f64} : (tensor<2xf32, {axes = ["m"]}>) -> tensor<2xf32, {axes = ["m"]}>
  %sy = "napkin.reduce"(%Y) {axis = "k", kind = "sum"} : (tensor<2x8xf32, {axes = ["m", "k"]}>) -> tensor<2xf32, {axes = ["m"]}>
  %my = "napkin.scale"(%sy) {factor = 0.125 : f64} : (tensor<2xf32, {axes = ["m"]}>) -> tensor<2xf32, {axes = ["m"]}>
  %cx = "napkin.sub"(%X, %mx) : (tensor<2x8xf32, {axes = ["m", "k"]}>, tensor<2xf32, {axes = ["m"]}>) -> tensor<2x8xf32, {axes = ["m", "k"]}>
  %cy = "napkin.sub"(%Y, %my) : (tensor<2x8xf32, {axes = ["m", "k"]}>, tensor<2xf32, {axes = ["m"]}>) -> tensor<2x8xf32, {axes = ["m", "k"]}>
  %p = "napkin.mul"(%cx, %cy) : (tensor<2x8xf32, {axes = ["m", "k"]}>, tensor<2x8xf32, {axes = ["m", "k"]}>) -> tensor<2x8xf32, {axes = ["m", "k"]}>
  %c = "napkin.reduce"(%p) {axis = "k", kind = "sum"} : (tensor<2x8xf32, {axes = ["m", "k"]}>) -> tensor<2xf32, {axes = ["m"]}>
  return %c : tensor<2xf32, {axes = ["m"]}>
}
