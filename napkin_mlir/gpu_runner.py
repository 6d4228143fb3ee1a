"""The GPU runner's earlier address: `python -m napkin_mlir.gpu_runner` still works.

The runner lives in `napkin_mlir.backends.gpu.runner`; this module only forwards to it, so
scripts written for the earlier layout keep running on the GPU machine (no MLIR needed).
"""

from __future__ import annotations

import sys

from napkin_mlir.backends.gpu.runner import *  # noqa: F403
from napkin_mlir.backends.gpu.runner import main

if __name__ == "__main__":
    sys.exit(main())
