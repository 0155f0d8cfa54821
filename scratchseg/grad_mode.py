"""Inference mode: forwards that keep nothing for a backward, as PyTorch's ``no_grad``.

Every op's forward returns ``(output, cache)``. Under ``with no_grad():`` the
cache is None, so a forward pass holds no activations beyond the ones it
still needs, and a backward on such a forward is a clear error. The mode is
per thread (a ``contextvars.ContextVar``), as in PyTorch.
"""

import contextlib
import contextvars

_grad_enabled = contextvars.ContextVar("scratchseg_grad_enabled", default=True)


def is_grad_enabled():
    """False inside ``with no_grad():``."""
    return _grad_enabled.get()


@contextlib.contextmanager
def no_grad():
    """Run forwards without caches (inference: predict, evaluate, validation)."""
    token = _grad_enabled.set(False)
    try:
        yield
    finally:
        _grad_enabled.reset(token)


def saved_for_backward(*items):
    """An op's cache: ``items`` as a tuple, or None under ``no_grad()``."""
    return items if _grad_enabled.get() else None
