"""scratchseg: a from-scratch deep-learning layer library on NumPy or CuPy, and the U-Net."""

import os
import sys

if "numpy" not in sys.modules:
    # OpenBLAS reads this when NumPy loads it. Its idle GEMM threads then sleep at once
    # instead of spinning for about 0.1 s after every product, which left the NumPy work
    # between the GEMMs no free core to be split over (scratchseg/functional/threads.py).
    # A value the user set stands.
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
