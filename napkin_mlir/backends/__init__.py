"""The backends that consume the loop program or the partitioned program: the CPU
(`cpu.py`, MLIR's ExecutionEngine) and the GPU (`gpu/`).
"""
