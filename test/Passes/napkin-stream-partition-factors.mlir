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
// y = Σ_k ((x - μ)·r·g + β)·w. The contraction distributes over the subtraction and the
// addition, the variance over the square:
//   y   = r · Σ (x·g) w  -  μ·r · Σ g w  +  Σ β w,
//   var = (Σ x²  -  2 μ Σ x  +  10 μ²) / 10.
// The state is (Σ x, Σ x², Σ (x·g) w, Σ g w, Σ β w); finish computes μ, var, r and y.

// CHECK-LABEL: func.func @layernorm
// CHECK:         %[[Y:.*]] = "napkin.stream"(%{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}) ({
// CHECK-COUNT-5:   "napkin.fill"() {value = 0.000000e+00 : f64}
// CHECK-NEXT:      gpu.yield
// CHECK-NEXT:    }, {
// CHECK-NEXT:    ^bb0(%[[XC:.*]]: tensor<4x4xf32, {axes = ["m", "k"]}>, %[[GC:.*]]: tensor<4xf32, {axes = ["k"]}>, %[[BC:.*]]: tensor<4xf32, {axes = ["k"]}>, %[[WC:.*]]: tensor<4x6xf32, {axes = ["k", "n"]}>, %{{.*}}: index, %[[SX:.*]]: tensor<4xf32, {axes = ["m"]}>, %[[SXX:.*]]: tensor<4xf32, {axes = ["m"]}>, %[[XGW:.*]]: tensor<4x6xf32, {axes = ["m", "n"]}>, %[[GW:.*]]: tensor<6xf32, {axes = ["n"]}>, %[[BW:.*]]: tensor<6xf32, {axes = ["n"]}>):
// CHECK-NEXT:      %[[P1:.*]] = "napkin.reduce"(%[[XC]]) {axis = "k", kind = "sum"}
// CHECK-NEXT:      %[[N1:.*]] = "napkin.add"(%[[SX]], %[[P1]])
// CHECK-NEXT:      %[[XX:.*]] = "napkin.mul"(%[[XC]], %[[XC]])
// CHECK-NEXT:      %[[P2:.*]] = "napkin.reduce"(%[[XX]]) {axis = "k", kind = "sum"}
// CHECK-NEXT:      %[[N2:.*]] = "napkin.add"(%[[SXX]], %[[P2]])
// CHECK-NEXT:      %[[XG:.*]] = "napkin.mul"(%[[XC]], %[[GC]])
// CHECK-NEXT:      %[[P3:.*]] = "napkin.contract"(%[[XG]], %[[WC]]) {{.*}} -> tensor<4x6xf32, {axes = ["m", "n"]}>
// CHECK-NEXT:      %[[N3:.*]] = "napkin.add"(%[[XGW]], %[[P3]])
// CHECK-NEXT:      %[[P4:.*]] = "napkin.contract"(%[[GC]], %[[WC]]) {{.*}} -> tensor<6xf32, {axes = ["n"]}>
// CHECK-NEXT:      %[[N4:.*]] = "napkin.add"(%[[GW]], %[[P4]])
// CHECK-NEXT:      %[[P5:.*]] = "napkin.contract"(%[[BC]], %[[WC]]) {{.*}} -> tensor<6xf32, {axes = ["n"]}>
// CHECK-NEXT:      %[[N5:.*]] = "napkin.add"(%[[BW]], %[[P5]])
// CHECK-NEXT:      gpu.yield %[[N1]], %[[N2]], %[[N3]], %[[N4]], %[[N5]]
// CHECK-NEXT:    }, {
// CHECK-NEXT:    ^bb0(%[[SXF:.*]]: tensor<4xf32, {axes = ["m"]}>, %[[SXXF:.*]]: tensor<4xf32, {axes = ["m"]}>, %[[XGWF:.*]]: tensor<4x6xf32, {axes = ["m", "n"]}>, %[[GWF:.*]]: tensor<6xf32, {axes = ["n"]}>, %[[BWF:.*]]: tensor<6xf32, {axes = ["n"]}>):
// CHECK-NEXT:      %[[MU:.*]] = "napkin.scale"(%[[SXF]]) {factor = 1.000000e-01 : f64}
// CHECK-NEXT:      %[[MUSX:.*]] = "napkin.mul"(%[[SXF]], %[[MU]])
// CHECK-NEXT:      %[[TWO:.*]] = "napkin.scale"(%[[MUSX]]) {factor = 2.000000e+00 : f64}
// CHECK-NEXT:      %[[TEN:.*]] = "napkin.fill"() {value = 1.000000e+01 : f64} : () -> tensor<4xf32, {axes = ["m"]}>
// CHECK-NEXT:      %[[TM:.*]] = "napkin.mul"(%[[TEN]], %[[MU]])
// CHECK-NEXT:      %[[TMM:.*]] = "napkin.mul"(%[[TM]], %[[MU]])
// CHECK-NEXT:      %[[D:.*]] = "napkin.sub"(%[[SXXF]], %[[TWO]])
// CHECK-NEXT:      %[[V:.*]] = "napkin.add"(%[[D]], %[[TMM]])
// CHECK-NEXT:      %[[VAR:.*]] = "napkin.scale"(%[[V]]) {factor = 1.000000e-01 : f64}
// CHECK-NEXT:      %[[R:.*]] = "napkin.map"(%[[VAR]]) ({
// CHECK:             math.rsqrt
// CHECK:           %[[T1:.*]] = "napkin.mul"(%[[XGWF]], %[[R]]) {{.*}} -> tensor<4x6xf32, {axes = ["m", "n"]}>
// CHECK-NEXT:      %[[T2A:.*]] = "napkin.mul"(%[[GWF]], %[[MU]]) {{.*}} -> tensor<4x6xf32, {axes = ["m", "n"]}>
// CHECK-NEXT:      %[[T2:.*]] = "napkin.mul"(%[[T2A]], %[[R]])
// CHECK-NEXT:      %[[Y1:.*]] = "napkin.sub"(%[[T1]], %[[T2]])
// CHECK-NEXT:      %[[YF:.*]] = "napkin.add"(%[[Y1]], %[[BWF]]) {{.*}} -> tensor<4x6xf32, {axes = ["m", "n"]}>
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
