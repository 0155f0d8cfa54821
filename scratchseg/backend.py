"""The array-module switch: NumPy on the host, CuPy on a GPU, one code path.

Device code never imports numpy; it asks ``xp = get_array_module(x)`` and
writes ``xp.<name>``. Moving data between host and device is explicit:
``to_device(a, "cupy")`` and ``to_numpy(a)``.
"""

import importlib

import numpy

BACKENDS = ("numpy", "cupy")

_INSTALL_HINT = (
    "CuPy is not installed: pip install 'scratchseg[gpu]' (CUDA 12) or "
    "'scratchseg[gpu-cuda13]' (CUDA 13); pick the cupy-cudaXXx wheel that "
    "matches your CUDA driver (nvidia-smi shows it)"
)


def _cupy():
    """Import CuPy lazily, or return None when it is not installed."""
    try:
        return importlib.import_module("cupy")
    except ImportError:
        return None


def cupy_available():
    """True when CuPy imports and sees at least one CUDA device."""
    cupy = _cupy()
    if cupy is None:
        return False
    try:
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device: CuPy imports but cannot run
        return False


def _is_cupy_array(a):
    return type(a).__module__.startswith("cupy")


def get_array_module(*arrays):
    """Return numpy or cupy for the given arrays; None entries are ignored.

    Raises TypeError when NumPy and CuPy arrays are mixed, since an implicit
    transfer would hide a host-device copy.
    """
    kinds = {_is_cupy_array(a) for a in arrays if a is not None}
    if len(kinds) > 1:
        found = ", ".join(
            f"{type(a).__module__}.{type(a).__name__}" for a in arrays if a is not None
        )
        raise TypeError(
            "mixed NumPy and CuPy arrays; move them to one device first with "
            f"scratchseg.backend.to_device (got {found})"
        )
    if kinds == {True}:
        return _cupy()
    return numpy


def backend_name(array):
    """'cupy' for a CuPy array, else 'numpy'."""
    return "cupy" if _is_cupy_array(array) else "numpy"


def check_backend(name):
    """Validate a backend name and return it."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "cupy" and _cupy() is None:
        raise ValueError(_INSTALL_HINT)
    if name == "cupy" and not cupy_available():
        raise ValueError("CuPy is installed but cannot run: it sees no CUDA device (or no "
                         "driver that matches its CUDA version); use backend 'numpy'")
    return name


def to_device(array, backend):
    """Copy ``array`` to ``backend`` ("numpy" or "cupy"); a no-op when already there."""
    check_backend(backend)
    if backend == "numpy":
        return to_numpy(array)
    cupy = _cupy()
    return cupy.asarray(array)


def to_numpy(array):
    """Return a host NumPy array (copying from the GPU when needed)."""
    if _is_cupy_array(array):
        return array.get()
    return numpy.asarray(array)


def synchronize(backend):
    """Wait for queued GPU work (for honest timings); a no-op on NumPy."""
    if check_backend(backend) == "cupy":
        _cupy().cuda.Device().synchronize()
