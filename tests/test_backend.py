"""The array-module switch and explicit device transfers (NumPy here; CuPy when it runs)."""

import numpy as np
import pytest

from scratchseg import backend


class FakeCupyArray:
    """Passes the backend's CuPy test (its module name) without a GPU."""

    __module__ = "cupy._core.core"


def test_get_array_module_is_numpy_for_numpy_arrays():
    assert backend.get_array_module(np.zeros(3)) is np
    assert backend.get_array_module(np.zeros(3), None, np.ones((2, 2))) is np
    assert backend.get_array_module() is np
    assert backend.get_array_module(None) is np
    assert backend.get_array_module(np.float32(1.0)) is np


def test_get_array_module_is_cupy_for_cupy_arrays():
    cupy = pytest.importorskip("cupy", reason="CuPy is not installed")
    assert backend.get_array_module(FakeCupyArray()) is cupy
    assert backend.get_array_module(None, FakeCupyArray()) is cupy


def test_mixed_arrays_raise_and_name_both_types():
    with pytest.raises(TypeError, match=r"mixed NumPy and CuPy.*numpy\.ndarray.*FakeCupyArray"):
        backend.get_array_module(np.zeros(2), FakeCupyArray())


def test_backend_name():
    assert backend.backend_name(np.zeros(1)) == "numpy"
    assert backend.backend_name(FakeCupyArray()) == "cupy"


def test_check_backend():
    assert backend.check_backend("numpy") == "numpy"
    assert backend.BACKENDS == ("numpy", "cupy")
    with pytest.raises(ValueError, match="backend must be one of"):
        backend.check_backend("jax")


def test_to_device_numpy_is_a_no_op_for_numpy_arrays():
    x = np.arange(6.0).reshape(2, 3)
    assert backend.to_device(x, "numpy") is x
    assert backend.to_numpy(x) is x


def test_to_numpy_converts_host_data():
    y = backend.to_numpy([[1.0, 2.0]])
    assert type(y) is np.ndarray and y.shape == (1, 2)
    y = backend.to_device(np.float32(2.5), "numpy")
    assert isinstance(y, np.ndarray) and y.dtype == np.float32


def test_to_numpy_calls_get_for_cupy_arrays():
    class FakeWithGet(FakeCupyArray):
        __module__ = "cupy._core.core"

        def get(self):
            return np.array([1.0, 2.0])

    assert np.array_equal(backend.to_numpy(FakeWithGet()), [1.0, 2.0])


def test_synchronize_is_a_no_op_on_numpy():
    assert backend.synchronize("numpy") is None
    with pytest.raises(ValueError):
        backend.synchronize("tpu")


def test_cupy_available_is_a_bool():
    assert isinstance(backend.cupy_available(), bool)


def test_cupy_available_is_false_without_cupy(monkeypatch):
    monkeypatch.setattr(backend, "_cupy", lambda: None)
    assert backend.cupy_available() is False


@pytest.mark.skipif(not backend.cupy_available(), reason="needs CuPy and a CUDA device")
def test_round_trip_through_cupy():
    import cupy

    x = np.random.default_rng(0).standard_normal((2, 3)).astype(np.float32)
    on_gpu = backend.to_device(x, "cupy")
    assert isinstance(on_gpu, cupy.ndarray) and backend.get_array_module(on_gpu) is cupy
    assert backend.to_device(on_gpu, "cupy") is on_gpu
    back = backend.to_numpy(on_gpu)
    assert type(back) is np.ndarray and back.dtype == np.float32 and np.array_equal(back, x)
    backend.synchronize("cupy")
