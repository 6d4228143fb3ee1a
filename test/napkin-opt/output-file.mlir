// -o writes the output to a file (nothing on stdout); --dump-dir writes the input and the IR
// after each pipeline element as numbered files.
// RUN: rm -rf %t.dir
// RUN: %napkin-opt %s -o %t.out --pass-pipeline='builtin.module(napkin-verify,func.func(cse))' --dump-dir %t.dir | count 0
// RUN: filecheck %s --input-file=%t.out
// RUN: ls %t.dir | filecheck %s --check-prefix=DUMP
// RUN: filecheck %s --input-file=%t.dir/02-func.func-cse.mlir
// RUN: %napkin-opt %t.dir/02-func.func-cse.mlir | filecheck %s

// CHECK-LABEL: func.func @f
// CHECK:         "napkin.relu"

// DUMP:      00-input.mlir
// DUMP-NEXT: 01-napkin-verify.mlir
// DUMP-NEXT: 02-func.func-cse.mlir
func.func @f(%a: tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}> {
  %0 = "napkin.relu"(%a) : (tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}>
  return %0 : tensor<4xf32, {axes = ["m"]}>
}
