// The napkin dialect: diagrams of the paper "FlashAttention on a Napkin" as MLIR.
//
// This file is the single source of truth for the dialect. Python loads it with
// mlir.dialects.irdl.load_dialects (napkin_mlir.ir.context) and upstream tools load it
// with `mlir-opt --irdl-file=dialects/napkin.irdl.mlir`.
//
// Arrays are builtin ranked tensors whose encoding is a dictionary naming the axes
// (and, once a level is assigned, the memory level):
//     tensor<2x4x200x64xf32, {axes = ["b", "h", "q", "d"], level = "gmem"}>
// IRDL checks operand/result counts, tensor base types and required attributes; the
// relations IRDL cannot express (axis names and sizes agreeing across operands) are
// checked by the Python verifier in napkin_mlir/ir/verifier.py. Regions end with
// `gpu.yield`, because IRDL ops cannot be terminators.
//
// IRDL binds a constraint variable to the first type it matches, so a `variadic` list
// must hold values of one single type. Ops whose operand or result lists mix arrays of
// different shapes (map, group, stream) therefore declare 8 optional slots, each with its
// own constraint, and carry `operandSegmentSizes` / `resultSegmentSizes` (a 1 for each
// used slot, used slots first); napkin_mlir.ir.regions.slot_attributes builds them.
irdl.dialect @napkin {
  // Contraction: out[o] = sum over the axes of the inputs that are not in o of the
  // product of the inputs. Axes shared by inputs and output are woven (mapped).
  irdl.operation @contract {
    %lhs_t = irdl.base "!builtin.tensor"
    %rhs_t = irdl.base "!builtin.tensor"
    irdl.operands(lhs: %lhs_t, rhs: %rhs_t)
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
  }

  // Elementwise unary functions.
  irdl.operation @exp {
    %input_t = irdl.base "!builtin.tensor"
    irdl.operands(input: %input_t)
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
  }
  irdl.operation @tanh {
    %input_t = irdl.base "!builtin.tensor"
    irdl.operands(input: %input_t)
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
  }
  irdl.operation @relu {
    %input_t = irdl.base "!builtin.tensor"
    irdl.operands(input: %input_t)
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
  }
  irdl.operation @gelu {
    %input_t = irdl.base "!builtin.tensor"
    irdl.operands(input: %input_t)
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
  }
  irdl.operation @silu {
    %input_t = irdl.base "!builtin.tensor"
    irdl.operands(input: %input_t)
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
  }
  irdl.operation @scale {
    %f = irdl.base "#builtin.float"
    irdl.attributes { "factor" = %f }
    %input_t = irdl.base "!builtin.tensor"
    irdl.operands(input: %input_t)
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
  }
  // Element type conversion (e.g. bf16 inputs, f32 accumulation).
  irdl.operation @cast {
    %input_t = irdl.base "!builtin.tensor"
    irdl.operands(input: %input_t)
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
  }

  // Elementwise binary functions; an operand missing an axis of the result is
  // broadcast (woven) along it.
  irdl.operation @add {
    %lhs_t = irdl.base "!builtin.tensor"
    %rhs_t = irdl.base "!builtin.tensor"
    irdl.operands(lhs: %lhs_t, rhs: %rhs_t)
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
  }
  irdl.operation @sub {
    %lhs_t = irdl.base "!builtin.tensor"
    %rhs_t = irdl.base "!builtin.tensor"
    irdl.operands(lhs: %lhs_t, rhs: %rhs_t)
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
  }
  irdl.operation @mul {
    %lhs_t = irdl.base "!builtin.tensor"
    %rhs_t = irdl.base "!builtin.tensor"
    irdl.operands(lhs: %lhs_t, rhs: %rhs_t)
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
  }
  irdl.operation @div {
    %lhs_t = irdl.base "!builtin.tensor"
    %rhs_t = irdl.base "!builtin.tensor"
    irdl.operands(lhs: %lhs_t, rhs: %rhs_t)
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
  }
  irdl.operation @max {
    %lhs_t = irdl.base "!builtin.tensor"
    %rhs_t = irdl.base "!builtin.tensor"
    irdl.operands(lhs: %lhs_t, rhs: %rhs_t)
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
  }

  // A user-defined elementwise function: the region maps scalars to a scalar.
  irdl.operation @map {
    %in_t0 = irdl.base "!builtin.tensor"
    %in_t1 = irdl.base "!builtin.tensor"
    %in_t2 = irdl.base "!builtin.tensor"
    %in_t3 = irdl.base "!builtin.tensor"
    %in_t4 = irdl.base "!builtin.tensor"
    %in_t5 = irdl.base "!builtin.tensor"
    %in_t6 = irdl.base "!builtin.tensor"
    %in_t7 = irdl.base "!builtin.tensor"
    irdl.operands(in0: optional %in_t0, in1: optional %in_t1, in2: optional %in_t2, in3: optional %in_t3, in4: optional %in_t4, in5: optional %in_t5, in6: optional %in_t6, in7: optional %in_t7)
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
    %r = irdl.region
    irdl.regions(body: %r)
  }

  // Reduction of one axis with a monoid.
  irdl.operation @reduce {
    %axis = irdl.base "#builtin.string"
    %sum = irdl.is "sum"
    %max = irdl.is "max"
    %kind = irdl.any_of(%sum, %max)
    irdl.attributes { "axis" = %axis, "kind" = %kind }
    %input_t = irdl.base "!builtin.tensor"
    irdl.operands(input: %input_t)
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
  }

  // Softmax along one axis.
  irdl.operation @softmax {
    %axis = irdl.base "#builtin.string"
    irdl.attributes { "axis" = %axis }
    %input_t = irdl.base "!builtin.tensor"
    irdl.operands(input: %input_t)
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
  }

  // Masking by a predicate of positions: the entry at position i of axis `rows` and j of
  // axis `cols` is kept where the region yields true and becomes -inf elsewhere. The region
  // takes i, j, the full lengths of rows and cols (index) and one scalar per extra array
  // (read at the entry's position, broadcast by axis name, e.g. segment ids), and yields an
  // i1. Operands: the input; the tile's global offsets along rows and cols (none, or two,
  // inside a group or stream tile, with an `extents` attribute holding the full lengths);
  // up to four extra arrays. Causal masking is the region `j <= i`.
  irdl.operation @mask {
    %i = irdl.is index
    %rows = irdl.base "#builtin.string"
    %cols = irdl.base "#builtin.string"
    irdl.attributes { "rows" = %rows, "cols" = %cols }
    %input_t = irdl.base "!builtin.tensor"
    %in_t0 = irdl.base "!builtin.tensor"
    %in_t1 = irdl.base "!builtin.tensor"
    %in_t2 = irdl.base "!builtin.tensor"
    %in_t3 = irdl.base "!builtin.tensor"
    irdl.operands(input: %input_t, offsets: variadic %i, in0: optional %in_t0, in1: optional %in_t1, in2: optional %in_t2, in3: optional %in_t3)
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
    %r = irdl.region
    irdl.regions(predicate: %r)
  }

  // A constant array: every element is `value` (the head of a stream's state).
  irdl.operation @fill {
    %value = irdl.base "#builtin.float"
    irdl.attributes { "value" = %value }
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
  }

  // Transfer between memory levels: the result's level differs from the input's.
  irdl.operation @transfer {
    %input_t = irdl.base "!builtin.tensor"
    irdl.operands(input: %input_t)
    %out_t = irdl.base "!builtin.tensor"
    irdl.results(out: %out_t)
  }

  // Group partition: the body is applied independently to every group of `sizes`
  // elements along `axes`; inputs without an axis are passed whole to every group.
  // Body block arguments: one tile per operand, then one index offset per axis.
  irdl.operation @group {
    %axes = irdl.base "#builtin.array"
    %sizes = irdl.base "#builtin.dense_array"
    %level = irdl.base "#builtin.string"
    irdl.attributes { "axes" = %axes, "sizes" = %sizes, "level" = %level }
    %in_t0 = irdl.base "!builtin.tensor"
    %in_t1 = irdl.base "!builtin.tensor"
    %in_t2 = irdl.base "!builtin.tensor"
    %in_t3 = irdl.base "!builtin.tensor"
    %in_t4 = irdl.base "!builtin.tensor"
    %in_t5 = irdl.base "!builtin.tensor"
    %in_t6 = irdl.base "!builtin.tensor"
    %in_t7 = irdl.base "!builtin.tensor"
    irdl.operands(in0: optional %in_t0, in1: optional %in_t1, in2: optional %in_t2, in3: optional %in_t3, in4: optional %in_t4, in5: optional %in_t5, in6: optional %in_t6, in7: optional %in_t7)
    %out_t0 = irdl.base "!builtin.tensor"
    %out_t1 = irdl.base "!builtin.tensor"
    %out_t2 = irdl.base "!builtin.tensor"
    %out_t3 = irdl.base "!builtin.tensor"
    %out_t4 = irdl.base "!builtin.tensor"
    %out_t5 = irdl.base "!builtin.tensor"
    %out_t6 = irdl.base "!builtin.tensor"
    %out_t7 = irdl.base "!builtin.tensor"
    irdl.results(out0: optional %out_t0, out1: optional %out_t1, out2: optional %out_t2, out3: optional %out_t3, out4: optional %out_t4, out5: optional %out_t5, out6: optional %out_t6, out7: optional %out_t7)
    %r = irdl.region
    irdl.regions(body: %r)
  }

  // Stream partition: a sequential loop over chunks of `size` along `axis`,
  // carrying a state. init: () -> state; step: (chunks..., offset, state...) ->
  // state; finish: (state...) -> results.
  irdl.operation @stream {
    %axis = irdl.base "#builtin.string"
    %size = irdl.base "#builtin.integer"
    irdl.attributes { "axis" = %axis, "size" = %size }
    %in_t0 = irdl.base "!builtin.tensor"
    %in_t1 = irdl.base "!builtin.tensor"
    %in_t2 = irdl.base "!builtin.tensor"
    %in_t3 = irdl.base "!builtin.tensor"
    %in_t4 = irdl.base "!builtin.tensor"
    %in_t5 = irdl.base "!builtin.tensor"
    %in_t6 = irdl.base "!builtin.tensor"
    %in_t7 = irdl.base "!builtin.tensor"
    irdl.operands(in0: optional %in_t0, in1: optional %in_t1, in2: optional %in_t2, in3: optional %in_t3, in4: optional %in_t4, in5: optional %in_t5, in6: optional %in_t6, in7: optional %in_t7)
    %out_t0 = irdl.base "!builtin.tensor"
    %out_t1 = irdl.base "!builtin.tensor"
    %out_t2 = irdl.base "!builtin.tensor"
    %out_t3 = irdl.base "!builtin.tensor"
    %out_t4 = irdl.base "!builtin.tensor"
    %out_t5 = irdl.base "!builtin.tensor"
    %out_t6 = irdl.base "!builtin.tensor"
    %out_t7 = irdl.base "!builtin.tensor"
    irdl.results(out0: optional %out_t0, out1: optional %out_t1, out2: optional %out_t2, out3: optional %out_t3, out4: optional %out_t4, out5: optional %out_t5, out6: optional %out_t6, out7: optional %out_t7)
    %init = irdl.region
    %step = irdl.region
    %finish = irdl.region
    irdl.regions(init: %init, step: %step, finish: %finish)
  }
}
