// The tensor-core kernel at the gpu stage (what `napkin emulate` runs), causal, 8 warps and
// 16-key chunks of a 64-wide head: 128 copies of 16 bytes per K or V chunk for 256 threads,
// so each chunk is one partial round whose copies sit in an scf.if (idle threads issue none)
// and the commit groups take no tokens; a causal CTA visits only the chunks where the mask's
// predicate j <= i may hold over its rows (a scan over the chunks bounds it by interval
// reasoning: chunk c may hold a kept key when its first key 16c <= the CTA's last row), and its
// loop (counted from 0, at most every chunk) and the end of the keys it loads come from that scan; K and V
// fragments come two n8 tiles per ldmatrix.x4, split with vector.extract_strided_slice. The
// checks bind every name (arguments, constants, views, results) to a FileCheck variable: the
// kernel is built with the bindings' builders, and the printer chooses the SSA names.
// RUN: %napkin compile attention --dims b=1,h=2,q=300,x=40,d=64 --dtype bf16 --causal --tile q=128,x=16 --target sm_80 --emit gpu -o %t.mlir
// RUN: %FileCheck %s --input-file=%t.mlir --implicit-check-not="numTiles = 2"

// CHECK-LABEL: gpu.func @attention_tc(
// CHECK-SAME:    %[[Q:[^:]+]]: memref<1x2x1x300x64xbf16>, %[[K:[^:]+]]: memref<1x2x40x64xbf16>, %[[V:[^:]+]]: memref<1x2x40x64xbf16>, %[[O:[^:]+]]: memref<1x2x1x300x64xbf16>)
// CHECK:         kernel attributes {known_block_size = array<i32: 256, 1, 1>
// CHECK-DAG:     %[[C0:[^ ]+]] = arith.constant 0 : index
// CHECK-DAG:     %[[C1:[^ ]+]] = arith.constant 1 : index
// CHECK-DAG:     %[[C3:[^ ]+]] = arith.constant 3 : index
// CHECK-DAG:     %[[C16:[^ ]+]] = arith.constant 16 : index
// CHECK-DAG:     %[[C40:[^ ]+]] = arith.constant 40 : index
// CHECK-DAG:     %[[C127:[^ ]+]] = arith.constant 127 : index
// CHECK-DAG:     %[[C128:[^ ]+]] = arith.constant 128 : index
// CHECK-DAG:     %[[KOFF:[^ ]+]] = arith.constant 18432 : index
// CHECK-DAG:     %[[VOFF:[^ ]+]] = arith.constant 23040 : index
// CHECK:         %[[SMEM:[^ ]+]] = gpu.dynamic_shared_memory : memref<?xi8, #gpu.address_space<workgroup>>
// CHECK-NEXT:    %[[QS:[^ ]+]] = memref.view %[[SMEM]][%[[C0]]][] : {{.*}} to memref<128x72xbf16, #gpu.address_space<workgroup>>
// CHECK-NEXT:    %[[KS:[^ ]+]] = memref.view %[[SMEM]][%[[KOFF]]][] : {{.*}} to memref<2x16x72xbf16, #gpu.address_space<workgroup>>
// CHECK-NEXT:    %[[VS:[^ ]+]] = memref.view %[[SMEM]][%[[VOFF]]][] : {{.*}} to memref<2x16x72xbf16, #gpu.address_space<workgroup>>
// CHECK:         %[[BX:[^ ]+]] = gpu.block_id x
// CHECK:         %[[Q0:[^ ]+]] = arith.muli %[[BX]], %[[C128]] : index
// CHECK-NEXT:    %[[LASTROW:[^ ]+]] = arith.addi %[[Q0]], %[[C127]] : index
// CHECK-NEXT:    %[[EXT:[^ :]+]]:2 = scf.for %[[C:[^ ]+]] = %[[C0]] to %[[C3]] step %[[C1]] iter_args(%[[LO:[^ ]+]] = %[[C3]], %[[HI:[^ ]+]] = %[[C0]]) -> (index, index) {
// CHECK:           %[[FIRSTKEY:[^ ]+]] = arith.muli %[[C]], %[[C16]] : index
// CHECK:           %[[MAY:[^ ]+]] = arith.cmpi sle, %[[FIRSTKEY]], %[[LASTROW]] : index
// CHECK:           %[[MIN:[^ ]+]] = arith.minsi %[[LO]], %[[C]] : index
// CHECK:           arith.select %[[MAY]], %[[MIN]], %[[LO]] : index
// CHECK:           %[[NEXT:[^ ]+]] = arith.addi %[[C]], %[[C1]] : index
// CHECK:           arith.select %[[MAY]], %[[NEXT]], %[[HI]] : index
// CHECK:         %[[LOWER:[^ ]+]] = arith.minsi %[[EXT]]#0, %[[EXT]]#1 : index
// CHECK-NEXT:    %[[COUNT:[^ ]+]] = arith.subi %[[EXT]]#1, %[[LOWER]] : index
// CHECK-NEXT:    %[[VISITS:[^ ]+]] = arith.minsi %[[COUNT]], %[[C3]] : index
// CHECK:         %[[KEYS:[^ ]+]] = arith.muli %[[EXT]]#1, %[[C16]] : index
// CHECK:         %[[KVEND:[^ ]+]] = arith.minui %[[KEYS]], %[[C40]] : index
// CHECK:         nvgpu.device_async_copy %[[Q]][{{.*}}], %[[QS]][
// CHECK:         %[[QGRP:[^ ]+]] = nvgpu.device_async_create_group %{{[^ ,]+}}, %{{[^ ,]+}}, %{{[^ ,]+}}, %{{[^ ,]+}}{{$}}
// CHECK:         arith.cmpi ult, %{{[^ ,]+}}, %[[KVEND]] : index
// CHECK:         %[[INB:[^ ]+]] = arith.cmpi ult, %{{[^ ,]+}}, %[[C128]] : index
// CHECK-NEXT:    scf.if %[[INB]] {
// CHECK:           nvgpu.device_async_copy %[[K]][{{.*}}], %[[KS]][
// CHECK-NEXT:    {{^ *[}]$}}
// CHECK:         scf.if
// CHECK:           nvgpu.device_async_copy %[[V]][{{.*}}], %[[VS]][
// CHECK:         %[[FIRST:[^ ]+]] = nvgpu.device_async_create_group{{ *$}}
// CHECK-NEXT:    nvgpu.device_async_wait %[[FIRST]] {numGroups = 1 : i32}
// CHECK:         scf.for %[[T:[^ ]+]] = %[[C0]] to %[[VISITS]] step %[[C1]]
// CHECK:           %[[KF:[^ ]+]] = nvgpu.ldmatrix %[[KS]][{{.*}}] {numTiles = 4 : i32, transpose = false}
// CHECK-NEXT:      vector.extract_strided_slice %[[KF]] {offsets = [0, 0], sizes = [2, 2], strides = [1, 1]}
// CHECK-NEXT:      vector.extract_strided_slice %[[KF]] {offsets = [2, 0], sizes = [2, 2], strides = [1, 1]}
// CHECK:           nvvm.mma.sync
// CHECK:           %[[VF:[^ ]+]] = nvgpu.ldmatrix %[[VS]][{{.*}}] {numTiles = 4 : i32, transpose = true}
// CHECK-NEXT:      vector.extract_strided_slice %[[VF]] {offsets = [0, 0]
// CHECK-NEXT:      vector.extract_strided_slice %[[VF]] {offsets = [2, 0]
// CHECK:           gpu.barrier
// CHECK-NEXT:      scf.yield
