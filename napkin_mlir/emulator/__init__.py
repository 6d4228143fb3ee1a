"""The CPU emulator for GPU kernels: a kernel's gpu-stage IR run thread by thread on numpy,
with the PTX ISA's semantics and sanitizer-style checks.
"""
