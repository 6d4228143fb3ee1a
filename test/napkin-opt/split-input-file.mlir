// --split-input-file: each chunk on its own, outputs joined by `// -----`, diagnostics at their
// line in the whole file; a failing chunk fails the run but the others are still printed.
// RUN: not %napkin-opt %s --split-input-file 2>%t.err | filecheck %s
// RUN: filecheck %s --check-prefix=ERR --input-file=%t.err

// CHECK-LABEL: func.func @first
// CHECK:       // -----
// CHECK-LABEL: func.func @third
// CHECK-NOT:   // -----

// ERR:     error: {{.*}}split-input-file.mlir:21:8: 'napkin.exp' op input: tensor type 'tensor<4xf32>' has no axis names
// ERR-NOT: error:
func.func @first() {
  return
}

// -----

// The error is on line 21 of this file (line 4 of the chunk).
func.func @second(%a: tensor<4xf32>) {
  %0 = "napkin.exp"(%a) : (tensor<4xf32>) -> tensor<4xf32>
  return
}

// -----

func.func @third() {
  return
}
