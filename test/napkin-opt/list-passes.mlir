// --list-passes names every napkin pass with its summary and its options (type and default).
// RUN: %napkin-opt --list-passes | filecheck %s

// CHECK:      napkin passes
// CHECK:        --napkin-verify {{ *}}check axis names, sizes and element types of napkin ops
// CHECK-NEXT:     (no options)
// CHECK:        --napkin-group-partition
// CHECK:          axes=<list of str> {{ *}}default: (empty)
// CHECK:          sizes=<list of int> {{ *}}default: (empty)
// CHECK:          level=<str> {{ *}}default: grid
// CHECK:      Upstream MLIR passes
