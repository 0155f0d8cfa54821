"""SGD against torch.optim.SGD, exact resume, and the learning-rate schedules."""

import math

import numpy as np
import pytest
import torch

from scratchseg.backend import cupy_available
from scratchseg.nn.optim import SCHEDULES, SGD, make_schedule

SHAPES = {"conv.weight": (3, 2, 3, 3), "conv.bias": (3,), "norm.weight": (4,), "scale": ()}


class FakeModel:
    """The optimiser's view of a model: named parameters and gradients, in order."""

    def __init__(self, seed=0, dtype=np.float64):
        rng = np.random.default_rng(seed)
        self.params = {n: rng.standard_normal(s).astype(dtype) for n, s in SHAPES.items()}
        self.grads = {n: np.zeros(s, dtype) for n, s in SHAPES.items()}

    def parameters(self):
        return list(self.params.items())

    def gradients(self):
        return list(self.grads.items())


def random_gradients(num_steps, seed=1, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return [
        {n: rng.standard_normal(s).astype(dtype) for n, s in SHAPES.items()}
        for _ in range(num_steps)
    ]


def run(opt, model, gradients):
    for grads in gradients:
        for name, g in grads.items():
            model.grads[name][...] = g
        opt.step()


MOMENTUM_OPTIONS = [(0.0, False), (0.9, False), (0.9, True), (0.99, False), (0.99, True)]


@pytest.mark.parametrize("parts", [1, 3], ids=["whole", "in-parts"])
@pytest.mark.parametrize("weight_decay", [0.0, 1e-2])
@pytest.mark.parametrize("momentum, nesterov", MOMENTUM_OPTIONS)
def test_sgd_matches_torch(momentum, nesterov, weight_decay, parts, split_work):
    """Also with each parameter's rows updated in 3 parts on threads (in_parts)."""
    split_work(parts)
    model = FakeModel()
    torch_params = {n: torch.tensor(p.copy(), requires_grad=True) for n, p in model.parameters()}
    options = dict(lr=0.05, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay)
    opt = SGD(model, **options)
    torch_opt = torch.optim.SGD(list(torch_params.values()), **options)
    ids = [id(p) for _, p in model.parameters()]
    for grads in random_gradients(5):
        for name, g in grads.items():
            model.grads[name][...] = g
            torch_params[name].grad = torch.tensor(g)
        opt.step()
        torch_opt.step()
        for name, p in model.parameters():
            np.testing.assert_allclose(p, torch_params[name].detach().numpy(), rtol=0, atol=1e-12)
    assert [id(p) for _, p in model.parameters()] == ids, "parameters must be updated in place"


def test_sgd_leaves_gradients_alone_and_keeps_float32():
    model = FakeModel(dtype=np.float32)
    grads = random_gradients(1, dtype=np.float32)[0]
    run(SGD(model, momentum=0.9, nesterov=True, weight_decay=0.1), model, [grads])
    for name, g in model.gradients():
        np.testing.assert_array_equal(g, grads[name])
        assert model.params[name].dtype == np.float32


@pytest.mark.parametrize("nesterov", [False, True])
def test_state_dict_resume_is_bitwise(nesterov):
    gradients = random_gradients(6)
    straight = FakeModel()
    run(SGD(straight, lr=0.1, momentum=0.9, nesterov=nesterov), straight, gradients)

    resumed = FakeModel()
    first = SGD(resumed, lr=0.1, momentum=0.9, nesterov=nesterov)
    run(first, resumed, gradients[:3])
    state = first.state_dict()
    assert set(state["momentum_buffers"]) == set(SHAPES)
    assert all(type(v) is np.ndarray for v in state["momentum_buffers"].values())
    second = SGD(resumed, lr=0.5, momentum=0.5)
    second.load_state_dict(state)
    assert (second.lr, second.momentum, second.nesterov) == (0.1, 0.9, nesterov)
    run(second, resumed, gradients[3:])
    for name, p in straight.parameters():
        np.testing.assert_array_equal(resumed.params[name], p)


def test_state_dict_is_a_snapshot():
    model = FakeModel()
    opt = SGD(model, momentum=0.9)
    gradients = random_gradients(2)
    run(opt, model, gradients[:1])
    state = opt.state_dict()
    saved = {n: v.copy() for n, v in state["momentum_buffers"].items()}
    run(opt, model, gradients[1:])
    for name, v in state["momentum_buffers"].items():
        np.testing.assert_array_equal(v, saved[name])
    opt.load_state_dict(state)
    run(opt, model, gradients[1:])
    for name, v in state["momentum_buffers"].items():
        np.testing.assert_array_equal(v, saved[name])


@pytest.mark.parametrize(
    "options, word",
    [
        (dict(lr=-1.0), "lr"),
        (dict(lr=float("nan")), "lr"),
        (dict(momentum=1.0), "momentum"),
        (dict(momentum=-0.1), "momentum"),
        (dict(momentum=0.0, nesterov=True), "nesterov"),
        (dict(weight_decay=-1e-4), "weight_decay"),
    ],
)
def test_sgd_rejects_bad_options(options, word):
    with pytest.raises(ValueError, match=word):
        SGD(FakeModel(), **options)


def test_load_state_dict_rejects_mismatched_buffers():
    state = SGD(FakeModel()).state_dict()
    state["momentum_buffers"] = {"missing": np.zeros(3)}
    with pytest.raises(ValueError, match="missing"):
        SGD(FakeModel()).load_state_dict(state)
    state["momentum_buffers"] = {"conv.bias": np.zeros(4)}
    with pytest.raises(ValueError, match="shape"):
        SGD(FakeModel()).load_state_dict(state)


def test_step_rejects_misaligned_gradients():
    model = FakeModel()
    model.grads = dict(reversed(model.grads.items()))
    with pytest.raises(ValueError, match="same order"):
        SGD(model).step()
    model = FakeModel()
    model.grads["conv.bias"] = np.zeros(4)
    with pytest.raises(ValueError, match="conv.bias"):
        SGD(model).step()


def torch_lrs(make_scheduler, base_lr, num_steps):
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=base_lr)
    scheduler = make_scheduler(opt)
    lrs = []
    for _ in range(num_steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return lrs


def test_step_schedule_matches_torch():
    lr_at = make_schedule("step", 0.1, 30, step_size=7, gamma=0.5)
    expected = torch_lrs(lambda o: torch.optim.lr_scheduler.StepLR(o, 7, gamma=0.5), 0.1, 30)
    np.testing.assert_allclose([lr_at(s) for s in range(30)], expected, rtol=1e-12)


def test_step_schedule_default_step_size():
    lr_at = make_schedule("step", 1.0, 9)
    assert [lr_at(s) for s in (0, 2, 3, 5, 6, 8)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert make_schedule("step", 1.0, 2)(1) == pytest.approx(0.1)


def test_cosine_schedule_matches_torch():
    lr_at = make_schedule("cosine", 0.1, 20, min_lr=1e-3)
    expected = torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20, eta_min=1e-3), 0.1, 21
    )
    np.testing.assert_allclose([lr_at(s) for s in range(21)], expected, rtol=1e-10)
    assert lr_at(20) == lr_at(1000) == 1e-3


