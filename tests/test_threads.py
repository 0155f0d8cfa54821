"""The CPU engine's in_parts: NumPy work split over threads gives the one-thread result."""

import os
import signal
import subprocess
import sys
import threading
import types

import numpy as np
import pytest
from conftest import distinct_values
from threadpoolctl import threadpool_info, threadpool_limits

from scratchseg.fast import (
    concat_backward,
    concat_forward,
    conv2d_backward,
    conv2d_forward,
    conv_transpose2d_backward,
    conv_transpose2d_forward,
    max_pool2d_backward,
    max_pool2d_forward,
    relu_backward,
    relu_forward,
    threads,
)
from scratchseg.fast.threads import in_parts
from scratchseg.fast.tuning import TUNING, detect_cores, tuned


def _record_parts(extent, elements):
    seen = []
    in_parts(np, extent, lambda part: seen.append((part, threading.current_thread().name)),
             elements)
    return seen


@pytest.mark.parametrize("count, extent", [(2, 10), (3, 10), (3, 3), (4, 7)])
def test_parts_cover_the_range_once_in_order(split_work, count, extent):
    split_work(count)
    seen = _record_parts(extent, elements=extent)
    slices = sorted((part.start, part.stop) for part, _ in seen)
    assert len(slices) == count
    assert slices[0][0] == 0 and slices[-1][1] == extent
    assert all(a[1] == b[0] and a[0] < a[1] for a, b in zip(slices, slices[1:]))
    first = [name for part, name in seen if part.start == 0]
    assert first == [threading.current_thread().name]  # the caller takes the first part


def test_small_work_cupy_single_cores_and_spinning_blas_run_once():
    with tuned(cores=2, blas_threads_sleep=True):
        small = 2 * TUNING.min_part_elements - 1
        assert [p for p, _ in _record_parts(8, small)] == [slice(0, 8)]
        assert len(_record_parts(8, small + 1)) == 2
        fake_cupy = types.SimpleNamespace(__name__="cupy")
        calls = []
        in_parts(fake_cupy, 8, calls.append, 10**9)
        assert calls == [slice(0, 8)]
    with tuned(cores=2, blas_threads_sleep=False):
        assert [p for p, _ in _record_parts(8, 10**9)] == [slice(0, 8)]
    with tuned(cores=1, blas_threads_sleep=True):
        assert [p for p, _ in _record_parts(8, 10**9)] == [slice(0, 8)]


def test_an_error_in_any_part_is_raised_after_every_part_is_done(split_work):
    split_work(3)
    finished = []

    def work(part):
        if part.start == 3:
            raise ValueError("part failed")
        finished.append(part.start)

    with pytest.raises(ValueError, match="part failed"):
        in_parts(np, 10, work, 10)
    assert sorted(finished) == [0, 6]


def test_a_call_from_inside_a_part_runs_in_one_piece(split_work):
    """Nested calls must not wait on the pool they run in (it would deadlock)."""
    split_work(2)
    inner = []
    in_parts(np, 4, lambda part: inner.append(_record_parts(6, 6)), 4)
    assert [len(seen) for seen in inner] == [1, 1]  # the caller's part too


def test_parts_run_in_the_callers_numpy_error_state_and_engine(split_work):
    """A diverging step silences NumPy's overflow warnings: every part must too."""
    from scratchseg.ops import current_engine, engine

    def state(part):
        return np.geterr()["over"], current_engine()

    split_work(2)
    with np.errstate(over="ignore"), engine("reference"):
        states = in_parts(np, 4, state, 10**9)
    assert len(states) > 1 and set(states) == {("ignore", "reference")}


def test_parts_return_their_results_in_order(split_work):
    split_work(3)
    assert in_parts(np, 9, lambda part: (part.start, part.stop), 9) == [(0, 3), (3, 6), (6, 9)]
    split_work(1)
    assert in_parts(np, 9, lambda part: (part.start, part.stop), 9) == [(0, 9)]


def test_parts_that_call_blas_run_it_one_thread_per_call_then_restore_it(split_work):
    split_work(2)

    def blas_threads(part=None):
        return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]

    with threadpool_limits(limits=2, user_api="blas"):
        assert set(blas_threads()) == {2}
        inside = in_parts(np, 4, blas_threads, 4, blas=True)
        assert len(inside) == 2 and all(set(counts) == {1} for counts in inside)
        without = in_parts(np, 4, blas_threads, 4)  # blas=False: BLAS left as it is
        assert all(set(counts) == {2} for counts in without)
        assert set(blas_threads()) == {2}


def test_a_second_caller_limits_blas_only_after_the_first_is_done(split_work):
    """Two callers on their own threads must not interleave their one-thread limits (A
    limits, B limits, A restores, B restores would leave BLAS on one thread), so B's
    parts start only after A's call has returned."""
    import time

    split_work(2)
    a_running, release, a_done, b_started = threading.Event(), threading.Event(), [], []

    def call_a():
        in_parts(np, 2, lambda part: (a_running.set(), release.wait(1.0)), 2, blas=True)
        a_done.append(time.perf_counter())

    def call_b():
        in_parts(np, 2, lambda part: b_started.append(time.perf_counter()), 2, blas=True)

    first = threading.Thread(target=call_a)
    first.start()
    a_running.wait(1.0)
    second = threading.Thread(target=call_b)
    second.start()
    time.sleep(0.05)
    release.set()
    first.join()
    second.join()
    assert a_done and len(b_started) == 2 and min(b_started) >= a_done[0]


