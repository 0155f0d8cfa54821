"""The one dispatch point: every op that layers and models run goes through here.

The names and signatures are those of ``scratchseg.functional``. A NumPy array
runs the engine chosen by ``with scratchseg.engine(name):`` or else by the
environment variable ``SCRATCHSEG_ENGINE``: ``fast`` (the default, the CPU engine
in ``scratchseg.fast``) or ``reference`` (``scratchseg.functional``, the ops the
docs show). A CuPy array always runs the reference ops: one large GEMM per
convolution is what a GPU wants. A forward's cache remembers its engine, so
its backward runs on the same one.
"""

import contextlib
import contextvars
import functools
import os

from scratchseg import fast, functional
from scratchseg.backend import backend_name

ENGINES = {"fast": fast, "reference": functional}
ENGINE_VARIABLE = "SCRATCHSEG_ENGINE"
DEFAULT_ENGINE = "fast"

_chosen = contextvars.ContextVar("scratchseg_engine", default=None)


def check_engine(name, source="engine"):
    """Return ``name`` if it names an engine, else a ValueError saying which exist."""
    if name not in ENGINES:
        raise ValueError(f"{source}: unknown engine {name!r}; choose one of "
                         f"{', '.join(map(repr, ENGINES))}")
    return name


def current_engine():
    """The engine NumPy arrays run now: engine()'s choice, else SCRATCHSEG_ENGINE's."""
    chosen = _chosen.get()
    if chosen is not None:
        return chosen
    return check_engine(os.environ.get(ENGINE_VARIABLE, DEFAULT_ENGINE), ENGINE_VARIABLE)


@contextlib.contextmanager
def engine(name):
    """Run the ops on NumPy arrays inside the block on engine ``name``."""
    token = _chosen.set(check_engine(name))
    try:
        yield
    finally:
        _chosen.reset(token)


def engine_for(array):
    """The module of ops that ``array`` runs on now: functional (reference) or fast."""
    if backend_name(array) == "cupy":
        return functional
    return ENGINES[current_engine()]


def _forward(name):
    """op_forward(x, ...) on x's engine; the cache is (engine, the engine's cache)."""
    reference = getattr(functional, name)

    @functools.wraps(reference)
    def forward(x, *args, **kwargs):
        module = engine_for(x)
        y, cache = getattr(module, name)(x, *args, **kwargs)
        return y, (None if cache is None else (module, cache))

    return forward


def _backward(name):
    """op_backward(dy, cache, ...) on the engine the forward ran on."""
    reference = getattr(functional, name)

    @functools.wraps(reference)
    def backward(dy, cache, *args, **kwargs):
        module, inner = (functional, None) if cache is None else cache
        return getattr(module, name)(dy, inner, *args, **kwargs)  # None: the op's own error

    return backward


conv2d_forward = _forward("conv2d_forward")
conv2d_backward = _backward("conv2d_backward")
conv_transpose2d_forward = _forward("conv_transpose2d_forward")
conv_transpose2d_backward = _backward("conv_transpose2d_backward")
max_pool2d_forward = _forward("max_pool2d_forward")
max_pool2d_backward = _backward("max_pool2d_backward")
relu_forward = _forward("relu_forward")
relu_backward = _backward("relu_backward")
concat_forward = _forward("concat_forward")
concat_backward = _backward("concat_backward")
dropout_forward = _forward("dropout_forward")
dropout_backward = _backward("dropout_backward")
batch_norm2d_forward = _forward("batch_norm2d_forward")
batch_norm2d_backward = _backward("batch_norm2d_backward")
softmax_cross_entropy_forward = _forward("softmax_cross_entropy_forward")
softmax_cross_entropy_backward = _backward("softmax_cross_entropy_backward")
dice_loss_forward = _forward("dice_loss_forward")
dice_loss_backward = _backward("dice_loss_backward")
linear_forward = _forward("linear_forward")
linear_backward = _backward("linear_backward")
roi_max_pool_forward = _forward("roi_max_pool_forward")
roi_max_pool_backward = _backward("roi_max_pool_backward")
smooth_l1_forward = _forward("smooth_l1_forward")
smooth_l1_backward = _backward("smooth_l1_backward")
sigmoid_cross_entropy_forward = _forward("sigmoid_cross_entropy_forward")
sigmoid_cross_entropy_backward = _backward("sigmoid_cross_entropy_backward")
center_crop = functional.center_crop
