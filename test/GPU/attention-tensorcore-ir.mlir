// The tensor-core kernel at the gpu stage (what `napkin emulate` runs), causal, 8 warps and
// 16-key chunks of a 64-wide head: 128 copies of 16 bytes per K or V chunk for 256 threads,
// so each chunk is one partial round whose copies sit in an scf.if (idle threads issue none)
// and the commit groups take no tokens; a causal CTA's K/V loads stop at its diagonal chunk
// (the loop bound and the end of the keys it loads come from the same row tile); K and V
// fragments come two n8 tiles per ldmatrix.x4, split with vector.extract_strided_slice.
// RUN: %napkin compile attention --dims b=1,h=2,q=300,x=40,d=64 --dtype bf16 --causal --tile q=128,x=16 --target sm_80 --emit gpu -o %t.mlir
// RUN: %FileCheck %s --input-file=%t.mlir --implicit-check-not="numTiles = 2"

// CHECK-LABEL: gpu.func @attention_tc(
// CHECK-NEXT:    kernel attributes {known_block_size = array<i32: 256, 1, 1>
// CHECK:         %[[BX:.*]] = gpu.block_id x
// CHECK:         %[[Q0:.*]] = arith.muli %[[BX]], %c128 : index
// CHECK:         %[[LASTROW:.*]] = arith.addi %[[Q0]], %c143 : index
// CHECK:         %[[LAST:.*]] = arith.divui %[[LASTROW]], %c16 : index
// CHECK:         %[[CHUNKS:.*]] = arith.minui %[[LAST]], %c3 : index
// CHECK:         %[[KEYS:.*]] = arith.muli %[[CHUNKS]], %c16 : index
// CHECK:         %[[KVEND:.*]] = arith.minui %[[KEYS]], %c40 : index
// CHECK:         %[[QGRP:.*]] = nvgpu.device_async_create_group %{{.*}}, %{{.*}}, %{{.*}}, %{{.*}}{{$}}
// CHECK:         arith.cmpi ult, %{{.*}}, %[[KVEND]] : index
// CHECK:         %[[INB:.*]] = arith.cmpi ult, %{{.*}}, %c128 : index
// CHECK-NEXT:    scf.if %[[INB]] {
// CHECK:           nvgpu.device_async_copy %K
// CHECK-NEXT:    {{^ *[}]$}}
// CHECK:         scf.if
// CHECK:           nvgpu.device_async_copy %V
// CHECK:         %[[FIRST:.*]] = nvgpu.device_async_create_group{{ *$}}
// CHECK-NEXT:    nvgpu.device_async_wait %[[FIRST]] {numGroups = 1 : i32}
// CHECK:         scf.for %[[J:.*]] = %c0 to %[[CHUNKS]] step %c1
// CHECK:           %[[KF:.*]] = nvgpu.ldmatrix %ks[{{.*}}] {numTiles = 4 : i32, transpose = false}
// CHECK-NEXT:      vector.extract_strided_slice %[[KF]] {offsets = [0, 0], sizes = [2, 2], strides = [1, 1]}
// CHECK-NEXT:      vector.extract_strided_slice %[[KF]] {offsets = [2, 0], sizes = [2, 2], strides = [1, 1]}
// CHECK:           nvvm.mma.sync
// CHECK:           %[[VF:.*]] = nvgpu.ldmatrix %vs[{{.*}}] {numTiles = 4 : i32, transpose = true}
// CHECK-NEXT:      vector.extract_strided_slice %[[VF]] {offsets = [0, 0]
// CHECK-NEXT:      vector.extract_strided_slice %[[VF]] {offsets = [2, 0]
// CHECK:           gpu.barrier
// CHECK-NEXT:      scf.yield
