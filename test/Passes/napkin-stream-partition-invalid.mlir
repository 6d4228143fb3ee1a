// napkin-stream-partition refuses what it cannot prove streamable (never wrong code). Every
// case asks for `axis=x size=4 online=false`.
// RUN: not %napkin-opt %s --split-input-file --napkin-stream-partition='axis=x size=4 online=false' 2>&1 | filecheck %s

// Plain softmax with online=false: its normalizer needs the whole row.
// CHECK: error: {{.*}}napkin-stream-partition-invalid.mlir:10:8: softmax along 'x' is not streamable as it stands
// CHECK-SAME: online=true
func.func @softmax_offline(%Q: tensor<8x4xf32, {axes = ["q", "d"]}>, %K: tensor<16x4xf32, {axes = ["x", "d"]}>, %V: tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}> {
  %s = "napkin.contract"(%Q, %K) : (tensor<8x4xf32, {axes = ["q", "d"]}>, tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %p = "napkin.softmax"(%s) {axis = "x"} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %o = "napkin.contract"(%p, %V) : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}>
  return %o : tensor<8x4xf32, {axes = ["q", "d"]}>
}

// -----

// The output keeps x: there is nothing to accumulate.
// CHECK: error: {{.*}}cannot stream axis 'x': output #0 {{.*}} keeps it
func.func @output_keeps(%S: tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}> {
  %0 = "napkin.exp"(%S) : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  return %0 : tensor<8x16xf32, {axes = ["q", "x"]}>
}

// -----

// A hand-decomposed softmax: the `sub` works on chunks of x but uses the row max, a
// reduction over the whole axis.
// CHECK: error: {{.*}}cannot stream axis 'x': 'napkin.sub' works on chunks of 'x' but uses 'napkin.reduce', which needs the whole axis
func.func @decomposed(%S: tensor<8x16xf32, {axes = ["q", "x"]}>, %V: tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}> {
  %m = "napkin.reduce"(%S) {axis = "x", kind = "max"} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}>
  %c = "napkin.sub"(%S, %m) : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<8xf32, {axes = ["q"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %e = "napkin.exp"(%c) : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %l = "napkin.reduce"(%e) {axis = "x", kind = "sum"} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}>
  %p = "napkin.div"(%e, %l) : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<8xf32, {axes = ["q"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %o = "napkin.contract"(%p, %V) : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}>
  return %o : tensor<8x4xf32, {axes = ["q", "d"]}>
}

// -----

// A chunk larger than the axis.
// CHECK: error: {{.*}}chunk size 4 for axis 'x' must be between 1 and its size 2
func.func @too_big(%S: tensor<8x2xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}> {
  %0 = "napkin.reduce"(%S) {axis = "x", kind = "sum"} : (tensor<8x2xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}>
  return %0 : tensor<8xf32, {axes = ["q"]}>
}

// -----

// An axis no array has.
// CHECK: error: {{.*}}unknown axis 'x'
func.func @unknown(%S: tensor<8x2xf32, {axes = ["q", "k"]}>) -> tensor<8xf32, {axes = ["q"]}> {
  %0 = "napkin.reduce"(%S) {axis = "k", kind = "sum"} : (tensor<8x2xf32, {axes = ["q", "k"]}>) -> tensor<8xf32, {axes = ["q"]}>
  return %0 : tensor<8xf32, {axes = ["q"]}>
}

// -----

// RUN: not %napkin-opt %s --split-input-file --pass-pipeline='builtin.module(napkin-group-partition{axes=r sizes=7 level=grid},napkin-stream-partition{axis=n size=10},napkin-stream-partition{axis=z size=34})' 2>&1 | filecheck %s --check-prefix=GROUPED
// After a group partition and a stream the next stream partitions the innermost body: an
// axis only dead boxes had (fuzz seed 61, diagram 61000252) is in no array there, and the
// refusal says where (it had no location).
// GROUPED: error: {{.*}}napkin-stream-partition-invalid.mlir:{{[0-9]+}}:{{[0-9]+}}: napkin-stream-partition: no array in the body of this 'napkin.group' has axis 'z'
func.func @fuzz61000252(%arg0: tensor<13x13xf32, {axes = ["r", "n"]}>, %arg1: tensor<13x37xf32, {axes = ["r", "z"]}>, %arg2: tensor<13x37xf32, {axes = ["n", "z"]}>, %arg3: tensor<37x13xf32, {axes = ["z", "n"]}>) -> tensor<13xf32, {axes = ["r"]}> attributes {arg_names = ["A0", "A1", "A2", "A3"]} {
  %0 = "napkin.add"(%arg0, %arg0) : (tensor<13x13xf32, {axes = ["r", "n"]}>, tensor<13x13xf32, {axes = ["r", "n"]}>) -> tensor<13x13xf32, {axes = ["r", "n"]}>
  %1 = "napkin.contract"(%0, %arg0) : (tensor<13x13xf32, {axes = ["r", "n"]}>, tensor<13x13xf32, {axes = ["r", "n"]}>) -> tensor<13xf32, {axes = ["r"]}>
  %2 = "napkin.contract"(%arg1, %arg2) : (tensor<13x37xf32, {axes = ["r", "z"]}>, tensor<13x37xf32, {axes = ["n", "z"]}>) -> tensor<13x13xf32, {axes = ["r", "n"]}>
  %3 = "napkin.scale"(%2) {factor = 0.16439898730535729 : f64} : (tensor<13x13xf32, {axes = ["r", "n"]}>) -> tensor<13x13xf32, {axes = ["r", "n"]}>
  %4 = "napkin.exp"(%3) : (tensor<13x13xf32, {axes = ["r", "n"]}>) -> tensor<13x13xf32, {axes = ["r", "n"]}>
  %5 = "napkin.reduce"(%4) {axis = "n", kind = "sum"} : (tensor<13x13xf32, {axes = ["r", "n"]}>) -> tensor<13xf32, {axes = ["r"]}>
  %6 = "napkin.div"(%4, %5) : (tensor<13x13xf32, {axes = ["r", "n"]}>, tensor<13xf32, {axes = ["r"]}>) -> tensor<13x13xf32, {axes = ["r", "n"]}>
  %7 = "napkin.contract"(%6, %arg3) : (tensor<13x13xf32, {axes = ["r", "n"]}>, tensor<37x13xf32, {axes = ["z", "n"]}>) -> tensor<13x37xf32, {axes = ["r", "z"]}>
  return %1 : tensor<13xf32, {axes = ["r"]}>
}
