"""Stochastic gradient descent and learning-rate schedules.

``SGD`` updates a model's parameters in place from its gradients, exactly as
``torch.optim.SGD`` with ``dampening=0``. ``make_schedule`` returns the
learning rate for each step; the trainer assigns it to ``opt.lr``.

Device code: the array module comes from the parameters, never from an import.
"""

import math
from functools import partial
from numbers import Integral

from scratchseg.backend import backend_name, get_array_module, to_device, to_numpy
from scratchseg.fast.threads import in_parts

SCHEDULES = ("constant", "step", "cosine")


def _check_hyperparameters(lr, momentum, nesterov, weight_decay):
    if not lr >= 0:
        raise ValueError(f"SGD: lr must be >= 0, got {lr!r}")
    if not 0 <= momentum < 1:
        raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum!r}")
    if nesterov and momentum == 0:
        raise ValueError("SGD: nesterov=True requires momentum > 0, got momentum=0")
    if not weight_decay >= 0:
        raise ValueError(f"SGD: weight_decay must be >= 0, got {weight_decay!r}")


class SGD:
    """SGD with momentum, Nesterov momentum and L2 weight decay, updating in place.

    Per parameter ``p`` with gradient ``grad``, momentum ``mu`` and buffer ``v``::

        g = grad + weight_decay * p
        v = mu * v + g                  (v = g on the first step)
        update = g + mu * v             if nesterov else v
        p -= lr * update

    With ``momentum=0`` no buffer is kept and ``update = g``.
    """

    def __init__(self, model, lr=0.01, momentum=0.99, nesterov=False, weight_decay=0.0):
        _check_hyperparameters(lr, momentum, nesterov, weight_decay)
        self.model = model
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        self._momentum_buffers = {}

    def _parameters_and_gradients(self):
        """(name, parameter, gradient) triples, checked to line up."""
        params = self.model.parameters()
        grads = self.model.gradients()
        param_names = [name for name, _ in params]
        grad_names = [name for name, _ in grads]
        if param_names != grad_names:
            raise ValueError(
                "SGD: model.parameters() and model.gradients() must name the same arrays in "
                f"the same order, got {param_names} and {grad_names}"
            )
        triples = []
        for (name, p), (_, grad) in zip(params, grads, strict=True):
            if p.shape != grad.shape:
                raise ValueError(
                    f"SGD: gradient of {name!r} has shape {grad.shape}, "
                    f"expected the parameter's {p.shape}"
                )
            triples.append((name, p, grad))
        return triples

    def step(self):
        """Apply one update to every parameter, in place, a slice of its rows per core
        (``in_parts``: the update is four passes over memory per parameter)."""
        for name, p, grad in self._parameters_and_gradients():
            xp = get_array_module(p, grad)
            v = None
            if self.momentum != 0:
                v = self._momentum_buffers.get(name)
                if v is None:  # v = mu * 0 + g = g on the first step
                    v = self._momentum_buffers[name] = xp.zeros_like(p)
            rows = [a if a is None or a.ndim else a[None] for a in (p, grad, v)]
            in_parts(xp, len(rows[0]), partial(self._update, xp, *rows), p.size)

    def _update(self, xp, p, grad, v, part):
        g = grad[part]
        if self.weight_decay != 0:
            g = xp.multiply(p[part], self.weight_decay)
            g += grad[part]
        update = g
        if v is not None:
            update = v[part]
            update *= self.momentum
            update += g
            if self.nesterov:
                update = xp.multiply(update, self.momentum)
                update += g
        target = p[part]
        target -= self.lr * update

    def state_dict(self):
        """Hyperparameters and host (NumPy) copies of the momentum buffers."""
        return {
            "lr": self.lr,
            "momentum": self.momentum,
            "nesterov": self.nesterov,
            "weight_decay": self.weight_decay,
            "momentum_buffers": {
                name: to_numpy(v).copy() for name, v in self._momentum_buffers.items()
            },
        }

    def load_state_dict(self, state):
        """Restore hyperparameters and momentum buffers (on each parameter's device, in
        its dtype), so that training continues exactly where ``state`` was taken."""
        _check_hyperparameters(
            state["lr"], state["momentum"], state["nesterov"], state["weight_decay"]
        )
        params = dict(self.model.parameters())
        buffers = {}
        for name, v in state["momentum_buffers"].items():
            if name not in params:
                raise ValueError(f"SGD: momentum buffer {name!r} matches no model parameter")
            p = params[name]
            if tuple(v.shape) != tuple(p.shape):
                raise ValueError(
                    f"SGD: momentum buffer {name!r} has shape {tuple(v.shape)}, "
                    f"expected the parameter's {tuple(p.shape)}"
                )
            buffers[name] = to_device(v, backend_name(p)).astype(p.dtype, copy=True)
        self.lr = state["lr"]
        self.momentum = state["momentum"]
        self.nesterov = state["nesterov"]
        self.weight_decay = state["weight_decay"]
        self._momentum_buffers = buffers


