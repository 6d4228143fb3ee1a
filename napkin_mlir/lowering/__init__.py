"""Lowering of the relabeled diagram to the loop program (`scf.forall`, `scf.for`, `linalg` on
memrefs in level memory spaces): one rule per napkin op (`loops.py`).
"""
