"""Shared test settings and helpers.

A modest hypothesis profile keeps the whole suite fast on a small machine
(select another with HYPOTHESIS_PROFILE=thorough). Helpers that strategies
need at import time are plain functions here, imported with
``from conftest import ...``.
"""

import contextlib
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "scratchseg",
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile("thorough", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "scratchseg"))


def distinct_values(rng, shape, spacing=0.1):
    """Distinct values ``spacing`` apart, none within spacing/2 of 0 (a scaled permutation).

    No two elements tie (max-pool windows have one maximum) and none sits on
    ReLU's kink, so a finite-difference step of 1e-6 never crosses either.
    """
    size = int(np.prod(shape))
    values = (rng.permutation(size) - size // 2 + 0.5) * spacing
    return values.reshape(shape)


def disks(shape, centres, radius):
    """An int64 mask with disk k (1-based) of ``centres`` labelled k."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    mask = np.zeros(shape, np.int64)
    for k, (cy, cx) in enumerate(centres, start=1):
        mask[(yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2] = k
    return mask


def assert_close(actual, expected, rtol=1e-10, atol=None, err_msg=""):
    """Relative closeness against the largest reference magnitude (1e-10 by default).

    Elementwise relative error is meaningless for entries that cancel to ~0,
    so the absolute tolerance is rtol times the reference's largest entry
    (or ``atol`` when given, for references that are ~0 everywhere).
    """
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    if atol is None:
        atol = rtol * float(np.abs(expected).max(initial=0.0))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol,
                               err_msg=err_msg)


def to_torch(array, requires_grad=False):
    """A float64 (or integer) NumPy array as a torch tensor (imports torch lazily)."""
    import torch

    tensor = torch.from_numpy(np.array(array))
    if requires_grad:
        tensor.requires_grad_(True)
    return tensor


@pytest.fixture
def split_work():
    """A function that sets how many parts the CPU engine's in_parts makes of any work,
    however small (1 = no split), as if OpenBLAS's threads slept on that many cores."""
    from scratchseg.fast.tuning import tuned

    with contextlib.ExitStack() as settings:
        yield lambda count: settings.enter_context(
            tuned(cores=count, min_part_elements=1, blas_threads_sleep=True))


@pytest.fixture(params=["fast", "reference"])
def each_engine(request):
    """Run the test once on each engine: the op tests prove both (a module opts in with
    ``pytestmark = pytest.mark.usefixtures("each_engine")`` and calls scratchseg.ops)."""
    import scratchseg

    with scratchseg.engine(request.param):
        yield request.param


@pytest.fixture
def rng():
    """A fresh, seeded NumPy generator per test."""
    return np.random.default_rng(12345)


def check_one_gradient(forward, backward, inputs, index, **kwargs):
    """check_gradients on ``inputs[index]`` alone, every other input bound as a constant.

    ``forward(*inputs)`` and ``backward(dy, cache) -> tuple`` are an op's pair;
    the check sees a one-input op whose gradient is the backward's ``index``-th.
    """
    from scratchseg.gradcheck import check_gradients

    fixed = [np.asarray(a, dtype=np.float64) if a is not None else None for a in inputs]

    def bound_forward(value):
        args = list(fixed)
        args[index] = value
        return forward(*args)

    def bound_backward(dy, cache):
        return backward(dy, cache)[index]

    return check_gradients(bound_forward, bound_backward, [fixed[index]], **kwargs)
