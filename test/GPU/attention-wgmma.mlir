// The Hopper attention kernel (issue 13) for sm_90a, bf16, causal, remainders on q and x: the
// chunks a CTA visits found once by a scan of the causal mask's predicate (interval reasoning
// over the CTA's rows and each chunk's keys); five mbarriers (Q, and K and V of two stages)
// initialised by thread 0 and published (fence.mbarrier_init, barrier); thread 0 announces the
// bytes of each tile (arrive.expect_tx) and brings it by TMA in 128-byte-swizzled boxes of
// 64 x 64 (Q, then K and V of the first two chunks); every thread waits for Q; per visited
// 64-key chunk: K's barrier waited for at the stage's parity, S = Q Kᵀ by four wgmma
// m64n64k16 (B K-major: trans 0; the first with scale-d 0) waited for, the online softmax
// (quad shuffles, ex2), P stored and published, V's barrier waited for, O += P V by four
// wgmma m64n64k16 (B MN-major: trans 1) waited for, a barrier, the stage refilled with the
// chunk two ahead; O / l stored as pairs of bf16.
// RUN: %napkin compile attention --dims b=1,h=2,q=100,x=150,d=64 --dtype bf16 --causal --kernel wgmma --target sm_90a --emit ptx -o %t.ptx
// RUN: %FileCheck %s --input-file=%t.ptx

// CHECK:     .target sm_90a
// CHECK:     .visible .entry attention_wgmma(
// CHECK:     .minnctapersm 1
// CHECK:     .shared .align 8 .b8 __mbarrier[40];
// CHECK-COUNT-5: mbarrier.init.shared.b64
// CHECK:     fence.mbarrier_init.release.cluster;
// CHECK-NEXT: bar.sync 0;
// CHECK:     mbarrier.arrive.expect_tx.shared.b64 _, [[[Q:%r[0-9]+]]], {{%r[0-9]+}};
// CHECK:     cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [{{.*}}], [{{.*}}], [[[Q]]];
// CHECK:     mbarrier.arrive.expect_tx.shared.b64
// CHECK:     cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes
// CHECK:     mbarrier.try_wait.parity.shared.b64 P1, [[[Q]]], 0,
// CHECK:     mbarrier.try_wait.parity.shared.b64 P1, [{{%r[0-9]+}}], [[PARITY:%r[0-9]+]],
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
// CHECK:     mbarrier.try_wait.parity.shared.b64 P1, [{{%r[0-9]+}}], [[PARITY]],
// CHECK:     wgmma.fence.sync.aligned;
// CHECK-COUNT-4: wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {{.*}}, p, 1, 1, 0, 1;
// CHECK:     wgmma.commit_group.sync.aligned;
// CHECK-NEXT: wgmma.wait_group.sync.aligned 0;
// CHECK-NEXT: bar.sync 0;
// CHECK:     mbarrier.arrive.expect_tx.shared.b64
// CHECK:     cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes
// CHECK:     st.global.b32
