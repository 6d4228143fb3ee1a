// napkin-differentiate: the backward diagram @<f>_vjp (reverse mode), and the residuals the
// forward gains for it.
// RUN: %napkin-opt %s --split-input-file --napkin-differentiate='remat=true' | filecheck %s
// RUN: %napkin-opt %s --split-input-file --napkin-differentiate='remat=false wrt=0' | filecheck %s --check-prefix=STORE

// Causal attention, FlashAttention-2's residuals (remat=true): the forward also returns the
// row log-sum-exp L = m + log l, and its softmax becomes e / l of the same m, e and l (one
// running max and sum once streamed); the backward recomputes S and P = exp(S - L), and, since
// the contraction reads P itself, takes D = rowsum(dP * P) as rowsum(dO * O) from the output.
// The mask's gradient is a select on the same mask applied to ones (no 0 * inf).

// CHECK-LABEL: func.func @attention(
// CHECK-SAME:    -> (tensor<8x4xf32, {axes = ["q", "d"]}>, tensor<8xf32, {axes = ["q"]}>)
// CHECK-SAME:    result_names = ["O", "L"]
// CHECK:         %[[S:.*]] = "napkin.mask"
// CHECK:         %[[M:.*]] = "napkin.reduce"(%[[S]]) {axis = "x", kind = "max"}
// CHECK-NEXT:    %[[C:.*]] = "napkin.sub"(%[[S]], %[[M]])
// CHECK-NEXT:    %[[E:.*]] = "napkin.exp"(%[[C]])
// CHECK-NEXT:    %[[SUM:.*]] = "napkin.reduce"(%[[E]]) {axis = "x", kind = "sum"}
// CHECK-NEXT:    %[[L:.*]] = "napkin.map"(%[[M]], %[[SUM]])
// CHECK:           math.log
// CHECK:         %[[P0:.*]] = "napkin.div"(%[[E]], %[[SUM]])
// CHECK-NOT:     "napkin.softmax"
// CHECK:         "napkin.contract"(%[[P0]], %{{.*}})
// CHECK:         return %{{.*}}, %[[L]]

// CHECK-LABEL: func.func @attention_vjp(
// CHECK-SAME:    %[[Q:[^:]*]]: tensor<8x4xf32, {axes = ["q", "d"]}>, %[[K:[^:]*]]: tensor<6x4xf32, {axes = ["x", "d"]}>, %[[V:[^:]*]]: tensor<6x4xf32, {axes = ["x", "d"]}>, %[[O:[^:]*]]: tensor<8x4xf32, {axes = ["q", "d"]}>, %[[LA:[^:]*]]: tensor<8xf32, {axes = ["q"]}>, %[[DO:[^:]*]]: tensor<8x4xf32, {axes = ["q", "d"]}>)
// CHECK-SAME:    arg_names = ["Q", "K", "V", "O", "L", "dO"], result_names = ["dQ", "dK", "dV"]
// CHECK:         %[[DP:.*]] = "napkin.contract"(%[[DO]], %[[V]]) {{.*}} -> tensor<8x6xf32, {axes = ["q", "x"]}>
// CHECK-NEXT:    %[[S2:.*]] = "napkin.contract"(%[[Q]], %[[K]])
// CHECK-NEXT:    %[[T2:.*]] = "napkin.scale"(%[[S2]])
// CHECK-NEXT:    %[[M2:.*]] = "napkin.mask"(%[[T2]])
// CHECK:         }) {cols = "x", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>, rows = "q"}
// CHECK-NEXT:    %[[SL:.*]] = "napkin.sub"(%[[M2]], %[[LA]])
// CHECK-NEXT:    %[[P:.*]] = "napkin.exp"(%[[SL]])
// CHECK-NEXT:    %[[DV:.*]] = "napkin.contract"(%[[DO]], %[[P]]) {{.*}} -> tensor<6x4xf32, {axes = ["x", "d"]}>
// CHECK-NEXT:    %[[OO:.*]] = "napkin.mul"(%[[DO]], %[[O]])
// CHECK-NEXT:    %[[D:.*]] = "napkin.reduce"(%[[OO]]) {axis = "d", kind = "sum"}
// CHECK-NEXT:    %[[DS:.*]] = "napkin.map"(%[[P]], %[[DP]], %[[D]])
// CHECK:           arith.subf
// CHECK-NEXT:      arith.mulf
// CHECK:         %[[ONES:.*]] = "napkin.map"(%[[DS]])
// CHECK:         %[[KEPT:.*]] = "napkin.mask"(%[[ONES]]) ({
// CHECK:           arith.cmpi sle
// CHECK:         }) {cols = "x", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>, rows = "q"}
// CHECK-NEXT:    %[[DSM:.*]] = "napkin.map"(%[[DS]], %[[KEPT]])
// CHECK:           arith.cmpf oeq
// CHECK:           arith.select
// CHECK:         %[[DT:.*]] = "napkin.scale"(%[[DSM]]) {factor = 5.000000e-01 : f64}
// CHECK-NEXT:    %[[DQ:.*]] = "napkin.contract"(%[[DT]], %[[K]]) {{.*}} -> tensor<8x4xf32, {axes = ["q", "d"]}>
// CHECK-NEXT:    %[[DK:.*]] = "napkin.contract"(%[[DT]], %[[Q]]) {{.*}} -> tensor<6x4xf32, {axes = ["x", "d"]}>
// CHECK-NEXT:    return %[[DQ]], %[[DK]], %[[DV]]

