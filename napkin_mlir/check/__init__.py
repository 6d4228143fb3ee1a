"""Checking results: JAX references and comparisons (`reference.py`), the correctness rule and
the verification harness (`harness.py`), CPU benchmarks (`bench.py`).
"""
