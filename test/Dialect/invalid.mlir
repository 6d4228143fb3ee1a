// Every rule of the Python verifier (napkin_mlir/ir/verifier.py) and of the IRDL definition
// (dialects/napkin.irdl.mlir), one case per chunk.
// RUN: %napkin-opt %s --split-input-file --verify-diagnostics

// === Wires: every operand and result is a named-axis array.

// A tensor without axis names.
func.func @no_axes(%a: tensor<4xf32>) {
  // expected-error @+1 {{'napkin.exp' op input: tensor type 'tensor<4xf32>' has no axis names}}
  %0 = "napkin.exp"(%a) : (tensor<4xf32>) -> tensor<4xf32>
  return
}

// -----

// Axis names that are not strings.
func.func @axes_not_strings(%a: tensor<4xf32, {axes = [1]}>) {
  // expected-error @+1 {{'axes' must be an array of strings}}
  %0 = "napkin.exp"(%a) : (tensor<4xf32, {axes = [1]}>) -> tensor<4xf32, {axes = [1]}>
  return
}

// -----

// A dynamic size.
func.func @dynamic(%a: tensor<?xf32, {axes = ["q"]}>) {
  // expected-error @+1 {{has a dynamic size; napkin arrays have static sizes}}
  %0 = "napkin.exp"(%a) : (tensor<?xf32, {axes = ["q"]}>) -> tensor<?xf32, {axes = ["q"]}>
  return
}

// -----

// An element type napkin does not support.
func.func @dtype(%a: tensor<4xi8, {axes = ["q"]}>) {
  // expected-error @+1 {{input: unsupported element type 'i8'}}
  %0 = "napkin.exp"(%a) : (tensor<4xi8, {axes = ["q"]}>) -> tensor<4xi8, {axes = ["q"]}>
  return
}

// -----

// Integer arrays are mask data: no op computes on them.
func.func @integer_data(%a: tensor<4xi32, {axes = ["q"]}>) {
  // expected-error @+1 {{'napkin.exp' op integer array [q=4] i32 where floats are computed}}
  %0 = "napkin.exp"(%a) : (tensor<4xi32, {axes = ["q"]}>) -> tensor<4xi32, {axes = ["q"]}>
  return
}

// -----

// As many axis names as dimensions.
func.func @rank(%a: tensor<4x4xf32, {axes = ["q"]}>) {
  // expected-error @+1 {{input: axes ['q'] and shape [4, 4] differ in rank}}
  %0 = "napkin.exp"(%a) : (tensor<4x4xf32, {axes = ["q"]}>) -> tensor<4x4xf32, {axes = ["q"]}>
  return
}

// -----

// Axis names are unique within an array.
func.func @repeated(%a: tensor<4x4xf32, {axes = ["q", "q"]}>) {
  // expected-error @+1 {{input: repeated axis name in ['q', 'q']}}
  %0 = "napkin.exp"(%a) : (tensor<4x4xf32, {axes = ["q", "q"]}>) -> tensor<4x4xf32, {axes = ["q", "q"]}>
  return
}

// -----

// === contract

// A shared axis has one size.
func.func @contract_sizes(%a: tensor<4x8xf32, {axes = ["m", "k"]}>, %b: tensor<9x5xf32, {axes = ["k", "n"]}>) {
  // expected-error @+1 {{'napkin.contract' op axis 'k' has size 8 in lhs but 9 in rhs}}
  %0 = "napkin.contract"(%a, %b) : (tensor<4x8xf32, {axes = ["m", "k"]}>, tensor<9x5xf32, {axes = ["k", "n"]}>) -> tensor<4x5xf32, {axes = ["m", "n"]}>
  return
}

// -----

// Every result axis comes from an input.
func.func @contract_new_axis(%a: tensor<4x8xf32, {axes = ["m", "k"]}>, %b: tensor<8x5xf32, {axes = ["k", "n"]}>) {
  // expected-error @+1 {{result axis 'z' is in neither input}}
  %0 = "napkin.contract"(%a, %b) : (tensor<4x8xf32, {axes = ["m", "k"]}>, tensor<8x5xf32, {axes = ["k", "n"]}>) -> tensor<4x3xf32, {axes = ["m", "z"]}>
  return
}

// -----