def test_warmup_then_schedule():
    constant = make_schedule("constant", 0.4, 10, warmup_steps=4)
    assert [constant(s) for s in range(6)] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.4, 0.4])
    cosine = make_schedule("cosine", 0.4, 8, warmup_steps=4)
    cos = [0.2 * (1 + math.cos(math.pi * t / 4)) for t in range(4)]
    expected = [0.1, 0.2, 0.3, 0.4, *cos]
    assert cos[0] == 0.4 and cos[2] == pytest.approx(0.2)
    assert [cosine(s) for s in range(8)] == pytest.approx(expected)
    step = make_schedule("step", 1.0, 5, warmup_steps=2, step_size=1, gamma=0.5)
    assert [step(s) for s in range(5)] == pytest.approx([0.5, 1.0, 1.0, 0.5, 0.25])


@pytest.mark.parametrize(
    "args, options, word",
    [
        (("linear", 0.1, 10), {}, "cosine"),
        (("constant", -0.1, 10), {}, "base_lr"),
        (("constant", 0.1, 0), {}, "total_steps"),
        (("constant", 0.1, 10), dict(warmup_steps=10), "warmup_steps"),
        (("constant", 0.1, 10), dict(warmup_steps=-1), "warmup_steps"),
        (("step", 0.1, 10), dict(step_size=0), "step_size"),
        (("step", 0.1, 10), dict(gamma=0.0), "gamma"),
        (("cosine", 0.1, 10), dict(min_lr=0.2), "min_lr"),
    ],
)
def test_make_schedule_rejects_bad_options(args, options, word):
    with pytest.raises(ValueError, match=word):
        make_schedule(*args, **options)


def test_schedule_rejects_negative_step():
    assert set(SCHEDULES) == {"constant", "step", "cosine"}
    with pytest.raises(ValueError, match="step"):
        make_schedule("constant", 0.1, 10)(-1)


@pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a CUDA device")
def test_sgd_on_cupy_matches_numpy_and_resumes_from_host_state():
    import cupy

    gradients = random_gradients(4)
    host = FakeModel()
    run(SGD(host, momentum=0.9, nesterov=True, weight_decay=1e-2), host, gradients)

    device = FakeModel()
    device.params = {n: cupy.asarray(p) for n, p in device.params.items()}
    device.grads = {n: cupy.asarray(g) for n, g in device.grads.items()}
    first = SGD(device, momentum=0.9, nesterov=True, weight_decay=1e-2)
    run(first, device, gradients[:2])
    state = first.state_dict()
    assert all(type(v) is np.ndarray for v in state["momentum_buffers"].values())
    second = SGD(device)
    second.load_state_dict(state)
    run(second, device, gradients[2:])
    for name, p in host.parameters():
        np.testing.assert_allclose(cupy.asnumpy(device.params[name]), p, rtol=0, atol=1e-12)
