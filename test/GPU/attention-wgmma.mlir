// The Hopper attention kernel (issue 13) for sm_90a, bf16, causal, remainders on q and x, warp
// specialized: 384 threads, a producer warpgroup and two consumer warpgroups of 64 query rows.
// Seven mbarriers (Q; K and V of two stages; each stage's release) initialised by thread 0 and
// published (fence.mbarrier_init, barrier). The consumers take 240 registers (setmaxnreg.inc),
// wait for Q; chunk 0: K's barrier, S = Q Kᵀ by four wgmma m64n64k16 (B K-major: trans 0; the
// first with scale-d 0) waited for, the online softmax (quad shuffles, ex2), P stored and
// published to their own wgmma (proxy fence, the warpgroup's named barrier, 128 threads). Each
// later chunk t: S of chunk t and O += P V of chunk t - 1 (four wgmma m64n64k16, B MN-major:
// trans 1, after V's barrier) issued as two groups, `wgmma.wait_group 1` (S done, P V still
// running), the softmax of chunk t overlapping P V, `wait_group 0`, the stage of chunk t - 1
// released (one arrival per warpgroup); the last chunk's P V after the loop; O / l stored as
// pairs of bf16. The producer gives registers back (setmaxnreg.dec 24) and its thread 0
// announces the bytes (arrive.expect_tx) and brings Q, then per chunk waits for the stage's
// release and brings K and V by TMA in 128-byte-swizzled boxes of 64 x 64.
// RUN: %napkin compile attention --dims b=1,h=2,q=200,x=150,d=64 --dtype bf16 --causal --kernel wgmma --target sm_90a --emit ptx -o %t.ptx
// RUN: %FileCheck %s --input-file=%t.ptx

// CHECK:     .target sm_90a
// CHECK:     .visible .entry attention_wgmma(
// CHECK:     .maxntid 384, 1, 1
// CHECK-NEXT: .minnctapersm 1
// CHECK:     .shared .align 8 .b8 __mbarrier[56];
// CHECK-COUNT-7: mbarrier.init.shared.b64
// CHECK:     fence.mbarrier_init.release.cluster;
// CHECK-NEXT: bar.sync 0;
// CHECK:     setmaxnreg.inc.sync.aligned.u32 240;
// CHECK:     mbarrier.try_wait.parity.shared.b64 P1, [{{%r[0-9]+}}], 0,
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
// CHECK-NEXT: bar.sync {{%r[0-9]+}}, 128;
// CHECK:     mbarrier.try_wait.parity.shared.b64 P1, [{{%r[0-9]+}}], [[PARITY:%r[0-9]+]],
// CHECK:     wgmma.fence.sync.aligned;
// CHECK-COUNT-4: wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {{.*}}, p, 1, 1, 0, 0;
// CHECK:     wgmma.commit_group.sync.aligned;
// CHECK:     mbarrier.try_wait.parity.shared.b64
// CHECK:     wgmma.fence.sync.aligned;
// CHECK-COUNT-4: wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {{.*}}, p, 1, 1, 0, 1;
// CHECK:     wgmma.commit_group.sync.aligned;
// CHECK-NEXT: wgmma.wait_group.sync.aligned 1;
// CHECK:     ex2.approx
// CHECK:     wgmma.wait_group.sync.aligned 0;
// CHECK:     mbarrier.arrive.shared.b64
// CHECK:     mbarrier.try_wait.parity.shared.b64
// CHECK:     wgmma.fence.sync.aligned;
// CHECK-COUNT-4: wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {{.*}}, p, 1, 1, 0, 1;
// CHECK:     wgmma.commit_group.sync.aligned;
// CHECK-NEXT: wgmma.wait_group.sync.aligned 0;
// CHECK:     mbarrier.arrive.shared.b64
// CHECK:     st.global.b32
// CHECK:     setmaxnreg.dec.sync.aligned.u32 24;
// CHECK:     mbarrier.arrive.expect_tx.shared.b64 {{.*}}, [__mbarrier],
// CHECK:     cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [{{.*}}], [{{.*}}], [__mbarrier];
// CHECK:     mbarrier.arrive.expect_tx.shared.b64 {{.*}}, [__mbarrier],
// CHECK:     cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [{{.*}}], [{{.*}}], [__mbarrier];
// CHECK:     mbarrier.try_wait.parity.shared.b64
// CHECK:     mbarrier.arrive.expect_tx.shared.b64
// CHECK:     cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes
// CHECK:     mbarrier.arrive.expect_tx.shared.b64
// CHECK:     cp.async.bulk.tensor.4d.shared::cluster.global.tile.mbarrier::complete_tx::bytes