// Both inputs have one element type.
func.func @contract_dtypes(%a: tensor<4x8xf32, {axes = ["m", "k"]}>, %b: tensor<8x5xf16, {axes = ["k", "n"]}>) {
  // expected-error @+1 {{inputs have different element types (f32 and f16)}}
  %0 = "napkin.contract"(%a, %b) : (tensor<4x8xf32, {axes = ["m", "k"]}>, tensor<8x5xf16, {axes = ["k", "n"]}>) -> tensor<4x5xf32, {axes = ["m", "n"]}>
  return
}

// -----

// === unary functions, scale and cast

// The result has the axes and sizes of the input.
func.func @unary_shape(%a: tensor<4x8xf32, {axes = ["m", "k"]}>) {
  // expected-error @+1 {{'napkin.tanh' op napkin.tanh: result [k=8, m=4] f32 must have the axes and sizes of the input [m=4, k=8] f32}}
  %0 = "napkin.tanh"(%a) : (tensor<4x8xf32, {axes = ["m", "k"]}>) -> tensor<8x4xf32, {axes = ["k", "m"]}>
  return
}

// -----

// Only cast changes the element type.
func.func @unary_dtype(%a: tensor<4xf32, {axes = ["m"]}>) {
  // expected-error @+1 {{result element type f16 differs from the input's f32 (use napkin.cast)}}
  %0 = "napkin.scale"(%a) {factor = 2.0 : f32} : (tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf16, {axes = ["m"]}>
  return
}

// -----

// cast keeps axes and sizes.
func.func @cast_shape(%a: tensor<4xf32, {axes = ["m"]}>) {
  // expected-error @+1 {{'napkin.cast' op napkin.cast: result [m=5] f16 must have the axes and sizes of the input [m=4] f32}}
  %0 = "napkin.cast"(%a) : (tensor<4xf32, {axes = ["m"]}>) -> tensor<5xf16, {axes = ["m"]}>
  return
}

// -----

// === binary functions (broadcasting)

// An operand axis must be a result axis (binary ops do not reduce).
func.func @binary_extra_axis(%a: tensor<4x8xf32, {axes = ["m", "k"]}>, %b: tensor<4xf32, {axes = ["m"]}>) {
  // expected-error @+1 {{'napkin.add' op operand #0 axis 'k' is not an axis of the result ['m']}}
  %0 = "napkin.add"(%a, %b) : (tensor<4x8xf32, {axes = ["m", "k"]}>, tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}>
  return
}

// -----

// Every result axis comes from an operand.
func.func @binary_new_axis(%a: tensor<4xf32, {axes = ["m"]}>, %b: tensor<4xf32, {axes = ["m"]}>) {
  // expected-error @+1 {{'napkin.sub' op result axis 'n' comes from no operand}}
  %0 = "napkin.sub"(%a, %b) : (tensor<4xf32, {axes = ["m"]}>, tensor<4xf32, {axes = ["m"]}>) -> tensor<4x2xf32, {axes = ["m", "n"]}>
  return
}

// -----

// Broadcast axes agree in size.
func.func @binary_sizes(%a: tensor<4x8xf32, {axes = ["m", "k"]}>, %b: tensor<5xf32, {axes = ["m"]}>) {
  // expected-error @+1 {{'napkin.mul' op axis 'm' has size 4 in operand #0 but 5 in operand #1}}
  %0 = "napkin.mul"(%a, %b) : (tensor<4x8xf32, {axes = ["m", "k"]}>, tensor<5xf32, {axes = ["m"]}>) -> tensor<4x8xf32, {axes = ["m", "k"]}>
  return
}

// -----

// Operands and result share one element type.
func.func @binary_dtypes(%a: tensor<4xf32, {axes = ["m"]}>, %b: tensor<4xbf16, {axes = ["m"]}>) {
  // expected-error @+1 {{'napkin.max' op operands and result must share one element type, got ['bf16', 'f32']}}
  %0 = "napkin.max"(%a, %b) : (tensor<4xf32, {axes = ["m"]}>, tensor<4xbf16, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}>
  return
}

// -----

// === map

// map needs an operand.
func.func @map_no_operands() {
  // expected-error @+1 {{'napkin.map' op needs at least one operand}}
  %0 = "napkin.map"() ({
    %c = arith.constant 1.0 : f32
    gpu.yield %c : f32
  }) {operandSegmentSizes = array<i32: 0, 0, 0, 0, 0, 0, 0, 0>} : () -> tensor<4xf32, {axes = ["m"]}>
  return
}

// -----

// The body is one block.
func.func @map_blocks(%a: tensor<4xf32, {axes = ["m"]}>) {
  // expected-error @+1 {{'napkin.map' op body must have exactly one block}}
  %0 = "napkin.map"(%a) ({
  ^bb0(%x: f32):
    gpu.yield %x : f32
  ^bb1(%y: f32):
    gpu.yield %y : f32
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}>
  return
}

// -----

// One scalar argument per operand.
func.func @map_arity(%a: tensor<4xf32, {axes = ["m"]}>) {
  // expected-error @+1 {{'napkin.map' op body takes 2 scalars but the op has 1 operands}}
  %0 = "napkin.map"(%a) ({
  ^bb0(%x: f32, %y: f32):
    gpu.yield %x : f32
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}>
  return
}

// -----

// The scalar arguments have the operands' element types.
func.func @map_arg_type(%a: tensor<4xf32, {axes = ["m"]}>) {
  // expected-error @+1 {{'napkin.map' op body argument #0 has type f16, expected the element type f32}}
  %0 = "napkin.map"(%a) ({
  ^bb0(%x: f16):
    %y = arith.extf %x : f16 to f32
    gpu.yield %y : f32
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}>
  return
}

// -----

// The body ends with gpu.yield of one scalar.
func.func @map_terminator(%a: tensor<4xf32, {axes = ["m"]}>) {
  // expected-error @+1 {{'napkin.map' op body must end with gpu.yield of one scalar}}
  %0 = "napkin.map"(%a) ({
  ^bb0(%x: f32):
    gpu.yield %x, %x : f32, f32
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}>
  return
}

// -----

// The yielded scalar has the result's element type.
func.func @map_yield_type(%a: tensor<4xf32, {axes = ["m"]}>) {
  // expected-error @+1 {{'napkin.map' op body yields f16 but the result element type is f32}}
  %0 = "napkin.map"(%a) ({
  ^bb0(%x: f32):
    %y = arith.truncf %x : f32 to f16
    gpu.yield %y : f16
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>} : (tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}>
  return
}

// -----

// === reduce and softmax

// The reduced axis exists.
func.func @reduce_axis(%a: tensor<4x8xf32, {axes = ["m", "k"]}>) {
  // expected-error @+1 {{'napkin.reduce' op unknown axis 'z' in the input (its axes are ['m', 'k'])}}
  %0 = "napkin.reduce"(%a) {axis = "z", kind = "sum"} : (tensor<4x8xf32, {axes = ["m", "k"]}>) -> tensor<4xf32, {axes = ["m"]}>
  return
}

// -----

// The result is the input without the reduced axis.
func.func @reduce_result(%a: tensor<4x8xf32, {axes = ["m", "k"]}>) {
  // expected-error @+1 {{'napkin.reduce' op result must be the input without axis 'k' ([m=4] f32), got [k=8] f32}}
  %0 = "napkin.reduce"(%a) {axis = "k", kind = "max"} : (tensor<4x8xf32, {axes = ["m", "k"]}>) -> tensor<8xf32, {axes = ["k"]}>
  return
}

// -----

// A reduction keeps the element type.
func.func @reduce_dtype(%a: tensor<4x8xf32, {axes = ["m", "k"]}>) {
  // expected-error @+1 {{'napkin.reduce' op result element type f16 differs from the input's f32}}
  %0 = "napkin.reduce"(%a) {axis = "k", kind = "sum"} : (tensor<4x8xf32, {axes = ["m", "k"]}>) -> tensor<4xf16, {axes = ["m"]}>
  return
}

// -----

// softmax keeps the element type.
func.func @softmax_dtype(%a: tensor<4x8xf32, {axes = ["m", "k"]}>) {
  // expected-error @+1 {{'napkin.softmax' op result element type differs from the input's}}
  %0 = "napkin.softmax"(%a) {axis = "k"} : (tensor<4x8xf32, {axes = ["m", "k"]}>) -> tensor<4x8xbf16, {axes = ["m", "k"]}>
  return
}

// -----

// === mask

// rows and cols are two different axes.
func.func @mask_same_axes(%a: tensor<4x8xf32, {axes = ["q", "x"]}>) {
  // expected-error @+1 {{'napkin.mask' op rows and cols must be different axes, both are 'q'}}
  %0 = "napkin.mask"(%a) ({
  ^bb0(%i: index, %j: index, %n: index, %m: index):
    %k = arith.cmpi sle, %j, %i : index
    gpu.yield %k : i1
  }) {rows = "q", cols = "q", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>} : (tensor<4x8xf32, {axes = ["q", "x"]}>) -> tensor<4x8xf32, {axes = ["q", "x"]}>
  return
}

// -----

// Offsets come in pairs (rows, cols) or not at all.
func.func @mask_offsets(%a: tensor<4x8xf32, {axes = ["q", "x"]}>, %i: index) {
  // expected-error @+1 {{'napkin.mask' op takes either no offsets or two (rows, cols), got 1}}
  %0 = "napkin.mask"(%a, %i) ({
  ^bb0(%i0: index, %j: index, %n: index, %m: index):
    %k = arith.cmpi sle, %j, %i0 : index
    gpu.yield %k : i1
  }) {rows = "q", cols = "x", extents = array<i64: 4, 8>, operandSegmentSizes = array<i32: 1, 1, 0, 0, 0, 0>} : (tensor<4x8xf32, {axes = ["q", "x"]}>, index) -> tensor<4x8xf32, {axes = ["q", "x"]}>
  return
}

// -----

// Offsets need the full lengths.
func.func @mask_extents(%a: tensor<4x8xf32, {axes = ["q", "x"]}>, %i: index) {
  // expected-error @+1 {{'napkin.mask' op a mask with offsets needs `extents` (the full lengths of rows and cols)}}
  %0 = "napkin.mask"(%a, %i, %i) ({
  ^bb0(%i0: index, %j: index, %n: index, %m: index):
    %k = arith.cmpi sle, %j, %i0 : index
    gpu.yield %k : i1
  }) {rows = "q", cols = "x", operandSegmentSizes = array<i32: 1, 2, 0, 0, 0, 0>} : (tensor<4x8xf32, {axes = ["q", "x"]}>, index, index) -> tensor<4x8xf32, {axes = ["q", "x"]}>
  return
}

// -----

// The predicate takes i, j, n_rows, n_cols and one scalar per array.
func.func @mask_predicate_args(%a: tensor<4x8xf32, {axes = ["q", "x"]}>) {
  // expected-error @+1 {{'napkin.mask' op the predicate takes (index, index), expected (index, index, index, index): i, j, n_rows, n_cols and one scalar per array}}
  %0 = "napkin.mask"(%a) ({
  ^bb0(%i: index, %j: index):
    %k = arith.cmpi sle, %j, %i : index
    gpu.yield %k : i1
  }) {rows = "q", cols = "x", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>} : (tensor<4x8xf32, {axes = ["q", "x"]}>) -> tensor<4x8xf32, {axes = ["q", "x"]}>
  return
}

// -----

// The predicate yields one i1.
func.func @mask_predicate_yield(%a: tensor<4x8xf32, {axes = ["q", "x"]}>) {
  // expected-error @+1 {{'napkin.mask' op the predicate must end with gpu.yield of one i1}}
  %0 = "napkin.mask"(%a) ({
  ^bb0(%i: index, %j: index, %n: index, %m: index):
    gpu.yield %i : index
  }) {rows = "q", cols = "x", operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0>} : (tensor<4x8xf32, {axes = ["q", "x"]}>) -> tensor<4x8xf32, {axes = ["q", "x"]}>
  return
}

// -----

// The predicate uses integer arithmetic and comparisons only: no math ops.
func.func @mask_predicate_op(%a: tensor<4x8xf32, {axes = ["q", "x"]}>, %s: tensor<8xf32, {axes = ["x"]}>) {
  // expected-error @+1 {{'napkin.mask' op the mask: the predicate cannot use 'math.tanh'}}
  %0 = "napkin.mask"(%a, %s) ({
  ^bb0(%i: index, %j: index, %n: index, %m: index, %v: f32):
    %t = math.tanh %v : f32
    %z = arith.constant 0.0 : f32
    %k = arith.cmpf ogt, %t, %z : f32
    gpu.yield %k : i1
  }) {rows = "q", cols = "x", operandSegmentSizes = array<i32: 1, 0, 1, 0, 0, 0>} : (tensor<4x8xf32, {axes = ["q", "x"]}>, tensor<8xf32, {axes = ["x"]}>) -> tensor<4x8xf32, {axes = ["q", "x"]}>
  return
}

// -----

// An array the predicate reads has axes of the input, with its sizes.
func.func @mask_array_axes(%a: tensor<4x8xf32, {axes = ["q", "x"]}>, %s: tensor<5xi32, {axes = ["x"]}>) {
  // expected-error @+1 {{'napkin.mask' op array #0 has axis 'x' of size 5, which the input}}
  %0 = "napkin.mask"(%a, %s) ({
  ^bb0(%i: index, %j: index, %n: index, %m: index, %v: i32):
    %k = arith.cmpi sle, %j, %i : index
    gpu.yield %k : i1
  }) {rows = "q", cols = "x", operandSegmentSizes = array<i32: 1, 0, 1, 0, 0, 0>} : (tensor<4x8xf32, {axes = ["q", "x"]}>, tensor<5xi32, {axes = ["x"]}>) -> tensor<4x8xf32, {axes = ["q", "x"]}>
  return
}

// -----

// === fill

// fill makes a named-axis array.
func.func @fill_not_array() {
  // expected-error @+1 {{'napkin.fill' op result: tensor type 'tensor<4xf32>' has no axis names}}
  %0 = "napkin.fill"() {value = 0.0 : f32} : () -> tensor<4xf32>
  return
}

// -----

// === transfer

// A transfer keeps the element type.
func.func @transfer_dtype(%a: tensor<4xf32, {axes = ["m"], level = "gmem"}>) {
  // expected-error @+1 {{'napkin.transfer' op a transfer keeps the element type}}
  %0 = "napkin.transfer"(%a) : (tensor<4xf32, {axes = ["m"], level = "gmem"}>) -> tensor<4xf16, {axes = ["m"], level = "smem"}>
  return
}

// -----

// The destination names its level.
func.func @transfer_no_level(%a: tensor<4xf32, {axes = ["m"], level = "gmem"}>) {
  // expected-error @+1 {{'napkin.transfer' op the result of a transfer must name its level}}
  %0 = "napkin.transfer"(%a) : (tensor<4xf32, {axes = ["m"], level = "gmem"}>) -> tensor<4xf32, {axes = ["m"]}>
  return
}

// -----

// Source and destination levels differ.
func.func @transfer_same_level(%a: tensor<4xf32, {axes = ["m"], level = "smem"}>) {
  // expected-error @+1 {{'napkin.transfer' op source and destination are both at level 'smem'}}
  %0 = "napkin.transfer"(%a) : (tensor<4xf32, {axes = ["m"], level = "smem"}>) -> tensor<4xf32, {axes = ["m"], level = "smem"}>
  return
}

// -----

// === group

// One size per axis.
func.func @group_sizes(%a: tensor<8x4xf32, {axes = ["q", "d"]}>) {
  // expected-error @+1 {{'napkin.group' op 1 axes but 2 sizes}}
  %0 = "napkin.group"(%a) ({
  ^bb0(%t: tensor<4x4xf32, {axes = ["q", "d"]}>, %i: index):
    gpu.yield %t : tensor<4x4xf32, {axes = ["q", "d"]}>
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, axes = ["q"], sizes = array<i64: 4, 4>, level = "grid"} : (tensor<8x4xf32, {axes = ["q", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}>
  return
}

// -----

// Grouped axes exist.
func.func @group_axis(%a: tensor<8x4xf32, {axes = ["q", "d"]}>) {
  // expected-error @+1 {{'napkin.group' op unknown axis 'z': no operand or result has it}}
  %0 = "napkin.group"(%a) ({
  ^bb0(%t: tensor<8x4xf32, {axes = ["q", "d"]}>, %i: index):
    gpu.yield %t : tensor<8x4xf32, {axes = ["q", "d"]}>
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, axes = ["z"], sizes = array<i64: 4>, level = "grid"} : (tensor<8x4xf32, {axes = ["q", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}>
  return
}

// -----

// A group is no larger than its axis.
func.func @group_too_big(%a: tensor<8x4xf32, {axes = ["q", "d"]}>) {
  // expected-error @+1 {{'napkin.group' op group size 16 for axis 'q' must be between 1 and its size 8}}
  %0 = "napkin.group"(%a) ({
  ^bb0(%t: tensor<16x4xf32, {axes = ["q", "d"]}>, %i: index):
    gpu.yield %t : tensor<16x4xf32, {axes = ["q", "d"]}>
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, axes = ["q"], sizes = array<i64: 16>, level = "grid"} : (tensor<8x4xf32, {axes = ["q", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}>
  return
}

// -----

// The body takes the operand tiles, then one index per grouped axis.
func.func @group_args(%a: tensor<8x4xf32, {axes = ["q", "d"]}>) {
  // expected-error @+1 {{'napkin.group' op body arguments must be the operand tiles then one index per axis}}
  %0 = "napkin.group"(%a) ({
  ^bb0(%t: tensor<8x4xf32, {axes = ["q", "d"]}>, %i: index):
    gpu.yield %t : tensor<8x4xf32, {axes = ["q", "d"]}>
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, axes = ["q"], sizes = array<i64: 4>, level = "grid"} : (tensor<8x4xf32, {axes = ["q", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}>
  return
}

// -----

// The body yields the result tiles.
func.func @group_yield(%a: tensor<8x4xf32, {axes = ["q", "d"]}>) {
  // expected-error @+1 {{'napkin.group' op body must yield the result tiles (tensor<4x4xf32, {axes = ["q", "d"]}>), got ()}}
  %0 = "napkin.group"(%a) ({
  ^bb0(%t: tensor<4x4xf32, {axes = ["q", "d"]}>, %i: index):
    gpu.yield
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, axes = ["q"], sizes = array<i64: 4>, level = "grid"} : (tensor<8x4xf32, {axes = ["q", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}>
  return
}

// -----

// Region bodies end with gpu.yield (IRDL ops cannot be terminators).
func.func @group_terminator(%a: tensor<8x4xf32, {axes = ["q", "d"]}>) {
  // expected-error @+1 {{'napkin.group' op the body must end with gpu.yield}}
  %0 = "napkin.group"(%a) ({
  ^bb0(%t: tensor<4x4xf32, {axes = ["q", "d"]}>, %i: index):
    ub.unreachable
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, axes = ["q"], sizes = array<i64: 4>, level = "grid"} : (tensor<8x4xf32, {axes = ["q", "d"]}>) -> tensor<8x4xf32, {axes = ["q", "d"]}>
  return
}

// -----

// === stream

// The streamed axis is an axis of an operand.
func.func @stream_axis(%a: tensor<8x16xf32, {axes = ["q", "x"]}>) {
  // expected-error @+1 {{'napkin.stream' op unknown axis 'z': no operand has it}}
  %0 = "napkin.stream"(%a) ({
    %z = "napkin.fill"() {value = 0.0 : f32} : () -> tensor<8xf32, {axes = ["q"]}>
    gpu.yield %z : tensor<8xf32, {axes = ["q"]}>
  }, {
  ^bb0(%c: tensor<8x16xf32, {axes = ["q", "x"]}>, %i: index, %s: tensor<8xf32, {axes = ["q"]}>):
    gpu.yield %s : tensor<8xf32, {axes = ["q"]}>
  }, {
  ^bb0(%s: tensor<8xf32, {axes = ["q"]}>):
    gpu.yield %s : tensor<8xf32, {axes = ["q"]}>
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, axis = "z", size = 4 : i64} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}>
  return
}

// -----

// No result has the streamed axis.
func.func @stream_result_axis(%a: tensor<8x16xf32, {axes = ["q", "x"]}>) {
  // expected-error @+1 {{'napkin.stream' op axis 'x' is streamed, so no result may have it}}
  %0 = "napkin.stream"(%a) ({
    %z = "napkin.fill"() {value = 0.0 : f32} : () -> tensor<8x16xf32, {axes = ["q", "x"]}>
    gpu.yield %z : tensor<8x16xf32, {axes = ["q", "x"]}>
  }, {
  ^bb0(%c: tensor<8x4xf32, {axes = ["q", "x"]}>, %i: index, %s: tensor<8x16xf32, {axes = ["q", "x"]}>):
    gpu.yield %s : tensor<8x16xf32, {axes = ["q", "x"]}>
  }, {
  ^bb0(%s: tensor<8x16xf32, {axes = ["q", "x"]}>):
    gpu.yield %s : tensor<8x16xf32, {axes = ["q", "x"]}>
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, axis = "x", size = 4 : i64} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8x16xf32, {axes = ["q", "x"]}>
  return
}

// -----

// A chunk is no larger than its axis.
func.func @stream_chunk(%a: tensor<8x16xf32, {axes = ["q", "x"]}>) {
  // expected-error @+1 {{'napkin.stream' op chunk size 32 for axis 'x' must be between 1 and its size 16}}
  %0 = "napkin.stream"(%a) ({
    %z = "napkin.fill"() {value = 0.0 : f32} : () -> tensor<8xf32, {axes = ["q"]}>
    gpu.yield %z : tensor<8xf32, {axes = ["q"]}>
  }, {
  ^bb0(%c: tensor<8x32xf32, {axes = ["q", "x"]}>, %i: index, %s: tensor<8xf32, {axes = ["q"]}>):
    gpu.yield %s : tensor<8xf32, {axes = ["q"]}>
  }, {
  ^bb0(%s: tensor<8xf32, {axes = ["q"]}>):
    gpu.yield %s : tensor<8xf32, {axes = ["q"]}>
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, axis = "x", size = 32 : i64} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}>
  return
}

// -----

// init takes no arguments.
func.func @stream_init_args(%a: tensor<8x16xf32, {axes = ["q", "x"]}>) {
  // expected-error @+1 {{'napkin.stream' op init takes no arguments}}
  %0 = "napkin.stream"(%a) ({
  ^bb0(%j: index):
    %z = "napkin.fill"() {value = 0.0 : f32} : () -> tensor<8xf32, {axes = ["q"]}>
    gpu.yield %z : tensor<8xf32, {axes = ["q"]}>
  }, {
  ^bb0(%c: tensor<8x4xf32, {axes = ["q", "x"]}>, %i: index, %s: tensor<8xf32, {axes = ["q"]}>):
    gpu.yield %s : tensor<8xf32, {axes = ["q"]}>
  }, {
  ^bb0(%s: tensor<8xf32, {axes = ["q"]}>):
    gpu.yield %s : tensor<8xf32, {axes = ["q"]}>
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, axis = "x", size = 4 : i64} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}>
  return
}

// -----

// step takes the chunks, the chunk offset and the state.
func.func @stream_step_args(%a: tensor<8x16xf32, {axes = ["q", "x"]}>) {
  // expected-error @+1 {{'napkin.stream' op step arguments must be the operand chunks, the chunk offset and the state}}
  %0 = "napkin.stream"(%a) ({
    %z = "napkin.fill"() {value = 0.0 : f32} : () -> tensor<8xf32, {axes = ["q"]}>
    gpu.yield %z : tensor<8xf32, {axes = ["q"]}>
  }, {
  ^bb0(%c: tensor<8x4xf32, {axes = ["q", "x"]}>, %s: tensor<8xf32, {axes = ["q"]}>):
    gpu.yield %s : tensor<8xf32, {axes = ["q"]}>
  }, {
  ^bb0(%s: tensor<8xf32, {axes = ["q"]}>):
    gpu.yield %s : tensor<8xf32, {axes = ["q"]}>
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, axis = "x", size = 4 : i64} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}>
  return
}

// -----

// step yields a new state of the state's types.
func.func @stream_step_yield(%a: tensor<8x16xf32, {axes = ["q", "x"]}>) {
  // expected-error @+1 {{'napkin.stream' op step must yield a new state of the types init yields}}
  %0 = "napkin.stream"(%a) ({
    %z = "napkin.fill"() {value = 0.0 : f32} : () -> tensor<8xf32, {axes = ["q"]}>
    gpu.yield %z : tensor<8xf32, {axes = ["q"]}>
  }, {
  ^bb0(%c: tensor<8x4xf32, {axes = ["q", "x"]}>, %i: index, %s: tensor<8xf32, {axes = ["q"]}>):
    gpu.yield %c : tensor<8x4xf32, {axes = ["q", "x"]}>
  }, {
  ^bb0(%s: tensor<8xf32, {axes = ["q"]}>):
    gpu.yield %s : tensor<8xf32, {axes = ["q"]}>
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, axis = "x", size = 4 : i64} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}>
  return
}

// -----

// finish takes the state.
func.func @stream_finish_args(%a: tensor<8x16xf32, {axes = ["q", "x"]}>) {
  // expected-error @+1 {{'napkin.stream' op finish takes the state}}
  %0 = "napkin.stream"(%a) ({
    %z = "napkin.fill"() {value = 0.0 : f32} : () -> tensor<8xf32, {axes = ["q"]}>
    gpu.yield %z : tensor<8xf32, {axes = ["q"]}>
  }, {
  ^bb0(%c: tensor<8x4xf32, {axes = ["q", "x"]}>, %i: index, %s: tensor<8xf32, {axes = ["q"]}>):
    gpu.yield %s : tensor<8xf32, {axes = ["q"]}>
  }, {
    %r = "napkin.fill"() {value = 0.0 : f32} : () -> tensor<8xf32, {axes = ["q"]}>
    gpu.yield %r : tensor<8xf32, {axes = ["q"]}>
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, axis = "x", size = 4 : i64} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}>
  return
}

// -----

// finish yields the results.
func.func @stream_finish_yield(%a: tensor<8x16xf32, {axes = ["q", "x"]}>) {
  // expected-error @+1 {{'napkin.stream' op finish must yield the results}}
  %0 = "napkin.stream"(%a) ({
    %z = "napkin.fill"() {value = 0.0 : f32} : () -> tensor<8xf32, {axes = ["q"]}>
    gpu.yield %z : tensor<8xf32, {axes = ["q"]}>
  }, {
  ^bb0(%c: tensor<8x4xf32, {axes = ["q", "x"]}>, %i: index, %s: tensor<8xf32, {axes = ["q"]}>):
    gpu.yield %s : tensor<8xf32, {axes = ["q"]}>
  }, {
  ^bb0(%s: tensor<8xf32, {axes = ["q"]}>):
    gpu.yield
  }) {operandSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, resultSegmentSizes = array<i32: 1, 0, 0, 0, 0, 0, 0, 0>, axis = "x", size = 4 : i64} : (tensor<8x16xf32, {axes = ["q", "x"]}>) -> tensor<8xf32, {axes = ["q"]}>
  return
}

// -----

// === IRDL: operand counts, required attributes, attribute values

// Wrong operand count.
func.func @irdl_operands(%a: tensor<4xf32, {axes = ["m"]}>) {
  // expected-error @+1 {{op expects exactly 2 operands, but got 1}}
  %0 = "napkin.add"(%a) : (tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}>
  return
}

// -----

// A required attribute is missing.
func.func @irdl_missing_attr(%a: tensor<4x8xf32, {axes = ["m", "k"]}>) {
  // expected-error @+1 {{attribute "axis" is expected but not provided}}
  %0 = "napkin.softmax"(%a) : (tensor<4x8xf32, {axes = ["m", "k"]}>) -> tensor<4x8xf32, {axes = ["m", "k"]}>
  return
}

// -----

// reduce kinds are "sum" and "max".
func.func @irdl_reduce_kind(%a: tensor<4x8xf32, {axes = ["m", "k"]}>) {
  // expected-error @+1 {{'"min"' does not satisfy the constraint}}
  %0 = "napkin.reduce"(%a) {axis = "k", kind = "min"} : (tensor<4x8xf32, {axes = ["m", "k"]}>) -> tensor<4xf32, {axes = ["m"]}>
  return
}

// -----

// Operands are tensors.
func.func @irdl_not_tensor(%a: memref<4xf32>) {
  // expected-error @+1 {{expected base type 'builtin.tensor' but got 'builtin.memref'}}
  %0 = "napkin.exp"(%a) : (memref<4xf32>) -> tensor<4xf32, {axes = ["m"]}>
  return
}

// -----

// Ops with operand slots (map, group, stream) say how many slots they use.
func.func @irdl_segments(%a: tensor<4xf32, {axes = ["m"]}>) {
  // expected-error @+1 {{'operandSegmentSizes' attribute is expected but not provided}}
  %0 = "napkin.map"(%a) ({
  ^bb0(%x: f32):
    gpu.yield %x : f32
  }) : (tensor<4xf32, {axes = ["m"]}>) -> tensor<4xf32, {axes = ["m"]}>
  return
}
