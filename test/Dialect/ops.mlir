// Round trip of every op of dialects/napkin.irdl.mlir: napkin-opt prints what it parses, and
// printing is stable (the second napkin-opt sees the first one's output). Upstream mlir-opt
// with the IRDL file parses and prints the same text.
// RUN: %napkin-opt %s --split-input-file | %napkin-opt --split-input-file | filecheck %s
// RUN: %mlir-opt --irdl-file=%irdl %s --split-input-file | filecheck %s
// RUN: %napkin-opt %s --split-input-file -o %t.1 && %napkin-opt %t.1 --split-input-file -o %t.2 && diff %t.1 %t.2

// contract: the output drops the shared axis d (summed over); q and x are woven.

// CHECK-LABEL: func.func @contract
// CHECK-SAME:    (%[[Q:.*]]: tensor<8x4xf32, {axes = ["q", "d"]}>, %[[K:.*]]: tensor<16x4xf32, {axes = ["x", "d"]}>)
// CHECK:         %[[S:.*]] = "napkin.contract"(%[[Q]], %[[K]]) : (tensor<8x4xf32, {axes = ["q", "d"]}>, tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
// CHECK:         return %[[S]]
func.func @contract(%q: tensor<8x4xf32, {axes = ["q", "d"]}>, %k: tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}> {
  %s = "napkin.contract"(%q, %k) : (tensor<8x4xf32, {axes = ["q", "d"]}>, tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  return %s : tensor<8x16xf32, {axes = ["q", "x"]}>
}

// -----

// The elementwise unary functions (exp, tanh, relu, gelu, silu) and scale keep axes and type.

// CHECK-LABEL: func.func @unary
// CHECK-SAME:    (%[[S:.*]]: tensor<8x16xf32, {axes = ["q", "x"]}>)
// CHECK:         %[[E:.*]] = "napkin.exp"(%[[S]]) : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
// CHECK:         %[[T:.*]] = "napkin.tanh"(%[[E]])
// CHECK:         %[[R:.*]] = "napkin.relu"(%[[T]])
// CHECK:         %[[G:.*]] = "napkin.gelu"(%[[R]])
// CHECK:         %[[L:.*]] = "napkin.silu"(%[[G]])
// CHECK:         %[[C:.*]] = "napkin.scale"(%[[L]]) {factor = 1.250000e-01 : f32}
// CHECK:         return %[[C]]
func.func @unary(%s: tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}> {
  %0 = "napkin.exp"(%s) : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %1 = "napkin.tanh"(%0) : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %2 = "napkin.relu"(%1) : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %3 = "napkin.gelu"(%2) : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %4 = "napkin.silu"(%3) : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %5 = "napkin.scale"(%4) {factor = 0.125 : f32} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  return %5 : tensor<8x16xf32, {axes = ["q", "x"]}>
}

// -----

// cast changes only the element type.

// CHECK-LABEL: func.func @cast
// CHECK:         "napkin.cast"(%{{.*}}) : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xbf16, {axes = ["q", "x"]}>
func.func @cast(%s: tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xbf16, {axes = ["q", "x"]}> {
  %0 = "napkin.cast"(%s) : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xbf16, {axes = ["q", "x"]}>
  return %0 : tensor<8x16xbf16, {axes = ["q", "x"]}>
}

// -----

// The binary functions broadcast an operand along the result axes it lacks (the row vector
// over x here).

// CHECK-LABEL: func.func @binary
// CHECK-SAME:    (%[[S:.*]]: tensor<8x16xf32, {axes = ["q", "x"]}>, %[[M:.*]]: tensor<8xf32, {axes = ["q"]}>)
// CHECK:         %[[A:.*]] = "napkin.add"(%[[S]], %[[M]]) : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<8xf32, {axes = ["q"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
// CHECK:         %[[B:.*]] = "napkin.sub"(%[[A]], %[[M]])
// CHECK:         %[[C:.*]] = "napkin.mul"(%[[M]], %[[B]])
// CHECK:         %[[D:.*]] = "napkin.div"(%[[C]], %[[M]])
// CHECK:         %[[E:.*]] = "napkin.max"(%[[D]], %[[S]])
// CHECK:         return %[[E]]
func.func @binary(%s: tensor<8x16xf32, {axes = ["q", "x"]}>, %m: tensor<8xf32, {axes = ["q"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}> {
  %0 = "napkin.add"(%s, %m) : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<8xf32, {axes = ["q"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %1 = "napkin.sub"(%0, %m) : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<8xf32, {axes = ["q"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %2 = "napkin.mul"(%m, %1) : (tensor<8xf32, {axes = ["q"]}>, tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %3 = "napkin.div"(%2, %m) : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<8xf32, {axes = ["q"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %4 = "napkin.max"(%3, %s) : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  return %4 : tensor<8x16xf32, {axes = ["q", "x"]}>
}

// -----

// map: a scalar region applied elementwise, broadcasting like the binary functions (the row
// vector %m along x); the body ends in gpu.yield. Operands fill optional slots (IRDL variadics
// would force one type), counted by operandSegmentSizes.

// CHECK-LABEL: func.func @map
// CHECK-SAME:    (%[[A:.*]]: tensor<8x16xf32, {axes = ["q", "x"]}>, %[[M:.*]]: tensor<8xf32, {axes = ["q"]}>)
// CHECK:         %[[R:.*]] = "napkin.map"(%[[A]], %[[M]]) ({
// CHECK-NEXT:    ^bb0(%[[X:.*]]: f32, %[[Y:.*]]: f32):
// CHECK-NEXT:      %[[D:.*]] = arith.subf %[[X]], %[[Y]] : f32
// CHECK-NEXT:      gpu.yield %[[D]] : f32
// CHECK-NEXT:    }) {operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 0, 0, 0>} : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<8xf32, {axes = ["q"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
// CHECK:         return %[[R]]
func.func @map(%a: tensor<8x16xf32, {axes = ["q", "x"]}>, %m: tensor<8xf32, {axes = ["q"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}> {
  %0 = "napkin.map"(%a, %m) ({
  ^bb0(%x: f32, %y: f32):
    %d = arith.subf %x, %y : f32
    gpu.yield %d : f32
  }) {operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 0, 0, 0>} : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<8xf32, {axes = ["q"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  return %0 : tensor<8x16xf32, {axes = ["q", "x"]}>
}

// -----

// reduce (kind sum or max) drops its axis; softmax keeps the shape.

// CHECK-LABEL: func.func @reduce_softmax
// CHECK:         "napkin.reduce"(%{{.*}}) {axis = "x", kind = "max"} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}>
// CHECK:         "napkin.reduce"(%{{.*}}) {axis = "q", kind = "sum"} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<16xf32, {axes = ["x"]}>
// CHECK:         "napkin.softmax"(%{{.*}}) {axis = "x"} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
func.func @reduce_softmax(%s: tensor<8x16xf32, {axes = ["q", "x"]}>) -> (tensor<8xf32, {axes = ["q"]}>, tensor<16xf32, {axes = ["x"]}>, tensor<8x16xf32, {axes = ["q", "x"]}>) {
  %0 = "napkin.reduce"(%s) {axis = "x", kind = "max"} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}>
  %1 = "napkin.reduce"(%s) {axis = "q", kind = "sum"} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<16xf32, {axes = ["x"]}>
  %2 = "napkin.softmax"(%s) {axis = "x"} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  return %0, %1, %2 : tensor<8xf32, {axes = ["q"]}>, tensor<16xf32, {axes = ["x"]}>, tensor<8x16xf32, {axes = ["q", "x"]}>
}

// -----

// mask: a predicate of positions. Causal (j <= i) on a whole array; a sliding window with
// the tile's offsets and full lengths (a tile of a 64x64 array); a document mask reading
// segment ids of the rows and of the cols.

// CHECK-LABEL: func.func @mask
// CHECK-SAME:    (%[[S:.*]]: tensor<8x16xf32, {axes = ["q", "x"]}>, %[[I:.*]]: index, %[[J:.*]]: index, %[[SQ:.*]]: tensor<8xi32, {axes = ["q"]}>, %[[SX:.*]]: tensor<16xi32, {axes = ["x"]}>)
// CHECK:         %[[M:.*]] = "napkin.mask"(%[[S]]) ({
// CHECK-NEXT:    ^bb0(%[[A0:.*]]: index, %[[A1:.*]]: index, %{{.*}}: index, %{{.*}}: index):
// CHECK-NEXT:      %[[C:.*]] = arith.cmpi sle, %[[A1]], %[[A0]] : index
// CHECK-NEXT:      gpu.yield %[[C]] : i1
// CHECK-NEXT:    }) {cols = "x", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>, rows = "q"} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
// CHECK:         %[[N:.*]] = "napkin.mask"(%[[M]], %[[I]], %[[J]]) ({
// CHECK:           arith.subi
// CHECK:           arith.andi
// CHECK:         }) {cols = "x", extents = array<i64: 64, 64>, operandSegmentSizes = array<i32: 1, 2, 0, 0, 0, 0>, rows = "q"}
// CHECK:         %[[D:.*]] = "napkin.mask"(%[[N]], %[[SQ]], %[[SX]]) ({
// CHECK-NEXT:    ^bb0(%{{.*}}: index, %{{.*}}: index, %{{.*}}: index, %{{.*}}: index, %[[U:.*]]: i32, %[[V:.*]]: i32):
// CHECK-NEXT:      %[[E:.*]] = arith.cmpi eq, %[[U]], %[[V]] : i32
// CHECK:         }) {cols = "x", operandSegmentSizes = array<i32: 1, 0, 1, 1, 0, 0>, rows = "q"}
// CHECK:         return %[[D]]
func.func @mask(%s: tensor<8x16xf32, {axes = ["q", "x"]}>, %i: index, %j: index, %sq: tensor<8xi32, {axes = ["q"]}>, %sx: tensor<16xi32, {axes = ["x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}> {
  %0 = "napkin.mask"(%s) ({
  ^bb0(%a: index, %b: index, %n: index, %m: index):
    %k = arith.cmpi sle, %b, %a : index
    gpu.yield %k : i1
  }) {rows = "q", cols = "x", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %1 = "napkin.mask"(%0, %i, %j) ({
  ^bb0(%a: index, %b: index, %n: index, %m: index):
    %w = arith.constant 4 : index
    %d = arith.subi %a, %b : index
    %c = arith.cmpi slt, %d, %w : index
    %k = arith.cmpi sle, %b, %a : index
    %r = arith.andi %c, %k : i1
    gpu.yield %r : i1
  }) {rows = "q", cols = "x", extents = array<i64: 64, 64>, operandSegmentSizes = array<i32: 1, 2, 0, 0, 0, 0>} : (tensor<8x16xf32, {axes = ["q", "x"]}>, index, index) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  %2 = "napkin.mask"(%1, %sq, %sx) ({
  ^bb0(%a: index, %b: index, %n: index, %m: index, %u: i32, %v: i32):
    %k = arith.cmpi eq, %u, %v : i32
    gpu.yield %k : i1
  }) {rows = "q", cols = "x", operandSegmentSizes = array<i32: 1, 0, 1, 1, 0, 0>} : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<8xi32, {axes = ["q"]}>, tensor<16xi32, {axes = ["x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  return %2 : tensor<8x16xf32, {axes = ["q", "x"]}>
}

// -----

// fill makes a constant array (-inf here, the head of a running maximum).

// CHECK-LABEL: func.func @fill
// CHECK:         "napkin.fill"() {value = 0xFF800000 : f32} : () -> tensor<8xf32, {axes = ["q"]}>
func.func @fill() -> tensor<8xf32, {axes = ["q"]}> {
  %0 = "napkin.fill"() {value = 0xFF800000 : f32} : () -> tensor<8xf32, {axes = ["q"]}>
  return %0 : tensor<8xf32, {axes = ["q"]}>
}

// -----

// transfer moves an array to another level (gmem -> smem).

// CHECK-LABEL: func.func @transfer
// CHECK:         "napkin.transfer"(%{{.*}}) : (tensor<8x4xf16, {axes = ["q", "d"], level = "gmem"}>) -> tensor<8x4xf16, {axes = ["q", "d"], level = "smem"}>
func.func @transfer(%q: tensor<8x4xf16, {axes = ["q", "d"], level = "gmem"}>) -> tensor<8x4xf16, {axes = ["q", "d"], level = "smem"}> {
  %0 = "napkin.transfer"(%q) : (tensor<8x4xf16, {axes = ["q", "d"], level = "gmem"}>) -> tensor<8x4xf16, {axes = ["q", "d"], level = "smem"}>
  return %0 : tensor<8x4xf16, {axes = ["q", "d"], level = "smem"}>
}

// -----

// group over q in tiles of 4: the body gets the q-tile of %q, all of %k (it has no q axis),
// then the tile's q offset, and yields the result tile.

// CHECK-LABEL: func.func @group
// CHECK-SAME:    (%[[Q:.*]]: tensor<8x4xf32, {axes = ["q", "d"]}>, %[[K:.*]]: tensor<16x4xf32, {axes = ["x", "d"]}>)
// CHECK:         %[[G:.*]] = "napkin.group"(%[[Q]], %[[K]]) ({
// CHECK-NEXT:    ^bb0(%[[QT:.*]]: tensor<4x4xf32, {axes = ["q", "d"]}>, %[[KT:.*]]: tensor<16x4xf32, {axes = ["x", "d"]}>, %[[OFF:.*]]: index):
// CHECK-NEXT:      %[[ST:.*]] = "napkin.contract"(%[[QT]], %[[KT]])
// CHECK-NEXT:      gpu.yield %[[ST]] : tensor<4x16xf32, {axes = ["q", "x"]}>
// CHECK-NEXT:    }) {axes = ["q"], level = "grid", operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, sizes = array<i64: 4>} : (tensor<8x4xf32, {axes = ["q", "d"]}>, tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
// CHECK:         return %[[G]]
func.func @group(%q: tensor<8x4xf32, {axes = ["q", "d"]}>, %k: tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}> {
  %0 = "napkin.group"(%q, %k) ({
  ^bb0(%qt: tensor<4x4xf32, {axes = ["q", "d"]}>, %kt: tensor<16x4xf32, {axes = ["x", "d"]}>, %off: index):
    %st = "napkin.contract"(%qt, %kt) : (tensor<4x4xf32, {axes = ["q", "d"]}>, tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<4x16xf32, {axes = ["q", "x"]}>
    gpu.yield %st : tensor<4x16xf32, {axes = ["q", "x"]}>
  }) {axes = ["q"], sizes = array<i64: 4>, level = "grid", operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<8x4xf32, {axes = ["q", "d"]}>, tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  return %0 : tensor<8x16xf32, {axes = ["q", "x"]}>
}

// -----

// stream over x in chunks of 4 (P·V): init makes the state, step folds one chunk of each
// operand (then the chunk offset, then the state) into it, finish turns the state into the
// results.

// CHECK-LABEL: func.func @stream
// CHECK-SAME:    (%[[P:.*]]: tensor<8x16xf32, {axes = ["q", "x"]}>, %[[V:.*]]: tensor<16x4xf32, {axes = ["x", "d"]}>)
// CHECK:         %[[R:.*]] = "napkin.stream"(%[[P]], %[[V]]) ({
// CHECK-NEXT:      %[[Z:.*]] = "napkin.fill"() {value = 0.000000e+00 : f32} : () -> tensor<8x4xf32, {axes = ["q", "d"]}>
// CHECK-NEXT:      gpu.yield %[[Z]]
// CHECK-NEXT:    }, {
// CHECK-NEXT:    ^bb0(%[[PC:.*]]: tensor<8x4xf32, {axes = ["q", "x"]}>, %[[VC:.*]]: tensor<4x4xf32, {axes = ["x", "d"]}>, %[[OFF:.*]]: index, %[[ACC:.*]]: tensor<8x4xf32, {axes = ["q", "d"]}>):
// CHECK-NEXT:      %[[PV:.*]] = "napkin.contract"(%[[PC]], %[[VC]])
// CHECK-NEXT:      %[[N:.*]] = "napkin.add"(%[[ACC]], %[[PV]])
// CHECK-NEXT:      gpu.yield %[[N]]
// CHECK-NEXT:    }, {
// CHECK-NEXT:    ^bb0(%[[F:.*]]: tensor<8x4xf32, {axes = ["q", "d"]}>):
// CHECK-NEXT:      gpu.yield %[[F]]
// CHECK-NEXT:    }) {axis = "x", operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, size = 4 : i64}
// CHECK:         return %[[R]]
func.func @stream(%p: tensor<8x16xf32, {axes = ["q", "x"]}>, %v: tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}> {
  %0 = "napkin.stream"(%p, %v) ({
    %z = "napkin.fill"() {value = 0.0 : f32} : () -> tensor<8x4xf32, {axes = ["q", "d"]}>
    gpu.yield %z : tensor<8x4xf32, {axes = ["q", "d"]}>
  }, {
  ^bb0(%pc: tensor<8x4xf32, {axes = ["q", "x"]}>, %vc: tensor<4x4xf32, {axes = ["x", "d"]}>, %off: index, %acc: tensor<8x4xf32, {axes = ["q", "d"]}>):
    %pv = "napkin.contract"(%pc, %vc) : (tensor<8x4xf32, {axes = ["q", "x"]}>, tensor<4x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}>
    %n = "napkin.add"(%acc, %pv) : (tensor<8x4xf32, {axes = ["q", "d"]}>, tensor<8x4xf32, {axes = ["q", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}>
    gpu.yield %n : tensor<8x4xf32, {axes = ["q", "d"]}>
  }, {
  ^bb0(%acc: tensor<8x4xf32, {axes = ["q", "d"]}>):
    gpu.yield %acc : tensor<8x4xf32, {axes = ["q", "d"]}>
  }) {axis = "x", size = 4 : i64, operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<8x16xf32, {axes = ["q", "x"]}>, tensor<16x4xf32, {axes = ["x", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}>
  return %0 : tensor<8x4xf32, {axes = ["q", "d"]}>
}
