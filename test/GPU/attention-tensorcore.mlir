// The derived attention kernel for sm_80 and sm_90a (bf16, causal, remainders on q and x):
// its PTX uses the tensor cores (mma.sync m16n8k16), ldmatrix.x4 only (plain for Q and K,
// transposed for V; K and V fragments come in pairs of n8 tiles), 16-byte cp.async copies
// (L1-bypassing, committed in groups and waited on with one group in flight: double
// buffering), quad shuffles for the row max and sum, ex2 of one fma per score
// (s·scale − m·scale; 0x3E38AA3B = log2(e)/sqrt(64)), and O staged through shared memory for
// 16-byte stores.
// RUN: %napkin compile attention --dims b=2,h=4,q=200,x=333,d=64 --dtype bf16 --causal --tile q=64,x=32 --target sm_80 --emit ptx -o %t.sm80.ptx
// RUN: %FileCheck %s --input-file=%t.sm80.ptx --check-prefixes=CHECK,SM80 --implicit-check-not=st.global.b16 --implicit-check-not=st.global.b32 --implicit-check-not=m8n8.x2
// RUN: %napkin compile attention --dims b=2,h=4,q=200,x=333,d=64 --dtype bf16 --causal --tile q=64,x=32 --target sm_90a --emit ptx -o %t.sm90.ptx
// RUN: %FileCheck %s --input-file=%t.sm90.ptx --check-prefixes=CHECK,SM90

// SM80:      .target sm_80
// SM90:      .target sm_90a
// CHECK:     .visible .entry attention_tc(
// CHECK:     cp.async.cg.shared.global [{{.*}}], [{{.*}}], 16, {{.*}};
// CHECK:     cp.async.commit_group;
// CHECK:     cp.async.wait_group 1;
// CHECK:     bar.sync 0;
// CHECK:     ldmatrix.sync.aligned.m8n8.x4.shared.b16
// CHECK:     ldmatrix.sync.aligned.m8n8.x4.shared.b16
// CHECK:     mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// CHECK:     shfl.sync.bfly.b32
// CHECK:     ex2.approx
// CHECK:     fma.rn.f32 {{.*}}, {{.*}}, 0f3E38AA3B, {{.*}};
// CHECK-NEXT: fma.rn.f32
// CHECK-NEXT: ex2.approx
// CHECK:     ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16
// CHECK:     mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32
// CHECK:     st.shared.b32
// CHECK:     bar.sync 0;
// CHECK:     ld.shared.v4.b32
// CHECK:     st.global.v4.b32
