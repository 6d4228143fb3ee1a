// --mlir-print-ir-after-all prints the IR after every pass, napkin and upstream, to stderr with
// mlir-opt's headers; the result still goes to the output.
// RUN: %napkin-opt %s --pass-pipeline='builtin.module(napkin-verify,func.func(cse),canonicalize)' --mlir-print-ir-after-all -o %t 2>&1 | filecheck %s
// RUN: filecheck %s --check-prefix=OUT --input-file=%t

// CHECK:      // -----// IR Dump After napkin-verify (napkin-verify) //----- //
// CHECK-NEXT: module {
// CHECK:      // -----// IR Dump After CSE (cse) //----- //
// CHECK-NEXT: func.func @f
// CHECK:      // -----// IR Dump After Canonicalizer (canonicalize) //----- //
// CHECK-NEXT: module {

// OUT-LABEL: func.func @f
// OUT:         "napkin.exp"
func.func @f(%a: tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}> {
  %0 = "napkin.exp"(%a) : (tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}>
  return %0 : tensor<4xf32, {axes = ["m"]}>
}