// remat=false, wrt=0 (Q only): the softmax output P is stored (R0) and nothing is
// recomputed; only what dQ needs is an argument (no Q, no L).

// STORE-LABEL: func.func @attention(
// STORE-SAME:    result_names = ["O", "R0"]
// STORE:         %[[P:.*]] = "napkin.softmax"
// STORE:         return %{{.*}}, %[[P]]
// STORE-LABEL: func.func @attention_vjp(
// STORE-SAME:    arg_names = ["K", "V", "O", "R0", "dO"], result_names = ["dQ"]
// STORE-NOT:     "napkin.softmax"
// STORE-NOT:     "napkin.exp"
// STORE:         return
func.func @attention(%Q: tensor<8x4xf32, {axes = ["q", "d"]}>, %K: tensor<6x4xf32, {axes = ["x", "d"]}>, %V: tensor<6x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}> attributes {arg_names = ["Q", "K", "V"]} {
  %s = "napkin.contract"(%Q, %K) : (tensor<8x4xf32, {axes = ["q", "d"]}>, tensor<6x4xf32, {axes = ["x", "d"]}>) -> tensor<8x6xf32, {axes = ["q", "x"]}>
  %t = "napkin.scale"(%s) {factor = 5.000000e-01 : f64} : (tensor<8x6xf32, {axes = ["q", "x"]}>) -> tensor<8x6xf32, {axes = ["q", "x"]}>
  %m = "napkin.mask"(%t) ({
  ^bb0(%mi5: index, %mj5: index, %mr5: index, %mc5: index):
    %mk5 = arith.cmpi sle, %mj5, %mi5 : index
    gpu.yield %mk5 : i1
  }) {rows = "q", cols = "x", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>} : (tensor<8x6xf32, {axes = ["q", "x"]}>) -> tensor<8x6xf32, {axes = ["q", "x"]}>
  %p = "napkin.softmax"(%m) {axis = "x"} : (tensor<8x6xf32, {axes = ["q", "x"]}>) -> tensor<8x6xf32, {axes = ["q", "x"]}>
  %o = "napkin.contract"(%p, %V) : (tensor<8x6xf32, {axes = ["q", "x"]}>, tensor<6x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}>
  return %o : tensor<8x4xf32, {axes = ["q", "d"]}>
}

// -----

// A row maximum of a broadcast product: the max sends the cotangent to the positions equal
// to the maximum, split equally between ties (dO / count, where x == max); the product's gradient for the
// broadcast operand G[k] is summed over the axis m it lacks.

// CHECK-LABEL: func.func @rowmax_vjp(
// CHECK-SAME:    %[[X:[^:]*]]: tensor<5x3xf32, {axes = ["m", "k"]}>, %[[G:[^:]*]]: tensor<3xf32, {axes = ["k"]}>, %[[R:[^:]*]]: tensor<5xf32, {axes = ["m"]}>, %[[DR:[^:]*]]: tensor<5xf32, {axes = ["m"]}>)
// CHECK-SAME:    arg_names = ["X", "G", "O", "dO"], result_names = ["dX", "dG"]
// CHECK:         %[[Y:.*]] = "napkin.mul"(%[[X]], %[[G]])
// CHECK-NEXT:    %[[HIT:.*]] = "napkin.map"(%[[Y]], %[[R]])
// CHECK:           arith.cmpf oeq
// CHECK:         %[[N:.*]] = "napkin.reduce"(%[[HIT]]) {axis = "k", kind = "sum"}
// CHECK-NEXT:    %[[EACH:.*]] = "napkin.map"(%[[DR]], %[[N]])
// CHECK:           arith.divf
// CHECK:         %[[DY:.*]] = "napkin.map"(%[[Y]], %[[R]], %[[EACH]])
// CHECK:           arith.cmpf oeq
// CHECK:           arith.select
// CHECK:         %[[DX:.*]] = "napkin.map"(%[[DY]], %[[G]])
// CHECK:         %[[DYX:.*]] = "napkin.map"(%[[DY]], %[[X]])
// CHECK:         %[[DG:.*]] = "napkin.reduce"(%[[DYX]]) {axis = "m", kind = "sum"} {{.*}} -> tensor<3xf32, {axes = ["k"]}>
// CHECK-NEXT:    return %[[DX]], %[[DG]]

// STORE-LABEL: func.func @rowmax_vjp(
// STORE-SAME:    result_names = ["dX"]
func.func @rowmax(%X: tensor<5x3xf32, {axes = ["m", "k"]}>, %G: tensor<3xf32, {axes = ["k"]}>) -> tensor<5xf32, {axes = ["m"]}> attributes {arg_names = ["X", "G"]} {
  %y = "napkin.mul"(%X, %G) : (tensor<5x3xf32, {axes = ["m", "k"]}>, tensor<3xf32, {axes = ["k"]}>) -> tensor<5x3xf32, {axes = ["m", "k"]}>
  %r = "napkin.reduce"(%y) {axis = "k", kind = "max"} : (tensor<5x3xf32, {axes = ["m", "k"]}>) -> tensor<5xf32, {axes = ["m"]}>
  return %r : tensor<5xf32, {axes = ["m"]}>
}