def _ops_results(rng):
    """Outputs and gradients of every op of the CPU engine that splits its work, float64,
    distinct values; convolutions in bands of one row, and row shifts in one band too."""
    x = distinct_values(rng, (2, 5, 17, 19))
    w = rng.standard_normal((6, 5, 3, 3))
    b = rng.standard_normal(6)
    out = {}
    one_row_bands = dict(band_bytes=1, single_band_bytes=1, row_shift_band_columns=1)
    for path, min_rows in (("im2col", 10**6), ("row shifts", 1)):
        with tuned(row_shift_min_rows=min_rows, **one_row_bands):
            y, cache = conv2d_forward(x, w, b, padding=1)
            out[path] = (y, *conv2d_backward(rng.standard_normal(y.shape), cache))
    # one band for the whole layer: its shifted rows are added a part of the channels each
    with tuned(row_shift_min_rows=1, row_shift_band_columns=10**6):
        y, cache = conv2d_forward(x, w, b, padding=1)
        out["row shifts, one band"] = (y, *conv2d_backward(rng.standard_normal(y.shape), cache))
    with tuned(**one_row_bands):
        for path, stride in (("flipped kernel", 1), ("col2im", 2)):  # C > O; strided
            y, cache = conv2d_forward(x, w[:4], b[:4], stride=stride, padding=1)
            out[path] = (y, *conv2d_backward(rng.standard_normal(y.shape), cache))
        y, cache = conv_transpose2d_forward(x, rng.standard_normal((5, 3, 2, 2)), b[:3])
        out["up-conv"] = (y, *conv_transpose2d_backward(rng.standard_normal(y.shape), cache))
    y, cache = concat_forward(x, rng.standard_normal((2, 3, 15, 17)))
    out["concat"] = (y, *concat_backward(rng.standard_normal(y.shape), cache))
    y, cache = relu_forward(x)
    out["relu"] = (y, relu_backward(rng.standard_normal(y.shape), cache))
    for kernel, stride in ((2, 2), (3, 2)):
        y, cache = max_pool2d_forward(x, kernel, stride)
        out[f"pool {kernel}/{stride}"] = (y, max_pool2d_backward(rng.standard_normal(y.shape),
                                                                 cache))
    return out


@pytest.mark.parametrize("count", [2, 3])
def test_ops_in_parts_equal_the_ops_in_one_piece(split_work, count):
    split_work(1)
    whole = _ops_results(np.random.default_rng(5))
    split_work(count)
    split = _ops_results(np.random.default_rng(5))
    for name, arrays in whole.items():
        for k, (got, want) in enumerate(zip(split[name], arrays)):
            # copies and elementwise ops match bitwise; a weight gradient summed over each
            # core's bands of rows may add in another order (rounding relative to the
            # largest term)
            np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13 * np.abs(want).max(),
                                       err_msg=f"{name}, output {k}")


def _timeout_in_child(code, **env):
    environment = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    environment.update(env)
    return subprocess.run([sys.executable, "-c", code], env=environment, check=True,
                          capture_output=True, text=True).stdout.strip()


@pytest.mark.parametrize("env, cores", [({}, None), ({"OMP_NUM_THREADS": "1"}, 1),
                                        ({"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "2"}, 1),
                                        ({"OPENBLAS_NUM_THREADS": "999"}, None)])
def test_parts_follow_openblas_thread_count(env, cores, monkeypatch):
    for name in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert detect_cores() == (cores or len(os.sched_getaffinity(0)))


def test_importing_scratchseg_first_lets_openblas_threads_sleep():
    """...and only then is work split: with NumPy first, OpenBLAS's threads spin."""
    show = ("import os; from scratchseg.fast.tuning import TUNING; "
            "print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'), TUNING.blas_threads_sleep)")
    assert _timeout_in_child("import scratchseg; " + show) == "4 True"
    assert _timeout_in_child("import scratchseg; " + show, OPENBLAS_THREAD_TIMEOUT="9") == "9 True"
    assert _timeout_in_child("import numpy, scratchseg; " + show) == "None False"
    assert _timeout_in_child("import numpy, scratchseg; " + show,
                             OPENBLAS_THREAD_TIMEOUT="4") == "4 True"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_splits_work_on_a_pool_of_its_own(split_work):
    split_work(2)
    _record_parts(4, 4)  # the parent's pool now has a thread
    pid = os.fork()
    if pid == 0:  # the child: its copy of the pool has no thread behind it
        signal.alarm(20)  # a part queued to the parent's dead thread would wait forever
        seen = _record_parts(4, 4)
        os._exit(0 if len(seen) == 2 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_child_forked_while_blas_is_limited_can_limit_it_again(split_work):
    """A fork while another thread holds the one-thread-BLAS lock must not leave the
    child a lock that nothing will release."""
    split_work(2)
    with threads._blas_limited:  # as if a thread were inside a blas=True split
        pid = os.fork()
        if pid == 0:
            signal.alarm(20)  # waiting on the parent's lock would hang until then
            seen = in_parts(np, 4, lambda part: part, 4, blas=True)
            os._exit(0 if len(seen) == 2 else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
