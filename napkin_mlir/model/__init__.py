"""The performance model: hardware data (`hardware/`), the cost of a partitioned program
(transfers per level, peak memory, FLOPs, time, occupancy) and its pseudocode. It reads IR;
it never runs passes.
"""
