"""The CPU engine's tuning: every constant that picks a path or a size, in one place.

The kernels read ``TUNING`` at call time, so ``with tuned(cores=2, min_part_elements=1):``
reaches a path on any machine (the engine's tests do; so can a user probing a host).
Why each value is what it is: docs/performance.md.
"""

import contextlib
import dataclasses
import os


def detect_cores():
    """As many cores as OpenBLAS runs threads (OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS or
    OMP_NUM_THREADS, in OpenBLAS's order; one MPI process per core sets it to 1), at most
    the CPUs this process may run on."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    for name in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return min(int(value), cpus)
    return cpus


@dataclasses.dataclass
class Tuning:
    # threads over which memory-bound work is split (threads.in_parts)
    cores: int = dataclasses.field(default_factory=detect_cores)
    # below this many elements a part is not worth a thread: waking one takes 0.1-0.2 ms
    min_part_elements: int = 1 << 18
    # split only while OpenBLAS's idle threads sleep (OPENBLAS_THREAD_TIMEOUT, set by
    # scratchseg/__init__.py): spinning, they leave no core free for the parts
    blas_threads_sleep: bool = "OPENBLAS_THREAD_TIMEOUT" in os.environ
    # im2col columns per band: small enough to be read back from cache by the GEMM
    band_bytes: int = 8 * 2**20
    # columns up to this size stay one band: splitting the deep layers' GEMMs slows them
    single_band_bytes: int = 24 * 2**20
    # row shifts pay from this many output rows (on 32-row maps im2col was faster)
    row_shift_min_rows: int = 64
    # GEMM columns per row-shift band: its columns and product stay in a core's cache
    row_shift_band_columns: int = 4096


TUNING = Tuning()


@contextlib.contextmanager
def tuned(**changes):
    """Inside the block, TUNING has ``changes`` (field=value); restored after."""
    unknown = set(changes) - {field.name for field in dataclasses.fields(Tuning)}
    if unknown:
        raise ValueError(f"tuned: unknown setting(s) {sorted(unknown)}; the settings are "
                         f"{[field.name for field in dataclasses.fields(Tuning)]}")
    saved = {name: getattr(TUNING, name) for name in changes}
    for name, value in changes.items():
        setattr(TUNING, name, value)
    try:
        yield TUNING
    finally:
        for name, value in saved.items():
            setattr(TUNING, name, value)
