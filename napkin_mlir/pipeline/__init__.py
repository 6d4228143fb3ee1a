"""The pipeline in one place: its stages and upstream tails (`stages.py`) and the pass manager
that runs napkin passes beside upstream ones, with dumps and printing (`passmanager.py`).
"""
