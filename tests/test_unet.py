"""The U-Net: the paper's sizes, gradient checks of the whole network, PyTorch agreement."""

import numpy as np
import pytest
import torch

from scratchseg.gradcheck import check_gradients, layer_functions
from scratchseg.nn import UNet
from scratchseg.nn.optim import SGD
from scratchseg.ops import softmax_cross_entropy_backward, softmax_cross_entropy_forward
from scratchseg.tools.torch_unet import TorchUNet

pytestmark = pytest.mark.usefixtures("each_engine")

TINY = [
    dict(padding="valid"),
    dict(padding="same"),
    dict(padding="valid", batch_norm=True),
    dict(padding="same", batch_norm=True, dropout=0.3),
    dict(padding="valid", dropout=0.5),
]


def test_paper_network_sizes_and_parameter_count():
    model = UNet()
    assert model.num_parameters() == 31_030_658
    assert model.output_size(572) == 388
    assert model.valid_input_size(188) == 188
    assert model.valid_input_size(189) == 204
    assert [n for n in range(180, 300) if model._trace_size(n)] == [188, 204, 220, 236, 252,
                                                                     268, 284]


def test_paper_valid_sizes_follow_16k_plus_12():
    model = UNet(base_channels=2)
    for k in range(11, 40):
        assert model.output_size(16 * k + 12) == 16 * k + 12 - 184


def test_invalid_input_size_names_the_nearest_valid_sizes():
    model = UNet(base_channels=2)
    with pytest.raises(ValueError, match="570; nearest valid sizes: 556 and 572"):
        model.output_size(570)
    with pytest.raises(ValueError, match="nearest valid sizes: 188"):
        model.forward(np.zeros((1, 1, 100, 188), dtype=np.float32))


def test_same_padding_keeps_the_size_and_needs_multiples_of_two_to_the_depth():
    model = UNet(base_channels=2, depth=3, padding="same")
    assert model.output_size(64) == 64
    assert model.valid_input_size(65) == 72
    with pytest.raises(ValueError, match="nearest valid sizes: 64 and 72"):
        model.output_size(66)


def test_wrong_channel_count_is_rejected():
    model = UNet(in_channels=3, base_channels=2, depth=1, padding="same")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model.forward(np.zeros((1, 1, 8, 8), dtype=np.float32))


def _model_check(model, x, mode):
    forward, backward, params, names = layer_functions(model)
    # random biases: with zero biases a dead 3x3 patch puts the next pre-activation
    # exactly on ReLU's kink, where central differences see half the slope
    rng = np.random.default_rng(9)
    params = [p + rng.normal(0.0, 0.1, p.shape) if n.endswith("bias") else p
              for n, p in zip(names, params)]

    def fixed_mask_forward(*inputs):
        if model.dropout is not None:
            model.dropout.reset_rng()
        return forward(*inputs)

    report = check_gradients(fixed_mask_forward, backward, [x, *params],
                             names=["x", *names], mode=mode)
    dead = [n for n, scale in zip(report.names, report.max_abs_gradient) if scale == 0]
    assert not dead, f"identically zero gradients prove nothing: {dead}"
    return report


