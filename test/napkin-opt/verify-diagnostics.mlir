// --verify-diagnostics: every expected-error (same line, @+N, @-N, @above, @below) must be
// produced, with its text as a substring, and nothing else; otherwise the run fails and says
// what was missing or unexpected.
// RUN: %napkin-opt %s --split-input-file --verify-diagnostics
// RUN: not %napkin-opt %S/Inputs/wrong-expectations.mlir --split-input-file --verify-diagnostics 2>&1 | filecheck %s

// CHECK-DAG: error: {{.*}}wrong-expectations.mlir:4:6: expected error "axis 'k' has size 7" was not produced (on line 5)
// CHECK-DAG: error: {{.*}}wrong-expectations.mlir:5:8: unexpected error: 'napkin.contract' op axis 'k' has size 8 in lhs but 9 in rhs
// CHECK-DAG: error: {{.*}}wrong-expectations.mlir:13:8: unexpected error: 'napkin.exp' op input: tensor type 'tensor<4xf32>' has no axis names

func.func @same_line(%a: tensor<4xf32>) {
  %0 = "napkin.exp"(%a) : (tensor<4xf32>) -> tensor<4xf32> // expected-error {{has no axis names}}
  return
}

// -----

func.func @minus(%a: tensor<4xf32>) {
  %0 = "napkin.relu"(%a) : (tensor<4xf32>) -> tensor<4xf32>
  // expected-error @-1 {{'napkin.relu' op input}}
  return
}

// -----

func.func @above(%a: tensor<4xf32>) {
  %0 = "napkin.tanh"(%a) : (tensor<4xf32>) -> tensor<4xf32>
  // expected-error @above {{'napkin.tanh' op}}
  return
}

// -----

func.func @below(%a: tensor<4xf32>) {
  // expected-error @below {{'napkin.gelu' op}}
  %0 = "napkin.gelu"(%a) : (tensor<4xf32>) -> tensor<4xf32>
  return
}

// -----

// Parse errors are diagnostics too.
func.func @parse() {
  // expected-error @+1 {{custom op 'frobnicate' is unknown}}
  frobnicate
}
