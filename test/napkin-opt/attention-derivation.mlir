// The attention derivation, step by step (--mlir-print-ir-after-all): levels and transfers,
// the grid of query tiles, then the key/value axis streamed with the online softmax.
// RUN: %napkin-opt %s --pass-pipeline='builtin.module(napkin-assign-levels,napkin-group-partition{axes=b,h,q sizes=1,1,32 level=grid},napkin-stream-partition{axis=x size=16})' --mlir-print-ir-after-all -o %t 2>&1 | filecheck %s

// CHECK-LABEL: IR Dump After napkin-assign-levels
// CHECK:         "napkin.transfer"(%arg0) {{.*}} level = "smem"
// CHECK:         "napkin.softmax"({{.*}}) {axis = "x"} {{.*}} level = "reg"
// CHECK:         "napkin.transfer"({{.*}} -> tensor<1x2x64x16xf32, {axes = ["b", "h", "q", "d"], level = "gmem"}>

// CHECK-LABEL: IR Dump After napkin-group-partition
// CHECK:         "napkin.group"
// CHECK-NEXT:    ^bb0(%[[QT:.*]]: tensor<1x1x32x16xf32, {{.*}}, %[[B0:.*]]: index, %[[H0:.*]]: index, %[[Q0:.*]]: index):
// CHECK:         "napkin.mask"(%{{.*}}, %[[Q0]], %{{.*}})
// CHECK:         {axes = ["b", "h", "q"], level = "grid"

// CHECK-LABEL: IR Dump After napkin-stream-partition
// CHECK:         "napkin.stream"
// CHECK:         "napkin.fill"() {value = 0xFFF0000000000000 : f64}
// CHECK:         ^bb0(%[[KC:.*]]: tensor<1x1x16x16xf32, {{.*}}, %[[X0:.*]]: index, %[[M:.*]]: tensor<1x1x32xf32
// CHECK:         "napkin.reduce"({{.*}}) {axis = "x", kind = "max"}
// CHECK:         "napkin.exp"
// CHECK:         "napkin.div"
// CHECK:         {axis = "x", {{.*}}size = 16 : i64}
module {
  func.func @attention(%arg0: tensor<1x2x64x16xf32, {axes = ["b", "h", "q", "d"]}>, %arg1: tensor<1x2x64x16xf32, {axes = ["b", "h", "x", "d"]}>, %arg2: tensor<1x2x64x16xf32, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x64x16xf32, {axes = ["b", "h", "q", "d"]}> attributes {arg_names = ["Q", "K", "V"]} {
    %0 = "napkin.contract"(%arg0, %arg1) : (tensor<1x2x64x16xf32, {axes = ["b", "h", "q", "d"]}>, tensor<1x2x64x16xf32, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x64x64xf32, {axes = ["b", "h", "q", "x"]}>
    %1 = "napkin.scale"(%0) {factor = 2.500000e-01 : f64} : (tensor<1x2x64x64xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x64x64xf32, {axes = ["b", "h", "q", "x"]}>
    %2 = "napkin.mask"(%1) ({
    ^bb0(%mi1: index, %mj1: index, %mr1: index, %mc1: index):
      %mk1 = arith.cmpi sle, %mj1, %mi1 : index
      gpu.yield %mk1 : i1
    }) {rows = "q", cols = "x", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>} : (tensor<1x2x64x64xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x64x64xf32, {axes = ["b", "h", "q", "x"]}>
    %3 = "napkin.softmax"(%2) {axis = "x"} : (tensor<1x2x64x64xf32, {axes = ["b", "h", "q", "x"]}>) -> tensor<1x2x64x64xf32, {axes = ["b", "h", "q", "x"]}>
    %4 = "napkin.contract"(%3, %arg2) : (tensor<1x2x64x64xf32, {axes = ["b", "h", "q", "x"]}>, tensor<1x2x64x16xf32, {axes = ["b", "h", "x", "d"]}>) -> tensor<1x2x64x16xf32, {axes = ["b", "h", "q", "d"]}>
    return %4 : tensor<1x2x64x16xf32, {axes = ["b", "h", "q", "d"]}>
  }
}
