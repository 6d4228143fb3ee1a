// The Hopper wgmma matmul kernel (issue 13) for sm_90a, bf16 in, f32 accumulate, bf16 out:
// per 64-element k chunk, 16-byte global loads stored swizzled into shared memory, the
// generic-proxy stores fenced for the async proxy, a barrier, wgmma.fence, four
// wgmma.mma_async m64n128k16 (A K-major: trans 0; B MN-major: trans 1) from shared-memory
// descriptors (128-byte swizzle, SBO 1024, LBO 16 for A and 8192 for B), commit, wait for all,
// a barrier; the accumulator leaves as pairs of bf16.
// RUN: %napkin compile matmul --dims m=128,n=256,k=320 --dtype bf16 --kernel wgmma --target sm_90a --emit ptx -o %t.ptx
// RUN: %FileCheck %s --input-file=%t.ptx --implicit-check-not=wgmma.wait_group.sync.aligned{{[[:space:]]+}}1

// CHECK:     .target sm_90a
// CHECK:     .visible .entry matmul_wgmma(
// CHECK:     .minnctapersm 1
// CHECK-DAG: or.b64 {{.*}}, 4611686293305360384;
// CHECK-DAG: or.b64 {{.*}}, 4611686293338849280;
// CHECK:     ld.global.v4.b32
// CHECK:     st.shared.v4.b32
// CHECK:     fence.proxy.async.shared::cta;
// CHECK-NEXT: bar.sync 0;
// CHECK-NEXT: wgmma.fence.sync.aligned;
// CHECK-COUNT-4: wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {{.*}}, p, 1, 1, 0, 1;
// CHECK:     wgmma.commit_group.sync.aligned;
// CHECK-NEXT: wgmma.wait_group.sync.aligned 0;
// CHECK-NEXT: bar.sync 0;
// CHECK:     st.global.b32
