"""The GPU backend: the SIMT rule and the NVVM/ptxas driver (`driver.py`), the tensor-core rule
(`tensorcore.py`), the PTX fragment layouts shared with the emulator (`fragments.py`) and the
runner for the GPU machine (`runner.py`). Importing this package loads nothing: `runner.py`
must run where only numpy, CuPy and JAX are installed.
"""
