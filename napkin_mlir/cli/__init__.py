"""Command-line drivers: `napkin` (subcommands) and `napkin-opt` (mlir-opt style)."""
