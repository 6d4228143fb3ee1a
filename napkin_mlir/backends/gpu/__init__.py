"""The GPU backend, one concern per module: the SIMT rule (`simt.py`), the tensor-core rule
(`tensorcore.py`, with its plan in `tensorcore_plan.py` and its MLIR emitter in
`tensorcore_emit.py`), the NVVM tail both rules share (`nvvm.py`), ptxas (`ptxas.py`), the
kernel description and its JSON sidecar (`sidecar.py`), the PTX fragment layouts shared with
the emulator (`fragments.py`) and the runner for the GPU machine (`runner.py`). Importing
this package loads nothing: `runner.py` must run where only numpy, CuPy and JAX are installed.
"""
