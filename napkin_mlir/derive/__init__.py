"""Derivation decisions: tile sizes chosen from the cost model over the real derivation of a
diagram (`tiles.py`).
"""