def _warmup(lr_at, base_lr, warmup_steps):
    """Linear warm-up ``base_lr * (step + 1) / warmup_steps`` for the first steps, then
    ``lr_at(step - warmup_steps)``."""

    def warmed_up(step):
        if step < warmup_steps:
            return base_lr * (step + 1) / warmup_steps
        return lr_at(step - warmup_steps)

    return warmed_up


def make_schedule(
    name, base_lr, total_steps, *, warmup_steps=0, step_size=None, gamma=0.1, min_lr=0.0
):
    """Return ``lr_at(step)``, the learning rate of step ``step`` (counted from 0).

    The first ``warmup_steps`` steps ramp linearly, ``base_lr * (step + 1) / warmup_steps``;
    the schedule then runs over the remaining ``T = total_steps - warmup_steps`` steps,
    with ``t`` counted from the end of the warm-up:

    - ``"constant"``: ``base_lr``.
    - ``"step"``: ``base_lr * gamma ** (t // step_size)``; ``step_size`` defaults to
      ``max(1, T // 3)`` (as ``torch.optim.lr_scheduler.StepLR``).
    - ``"cosine"``: ``min_lr + (base_lr - min_lr) * (1 + cos(pi * t / T)) / 2``, then
      ``min_lr`` from ``t = T`` on (as ``CosineAnnealingLR`` with ``T_max = T``).
    """
    if name not in SCHEDULES:
        raise ValueError(f"make_schedule: unknown schedule {name!r}; choose one of {SCHEDULES}")
    if not base_lr >= 0:
        raise ValueError(f"make_schedule: base_lr must be >= 0, got {base_lr!r}")
    if not (isinstance(total_steps, Integral) and total_steps >= 1):
        raise ValueError(f"make_schedule: total_steps must be an int >= 1, got {total_steps!r}")
    if not (isinstance(warmup_steps, Integral) and 0 <= warmup_steps < total_steps):
        raise ValueError(
            "make_schedule: warmup_steps must be an int in [0, total_steps), "
            f"got {warmup_steps!r} with total_steps={total_steps}"
        )
    if step_size is not None and not (isinstance(step_size, Integral) and step_size >= 1):
        raise ValueError(f"make_schedule: step_size must be an int >= 1, got {step_size!r}")
    if not gamma > 0:
        raise ValueError(f"make_schedule: gamma must be > 0, got {gamma!r}")
    if not 0 <= min_lr <= base_lr:
        raise ValueError(
            f"make_schedule: min_lr must be in [0, base_lr={base_lr!r}], got {min_lr!r}"
        )
    decay_steps = total_steps - warmup_steps

    if name == "constant":

        def lr_at(t):
            return base_lr

    elif name == "step":
        if step_size is None:
            step_size = max(1, decay_steps // 3)

        def lr_at(t):
            return base_lr * gamma ** (t // step_size)

    else:

        def lr_at(t):
            if t >= decay_steps:
                return min_lr
            return min_lr + (base_lr - min_lr) * (1 + math.cos(math.pi * t / decay_steps)) / 2

    schedule = _warmup(lr_at, base_lr, warmup_steps) if warmup_steps else lr_at

    def lr_at_step(step):
        if not (isinstance(step, Integral) and step >= 0):
            raise ValueError(f"lr schedule: step must be an int >= 0, got {step!r}")
        return schedule(step)

    return lr_at_step
