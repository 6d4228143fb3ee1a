// Napkin passes as flags, with options mlir-opt style (--pass='opt=value opt2=value'), or
// comma separated when no value needs a comma; option errors name the pass and the option.
// RUN: %napkin-opt %s --napkin-group-partition='axes=m sizes=2' | filecheck %s
// RUN: %napkin-opt %s --napkin-group-partition=axes=m,sizes=2 | filecheck %s
// RUN: %napkin-opt %s --pass-pipeline='builtin.module(napkin-group-partition{axes=m sizes=2},napkin-verify)' | filecheck %s
// RUN: not %napkin-opt %s --napkin-group-partition='axes=m sizes=two' 2>&1 | filecheck %s --check-prefix=BADVALUE
// RUN: not %napkin-opt %s --napkin-group-partition='colour=red' 2>&1 | filecheck %s --check-prefix=BADOPTION
// RUN: not %napkin-opt %s --napkin-verify --pass-pipeline='builtin.module(cse)' 2>&1 | filecheck %s --check-prefix=MIXED
// RUN: not %napkin-opt %s --napkin-group-partition='axes=z sizes=2' 2>&1 | filecheck %s --check-prefix=FAILS

// CHECK-LABEL: func.func @matmul
// CHECK:         "napkin.group"(%{{.*}}, %{{.*}}) ({
// CHECK:           "napkin.contract"
// CHECK:         }) {axes = ["m"], level = "grid"
// CHECK-SAME:      sizes = array<i64: 2>

// BADVALUE:  error: pass 'napkin-group-partition': bad value 'two' for option 'sizes': expected an integer
// BADOPTION: error: pass 'napkin-group-partition' has no option 'colour' (its options: axes, sizes, level)
// MIXED:     error: --pass-pipeline cannot be combined with pass flags
// FAILS:     error: napkin-group-partition: unknown axis 'z'
func.func @matmul(%a: tensor<4x8xf32, {axes = ["m", "k"]}>, %b: tensor<8x6xf32, {axes = ["k", "n"]}>) -> tensor<4x6xf32, {axes = ["m", "n"]}> {
  %0 = "napkin.contract"(%a, %b) : (tensor<4x8xf32, {axes = ["m", "k"]}>, tensor<8x6xf32, {axes = ["k", "n"]}>) -> tensor<4x6xf32, {axes = ["m", "n"]}>
  return %0 : tensor<4x6xf32, {axes = ["m", "n"]}>
}
