// The input comes from stdin when no file or `-` is given; errors then name <stdin>. Printing
// is stable: napkin-opt's output read back gives the same text.
// RUN: %napkin-opt < %s | filecheck %s
// RUN: %napkin-opt - < %s | %napkin-opt | filecheck %s
// RUN: %napkin-opt %s -o %t.1 && %napkin-opt < %t.1 > %t.2 && diff %t.1 %t.2

// CHECK-LABEL: func.func @f
// CHECK:         "napkin.softmax"(%{{.*}}) {axis = "k"}
func.func @f(%a: tensor<4x8xf32, {axes = ["m", "k"]}>) -> tensor<4x8xf32, {axes = ["m", "k"]}> {
  %0 = "napkin.softmax"(%a) {axis = "k"} : (tensor<4x8xf32, {axes = ["m", "k"]}>) -> tensor<4x8xf32, {axes = ["m", "k"]}>
  return %0 : tensor<4x8xf32, {axes = ["m", "k"]}>
}
