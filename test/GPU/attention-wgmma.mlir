// The Hopper attention kernel (issue 13) for sm_90a, bf16, causal, remainders on q and x: the
// chunks a CTA visits found once by a scan of the causal mask's predicate (interval reasoning
// over the CTA's rows and each chunk's keys); per visited 64-key chunk, the next chunk's K and V
// copied swizzled with cp.async into the other stage, this chunk's waited for (wait_group 1) and
// published to the async proxy, S = Q Kᵀ by four wgmma m64n64k16 (B K-major: trans 0; the
// first with scale-d 0) waited for, the online softmax (quad shuffles, ex2), P stored and
// published, O += P V by four wgmma m64n64k16 (B MN-major: trans 1) waited for, a barrier;
// O / l stored as pairs of bf16.
// RUN: %napkin compile attention --dims b=1,h=2,q=100,x=150,d=64 --dtype bf16 --causal --kernel wgmma --target sm_90a --emit ptx -o %t.ptx
// RUN: %FileCheck %s --input-file=%t.ptx

// CHECK:     .target sm_90a
// CHECK:     .visible .entry attention_wgmma(
// CHECK:     .minnctapersm 1
// CHECK:     cp.async.cg.shared.global [{{.*}}], [{{.*}}], 16, {{.*}};
// CHECK:     cp.async.commit_group;
// CHECK:     cp.async.cg.shared.global [{{.*}}], [{{.*}}], 16, {{.*}};
// CHECK:     cp.async.commit_group;
// CHECK-NEXT: cp.async.wait_group 1;
// CHECK-NEXT: fence.proxy.async.shared::cta;
// CHECK-NEXT: bar.sync 0;
// CHECK:     wgmma.fence.sync.aligned;
// CHECK:     setp.ne.b32 p, 0, 0;
// CHECK-NEXT: wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {{.*}}, p, 1, 1, 0, 0;
// CHECK-COUNT-3: wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {{.*}}, p, 1, 1, 0, 0;
// CHECK:     wgmma.commit_group.sync.aligned;
// CHECK-NEXT: wgmma.wait_group.sync.aligned 0;
// CHECK:     shfl.sync.bfly.b32
// CHECK:     ex2.approx
// CHECK:     st.shared.b32
// CHECK:     fence.proxy.async.shared::cta;
// CHECK-NEXT: bar.sync 0;
// CHECK-NEXT: wgmma.fence.sync.aligned;
// CHECK-COUNT-4: wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {{.*}}, p, 1, 1, 0, 1;
// CHECK:     wgmma.commit_group.sync.aligned;
// CHECK-NEXT: wgmma.wait_group.sync.aligned 0;
// CHECK-NEXT: bar.sync 0;
// CHECK:     st.global.b32
