"""The IR layer: named-axis array types, the op table, diagram builders, the Python verifier,
contexts with the dialect loaded, region helpers and the built-in diagrams. Imports nothing
above `napkin_mlir.errors`.
"""
