// napkin-lower-to-loops: a partitioned diagram becomes a loop program on memref buffers:
// napkin.group -> scf.forall mapped to GPU blocks, napkin.stream -> scf.for over chunks,
// tiles -> memref.subview, smem/reg buffers -> workgroup/private memory spaces.
// RUN: %napkin-opt %s --split-input-file --napkin-lower-to-loops | filecheck %s

// A plain matmul: results become output parameters; one fill and one reduction generic,
// its loops ordered (m, k, n) so the innermost loop walks the contiguous n axis.

// CHECK-LABEL: func.func @plain
// CHECK-SAME:    (%[[A:.*]]: memref<8x16xf32>, %[[B:.*]]: memref<16x6xf32>, %[[C:.*]]: memref<8x6xf32>)
// CHECK-SAME:    llvm.emit_c_interface
// CHECK:         linalg.fill ins(%{{.*}} : f32) outs(%[[C]] : memref<8x6xf32>)
// CHECK:         linalg.generic {{.*}}iterator_types = ["parallel", "reduction", "parallel"]{{.*}} ins(%[[A]], %[[B]] : memref<8x16xf32>, memref<16x6xf32>) outs(%[[C]] : memref<8x6xf32>)
// CHECK:         return
func.func @plain(%A: tensor<8x16xf32, {axes = ["m", "k"]}>, %B: tensor<16x6xf32, {axes = ["k", "n"]}>) -> tensor<8x6xf32, {axes = ["m", "n"]}> {
  %0 = "napkin.contract"(%A, %B) : (tensor<8x16xf32, {axes = ["m", "k"]}>, tensor<16x6xf32, {axes = ["k", "n"]}>) -> tensor<8x6xf32, {axes = ["m", "n"]}>
  return %0 : tensor<8x6xf32, {axes = ["m", "n"]}>
}

// -----

// Matmul after napkin-assign-levels, napkin-group-partition{axes=m,n sizes=4,2} and
// napkin-stream-partition{axis=k size=8}: a 2x3 grid of blocks, each with a k loop that
// copies the chunk tiles to workgroup memory and accumulates in private memory.

