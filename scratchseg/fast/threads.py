"""Memory-bound NumPy work split over the CPU's cores.

NumPy runs a copy or a ufunc on one core, while OpenBLAS runs every GEMM on all
of them, so between the GEMMs of a training step (im2col's copies, the row-shift
sums, ReLU, max-pool) the other cores would idle. NumPy releases the GIL inside
large copies and ufuncs, so the same calls made on disjoint slices from several
threads run at once. ``in_parts`` does that for an op written as a function of a
slice of one axis; for small work it calls the op once over the whole range.

The other cores are only free if OpenBLAS lets its threads sleep after a GEMM
instead of spinning: OPENBLAS_THREAD_TIMEOUT=4 makes them sleep, scratchseg sets
it when it is imported before NumPy (scratchseg/__init__.py), and work is split
only when it is set (``TUNING.blas_threads_sleep``).

Parts may run GEMMs of their own (``blas=True``): a convolution's bands of rows,
each built, multiplied and summed by one core while its data is in that core's
cache. BLAS then runs one thread per call while the parts run, so each part's
GEMMs stay on its own core (threadpoolctl sets the count; it is restored after).
"""

import contextlib
import contextvars
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

from threadpoolctl import ThreadpoolController

from scratchseg.fast.tuning import TUNING

_THREAD_PREFIX = "scratchseg-part"

_pool = None
_running = threading.local()  # .part: this thread is running a part (the caller's too)
_blas = None  # threadpoolctl's handle on the BLAS libraries loaded, found on first use
_blas_limited = threading.Lock()


def _forget_pool():
    global _pool, _blas_limited
    _pool = None  # a forked child has no threads behind the parent's pool
    _blas_limited = threading.Lock()  # nor the thread that may have held this lock


if hasattr(os, "register_at_fork"):  # POSIX; Windows has no fork
    os.register_at_fork(after_in_child=_forget_pool)


def even_slices(start, stop, count):
    """range(start, stop) as ``count`` consecutive slices whose lengths differ by one at most."""
    size = stop - start
    return [slice(start + size * k // count, start + size * (k + 1) // count)
            for k in range(count)]


def in_parts(xp, extent, work, elements, blas=False):
    """Call ``work(part)`` on consecutive slices ``part`` covering ``range(extent)`` and
    return the results, one per part, in order.

    On NumPy, with OpenBLAS's threads sleeping and ``elements`` (the op's
    element count) at least 2 * TUNING.min_part_elements, one slice per core, run
    concurrently, the caller's thread taking the first; otherwise (CuPy, small
    work, or a call from inside a part) ``work(slice(0, extent))`` alone. The
    parts must write disjoint outputs; an exception in any part is raised here.
    ``blas=True``: the parts call BLAS, which runs one thread per call meanwhile.
    """
    global _pool
    parts = min(TUNING.cores, extent, elements // TUNING.min_part_elements)
    nested = getattr(_running, "part", False)
    if xp.__name__ != "numpy" or not TUNING.blas_threads_sleep or parts < 2 or nested:
        return [work(slice(0, extent))]
    if _pool is None:
        _pool = ThreadPoolExecutor(max(TUNING.cores - 1, 1), thread_name_prefix=_THREAD_PREFIX)
    first_part, *other_parts = even_slices(0, extent, parts)
    with _one_blas_thread() if blas else contextlib.nullcontext():
        # each part runs in a copy of the caller's context: its NumPy error state, engine
        # and grad mode hold in the pool's threads too
        futures = [_pool.submit(contextvars.copy_context().run, _run_part, work, part)
                   for part in other_parts]
        try:
            first = _run_part(work, first_part)
        finally:
            wait(futures)  # no part may still be writing when this returns or raises
    return [first] + [future.result() for future in futures]


@contextlib.contextmanager
def _one_blas_thread():
    """BLAS on one thread per call inside, restored after, for one caller at a time (two
    interleaved would each restore the other's one thread)."""
    global _blas
    with _blas_limited:
        if _blas is None:
            _blas = ThreadpoolController().select(user_api="blas")
        with _blas.limit(limits=1):
            yield


def _run_part(work, part):
    """work(part), with calls to in_parts from inside it run whole: a nested split would
    wait for pool threads that are busy with the other parts."""
    _running.part = True
    try:
        return work(part)
    finally:
        _running.part = False
