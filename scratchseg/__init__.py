"""scratchseg: a from-scratch deep-learning layer library on NumPy or CuPy, and the U-Net."""

import os
import sys

if "numpy" not in sys.modules:
    # OpenBLAS reads this when NumPy loads it: its idle GEMM threads then sleep at once
    # instead of spinning, leaving the cores free for the CPU engine's split copies
    # (scratchseg/fast/threads.py). A value the user set stands.
    os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

from scratchseg.grad_mode import is_grad_enabled, no_grad  # noqa: E402
from scratchseg.ops import engine  # noqa: E402

__all__ = ["engine", "is_grad_enabled", "load_model", "no_grad"]


def load_model(path, backend="numpy"):
    """A trained model from a run folder (its best epoch's) or a model file: call
    ``.predict(image)`` on an (H, W), (C, H, W) or (H, W, C) array for its (H, W) mask.
    See scratchseg.inference.TrainedModel."""
    from scratchseg.inference import load_model as load  # imports matplotlib: only when used

    return load(path, backend)
