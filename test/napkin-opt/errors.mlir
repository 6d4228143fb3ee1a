// Bad input and bad command lines: `error: <file>:<line>:<col>: <message>` on stderr, a
// non-zero exit, never a Python traceback (LLVM FileCheck's --implicit-check-not checks that).
// RUN: not %napkin-opt %S/Inputs/malformed.mlir 2>&1 | %FileCheck %s --check-prefix=SYNTAX --implicit-check-not=Traceback
// RUN: not %napkin-opt < %S/Inputs/malformed.mlir 2>&1 | filecheck %s --check-prefix=STDIN
// RUN: not %napkin-opt %S/Inputs/bad-axis.mlir 2>&1 | filecheck %s --check-prefix=VERIFY
// RUN: not %napkin-opt %s --pass-pipeline='builtin.module(napkin-nosuch)' 2>&1 | filecheck %s --check-prefix=UNKNOWN-PASS
// RUN: not %napkin-opt %s --napkin-nosuch 2>&1 | filecheck %s --check-prefix=UNKNOWN-FLAG
// RUN: not %napkin-opt %s --pass-pipeline='builtin.module(func.func(napkin-verify))' 2>&1 | filecheck %s --check-prefix=NESTED
// RUN: not %napkin-opt %s --pass-pipeline='builtin.module(cse' 2>&1 | filecheck %s --check-prefix=UNBALANCED
// RUN: not %napkin-opt %S/Inputs/does-not-exist.mlir 2>&1 | filecheck %s --check-prefix=MISSING

// SYNTAX:       error: {{.*}}Inputs{{[/\\]}}malformed.mlir:6:3: custom op 'napkin_contract' is unknown
// STDIN:        error: <stdin>:6:3: custom op 'napkin_contract' is unknown
// VERIFY:       error: {{.*}}bad-axis.mlir:4:8: 'napkin.contract' op axis 'k' has size 8 in lhs but 9 in rhs
// UNKNOWN-PASS: error: invalid pass pipeline element 'napkin-nosuch': unknown pass 'napkin-nosuch'
// UNKNOWN-FLAG: error: unrecognized arguments: --napkin-nosuch
// NESTED:       error: napkin pass 'napkin-verify' cannot be nested in 'func.func(...)'
// UNBALANCED:   error: invalid pass pipeline 'builtin.module(cse': missing ')'
// MISSING:      error: cannot read '{{.*}}does-not-exist.mlir': No such file or directory
func.func @f() {
  return
}