// CHECK-LABEL: func.func @tiled
// CHECK-SAME:    (%[[A:.*]]: memref<8x16xf32>, %[[B:.*]]: memref<16x6xf32>, %[[C:.*]]: memref<8x6xf32>)
// CHECK:         scf.forall (%[[I:.*]], %[[J:.*]]) in (2, 3) {
// CHECK:           %[[AT:.*]] = memref.subview %[[A]][%{{.*}}, 0] [4, 16] [1, 1]
// CHECK:           %[[BT:.*]] = memref.subview %[[B]][0, %{{.*}}] [16, 2] [1, 1]
// CHECK:           %[[CT:.*]] = memref.subview %[[C]][%{{.*}}, %{{.*}}] [4, 2] [1, 1]
// CHECK:           %[[RES:.*]] = memref.alloc() : memref<4x2xf32, #gpu.address_space<private>>
// CHECK:           %[[ACC:.*]] = memref.alloc() : memref<4x2xf32, #gpu.address_space<private>>
// CHECK-NEXT:      %{{.*}} = arith.constant
// CHECK-NEXT:      linalg.fill ins(%{{.*}} : f32) outs(%[[ACC]] : memref<4x2xf32, #gpu.address_space<private>>)
// CHECK:           scf.for %[[K:.*]] = %{{.*}} to %{{.*}} step %{{.*}} {
// CHECK:             memref.subview %[[AT]][0, %[[K]]] [4, 8] [1, 1]
// CHECK:             memref.subview %[[BT]][%[[K]], 0] [8, 2] [1, 1]
// CHECK:             memref.alloc() : memref<4x8xf32, #gpu.address_space<workgroup>>
// CHECK:             memref.alloc() : memref<8x2xf32, #gpu.address_space<workgroup>>
// CHECK:             linalg.generic {{.*}}"reduction"{{.*}}outs(%{{.*}} : memref<4x2xf32, #gpu.address_space<private>>)
// CHECK:           }
// CHECK:           linalg.generic {{.*}}outs(%[[CT]] : memref<4x2xf32, strided<[6, 1], offset: ?>>)
// CHECK:         } {mapping = [#gpu.block<y>, #gpu.block<x>]}
func.func @tiled(%arg0: tensor<8x16xf32, {axes = ["m", "k"], level = "gmem"}>, %arg1: tensor<16x6xf32, {axes = ["k", "n"], level = "gmem"}>) -> tensor<8x6xf32, {axes = ["m", "n"], level = "gmem"}> {
  %0 = "napkin.group"(%arg0, %arg1) ({
  ^bb0(%arg2: tensor<4x16xf32, {axes = ["m", "k"], level = "gmem"}>, %arg3: tensor<16x2xf32, {axes = ["k", "n"], level = "gmem"}>, %arg4: index, %arg5: index):
    %1 = "napkin.stream"(%arg2, %arg3) ({
      %3 = "napkin.fill"() {value = 0.000000e+00 : f64} : () -> tensor<4x2xf32, {axes = ["m", "n"], level = "reg"}>
      gpu.yield %3 : tensor<4x2xf32, {axes = ["m", "n"], level = "reg"}>
    }, {
    ^bb0(%arg6: tensor<4x8xf32, {axes = ["m", "k"], level = "gmem"}>, %arg7: tensor<8x2xf32, {axes = ["k", "n"], level = "gmem"}>, %arg8: index, %arg9: tensor<4x2xf32, {axes = ["m", "n"], level = "reg"}>):
      %3 = "napkin.transfer"(%arg6) : (tensor<4x8xf32, {axes = ["m", "k"], level = "gmem"}>) -> tensor<4x8xf32, {axes = ["m", "k"], level = "smem"}>
      %4 = "napkin.transfer"(%arg7) : (tensor<8x2xf32, {axes = ["k", "n"], level = "gmem"}>) -> tensor<8x2xf32, {axes = ["k", "n"], level = "smem"}>
      %5 = "napkin.contract"(%3, %4) : (tensor<4x8xf32, {axes = ["m", "k"], level = "smem"}>, tensor<8x2xf32, {axes = ["k", "n"], level = "smem"}>) -> tensor<4x2xf32, {axes = ["m", "n"], level = "reg"}>
      %6 = "napkin.add"(%arg9, %5) : (tensor<4x2xf32, {axes = ["m", "n"], level = "reg"}>, tensor<4x2xf32, {axes = ["m", "n"], level = "reg"}>) -> tensor<4x2xf32, {axes = ["m", "n"], level = "reg"}>
      gpu.yield %6 : tensor<4x2xf32, {axes = ["m", "n"], level = "reg"}>
    }, {
    ^bb0(%arg6: tensor<4x2xf32, {axes = ["m", "n"], level = "reg"}>):
      gpu.yield %arg6 : tensor<4x2xf32, {axes = ["m", "n"], level = "reg"}>
    }) {axis = "k", operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, size = 8 : i64} : (tensor<4x16xf32, {axes = ["m", "k"], level = "gmem"}>, tensor<16x2xf32, {axes = ["k", "n"], level = "gmem"}>) -> tensor<4x2xf32, {axes = ["m", "n"], level = "reg"}>
    %2 = "napkin.transfer"(%1) : (tensor<4x2xf32, {axes = ["m", "n"], level = "reg"}>) -> tensor<4x2xf32, {axes = ["m", "n"], level = "gmem"}>
    gpu.yield %2 : tensor<4x2xf32, {axes = ["m", "n"], level = "gmem"}>
  }) {axes = ["m", "n"], level = "grid", operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, sizes = array<i64: 4, 2>} : (tensor<8x16xf32, {axes = ["m", "k"], level = "gmem"}>, tensor<16x6xf32, {axes = ["k", "n"], level = "gmem"}>) -> tensor<8x6xf32, {axes = ["m", "n"], level = "gmem"}>
  return %0 : tensor<8x6xf32, {axes = ["m", "n"], level = "gmem"}>
}
