// napkin-group-partition refuses axes whose groups would not be independent, and axes the
// diagram does not have. Every case asks for `axes=k sizes=4`.
// RUN: not %napkin-opt %s --split-input-file --napkin-group-partition='axes=k sizes=4' 2>&1 | filecheck %s

// Matmul reduces k: grouping it would split the sum.
// CHECK: cannot group-partition axis 'k': 'napkin.contract' reduces it
func.func @reduced(%A: tensor<8x16xf32, {axes = ["m", "k"]}>, %B: tensor<16x6xf32, {axes = ["k", "n"]}>) -> tensor<8x6xf32, {axes = ["m", "n"]}> {
  %0 = "napkin.contract"(%A, %B) : (tensor<8x16xf32, {axes = ["m", "k"]}>, tensor<16x6xf32, {axes = ["k", "n"]}>) -> tensor<8x6xf32, {axes = ["m", "n"]}>
  return %0 : tensor<8x6xf32, {axes = ["m", "n"]}>
}

// -----

// The diagram has no axis k.
// CHECK: error: {{.*}}unknown axis 'k' (the diagram has axes m, n)
func.func @unknown(%X: tensor<8x6xf32, {axes = ["m", "n"]}>) -> tensor<8x6xf32, {axes = ["m", "n"]}> {
  %0 = "napkin.exp"(%X) : (tensor<8x6xf32, {axes = ["m", "n"]}>) -> tensor<8x6xf32, {axes = ["m", "n"]}>
  return %0 : tensor<8x6xf32, {axes = ["m", "n"]}>
}

// -----

// A softmax normalizes along k: its rows need the whole axis.
// (Located errors raised inside the op walk currently surface as an internal error, so
// only the message is checked here.)
// CHECK: cannot group-partition axis 'k': 'napkin.softmax' normalizes along it
func.func @normalized(%X: tensor<8x16xf32, {axes = ["m", "k"]}>) -> tensor<8x16xf32, {axes = ["m", "k"]}> {
  %0 = "napkin.softmax"(%X) {axis = "k"} : (tensor<8x16xf32, {axes = ["m", "k"]}>) -> tensor<8x16xf32, {axes = ["m", "k"]}>
  return %0 : tensor<8x16xf32, {axes = ["m", "k"]}>
}

// -----

// A group size larger than the axis.
// CHECK: error: {{.*}}group size 4 for axis 'k' must be between 1 and its size 2
func.func @too_big(%X: tensor<8x2xf32, {axes = ["m", "k"]}>) -> tensor<8x2xf32, {axes = ["m", "k"]}> {
  %0 = "napkin.exp"(%X) : (tensor<8x2xf32, {axes = ["m", "k"]}>) -> tensor<8x2xf32, {axes = ["m", "k"]}>
  return %0 : tensor<8x2xf32, {axes = ["m", "k"]}>
}