@pytest.mark.parametrize("options", TINY, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_whole_unet_gradients_random_directions(options):
    model = UNet(in_channels=2, num_classes=3, base_channels=2, depth=2, seed=1, **options)
    size = model.valid_input_size(8 if options["padding"] == "same" else 40)
    x = np.random.default_rng(0).standard_normal((2, 2, size, size))
    report = _model_check(model, x, "random")
    assert len(report.names) == 1 + len(model.parameters())


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_whole_unet_gradients_every_element(padding):
    model = UNet(in_channels=1, num_classes=2, base_channels=1, depth=1, padding=padding,
                 batch_norm=True, seed=3)
    size = model.valid_input_size(6 if padding == "same" else 12)
    x = np.random.default_rng(1).standard_normal((2, 1, size, size))
    _model_check(model, x, "full")


def _torch_pair(options, seed=0):
    ours = UNet(in_channels=2, num_classes=3, base_channels=4, depth=2, seed=seed,
                dtype="float64", **options)
    theirs = TorchUNet(in_channels=2, num_classes=3, base_channels=4, depth=2,
                       **options).double()
    missing, unexpected = theirs.load_state_dict(
        {k: torch.from_numpy(v) for k, v in ours.state_dict().items()}, strict=False)
    assert unexpected == []
    assert all(name.endswith("num_batches_tracked") for name in missing)
    return ours, theirs


@pytest.mark.parametrize("options", TINY[:4], ids=lambda o: "-".join(f"{k}={v}"
                                                                      for k, v in o.items()))
def test_forward_and_backward_match_pytorch(options):
    options = {k: v for k, v in options.items() if k != "dropout"}
    ours, theirs = _torch_pair(options)
    size = ours.valid_input_size(16 if options["padding"] == "same" else 44)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 2, size, size))
    out = ours.output_size(size)
    labels = rng.integers(0, 3, (2, out, out))

    logits = ours.forward(x)
    loss, cache = softmax_cross_entropy_forward(logits, labels)
    dx = ours.backward(softmax_cross_entropy_backward(1.0, cache))

    tx = torch.tensor(x, requires_grad=True)
    t_logits = theirs(tx)
    t_loss = torch.nn.functional.cross_entropy(t_logits, torch.from_numpy(labels))
    t_loss.backward()

    np.testing.assert_allclose(logits, t_logits.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert float(loss) == pytest.approx(t_loss.item(), rel=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-8, atol=1e-14)
    t_params = dict(theirs.named_parameters())
    for name, grad in ours.gradients():
        np.testing.assert_allclose(grad, t_params[name].grad.numpy(), rtol=1e-8, atol=1e-13,
                                   err_msg=name)
    t_buffers = dict(theirs.named_buffers())
    for name, value in ours.named_buffers():
        np.testing.assert_allclose(value, t_buffers[name].numpy(), rtol=1e-12, err_msg=name)


def test_eval_mode_matches_pytorch_eval():
    ours, theirs = _torch_pair(dict(padding="same", batch_norm=True, dropout=0.5))
    x = np.random.default_rng(3).standard_normal((2, 2, 16, 16))
    ours.dropout.eval()  # masks differ between the frameworks; update BN stats without them
    theirs.dropout.eval()
    ours.forward(x)
    theirs(torch.from_numpy(x))
    ours.eval()
    theirs.eval()
    np.testing.assert_allclose(ours.forward(x), theirs(torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)


def test_float32_model_keeps_float32():
    model = UNet(base_channels=2, depth=2, padding="same")
    x = np.zeros((1, 1, 16, 16), dtype=np.float32)
    logits = model.forward(x)
    assert logits.dtype == np.float32
    assert model.backward(np.ones_like(logits)).dtype == np.float32
    assert all(g.dtype == np.float32 for _, g in model.gradients())


def test_parameters_and_gradients_share_names_and_order():
    model = UNet(base_channels=2, depth=2, batch_norm=True)
    assert [n for n, _ in model.parameters()] == [n for n, _ in model.gradients()]
    names = [n for n, _ in model.parameters()]
    assert names[0] == "encoder.0.conv1.weight" and names[-1] == "head.bias"
    assert "decoder.0.up.weight" in names and "bottleneck.bn2.bias" in names


def test_same_seed_same_network_and_state_dict_round_trip():
    a, b = UNet(base_channels=2, depth=2, seed=7), UNet(base_channels=2, depth=2, seed=7)
    for (na, va), (nb, vb) in zip(a.parameters(), b.parameters()):
        assert na == nb and np.array_equal(va, vb)
    c = UNet(base_channels=2, depth=2, seed=8)
    assert not np.array_equal(a.parameters()[0][1], c.parameters()[0][1])
    c.load_state_dict(a.state_dict())
    assert all(np.array_equal(va, vc) for (_, va), (_, vc) in zip(a.parameters(),
                                                                   c.parameters()))


def test_load_state_dict_rejects_mismatches():
    model = UNet(base_channels=2, depth=2)
    state = model.state_dict()
    with pytest.raises(ValueError, match="missing"):
        model.load_state_dict({k: v for k, v in state.items() if k != "head.bias"})
    state["head.weight"] = np.zeros((5, 2, 1, 1), dtype=np.float32)
    with pytest.raises(ValueError, match="head.weight has shape"):
        model.load_state_dict(state)


def test_gradients_accumulate_over_split_batches():
    model = UNet(base_channels=2, depth=2, padding="same", seed=4)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((4, 1, 16, 16))
    dy = rng.standard_normal((4, 2, 16, 16))
    model.astype("float64")
    model.forward(x)
    model.backward(dy)
    whole = [g.copy() for _, g in model.gradients()]
    model.zero_grad()
    for half in (slice(0, 2), slice(2, 4)):
        model.forward(x[half])
        model.backward(dy[half])
    for (name, g), w in zip(model.gradients(), whole):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("options", TINY[:3], ids=str)
def test_backward_without_input_grad_gives_the_same_parameter_gradients(options):
    """Training's backward (input_grad=False) skips only the image's gradient."""
    model = UNet(base_channels=2, depth=2, seed=1, dtype="float64", **options)
    x = np.random.default_rng(2).standard_normal((2, 1, 44, 44))
    logits = model.forward(x)
    dy = np.random.default_rng(3).standard_normal(logits.shape)
    model.backward(dy)
    full = [g.copy() for _, g in model.gradients()]
    model.zero_grad()
    model.forward(x)
    assert model.backward(dy, input_grad=False) is None
    for (name, g), ref in zip(model.gradients(), full):
        np.testing.assert_allclose(g, ref, rtol=1e-10, atol=1e-12, err_msg=name)


def test_backward_frees_the_caches():
    model = UNet(base_channels=2, depth=2, padding="same")
    logits = model.forward(np.zeros((1, 1, 16, 16), dtype=np.float32))
    model.backward(np.ones_like(logits))
    assert all(layer._cache is None for _, layer in model.named_layers())
    with pytest.raises(RuntimeError, match="without a forward"):
        model.backward(np.ones_like(logits))


def test_overfits_a_single_tile():
    model = UNet(base_channels=8, depth=2, padding="same", batch_norm=True, seed=0)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:32, :32]
    labels = (((yy - 12) ** 2 + (xx - 18) ** 2) < 64).astype(np.int64)[None]
    x = (labels * 0.6 + 0.2 + 0.05 * rng.standard_normal(labels.shape))[:, None]
    x = x.astype(np.float32)
    optimizer = SGD(model, lr=0.1, momentum=0.9)
    for _ in range(60):
        model.zero_grad()
        loss, cache = softmax_cross_entropy_forward(model.forward(x), labels)
        model.backward(softmax_cross_entropy_backward(1.0, cache))
        optimizer.step()
    assert float(loss) < 0.05
    model.eval()
    assert (model.forward(x).argmax(axis=1) == labels).mean() == 1.0
