// napkin-erase-memory-spaces: memref memory spaces are dropped (for the CPU backend) on
// results, block arguments and function types; layouts are kept.
// RUN: %napkin-opt %s --split-input-file --napkin-erase-memory-spaces | filecheck %s

// CHECK-LABEL: func.func @spaces
// CHECK-SAME:    (%[[A:.*]]: memref<4x8xf32>) -> memref<4x8xf32>
// CHECK:         %[[W:.*]] = memref.alloc() : memref<4x8xf32>
// CHECK:         %[[P:.*]] = memref.alloc() : memref<4xf32>
// CHECK:         %[[SV:.*]] = memref.subview %[[A]][0, 2] [4, 4] [1, 1] : memref<4x8xf32> to memref<4x4xf32, strided<[8, 1], offset: 2>>
// CHECK:         memref.dealloc %[[P]] : memref<4xf32>
// CHECK-NOT:     address_space
// CHECK:         return %[[W]] : memref<4x8xf32>
func.func @spaces(%a: memref<4x8xf32, #gpu.address_space<workgroup>>) -> memref<4x8xf32, #gpu.address_space<workgroup>> {
  %w = memref.alloc() : memref<4x8xf32, #gpu.address_space<workgroup>>
  %p = memref.alloc() : memref<4xf32, #gpu.address_space<private>>
  %s = memref.subview %a[0, 2] [4, 4] [1, 1] : memref<4x8xf32, #gpu.address_space<workgroup>> to memref<4x4xf32, strided<[8, 1], offset: 2>, #gpu.address_space<workgroup>>
  memref.dealloc %p : memref<4xf32, #gpu.address_space<private>>
  return %w : memref<4x8xf32, #gpu.address_space<workgroup>>
}
