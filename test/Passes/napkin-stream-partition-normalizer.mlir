// Known bug: _factor_normalizers moves the division after the contraction but leaves the
// original (now dead) napkin.div in the block; _classify then refuses it as a chunk op that
// RUN: %napkin-opt %s --napkin-stream-partition='axis=x size=4' | filecheck %s

// A normalizer that divides by a row sum (relu(s) / sum_x relu(s)) before the contraction:
// the division does not depend on x, so it moves after the contraction and the stream
// carries two sums; the division runs after the stream.

// CHECK-LABEL: func.func @normalized
// CHECK:         %[[ST:.*]]:2 = "napkin.stream"
// CHECK-NOT:       "napkin.div"
// CHECK:         }) {axis = "x"
// CHECK:         %[[O:.*]] = "napkin.div"(%[[ST]]#{{[01]}}, %[[ST]]#{{[01]}}) {{.*}} -> tensor<8x4xf32, {axes = ["q", "d"]}>
// CHECK:         return %[[O]]
func.func @normalized(%S: tensor<8x16xf32, {axes = ["q", "x"]}>, %V: tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}> {
  %r = "napkin.relu"(%S) : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %l = "napkin.reduce"(%r) {axis = "x", kind = "sum"} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}>
  %p = "napkin.div"(%r, %l) : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<8xf32, {axes = ["q"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %o = "napkin.contract"(%p, %V) : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}>
  return %o : tensor<8x4xf32, {axes = ["q", "d"]}>
}
