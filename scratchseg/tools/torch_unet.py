"""A PyTorch build of scratchseg's U-Net with the same parameter names: the reference oracle.

Written independently of scratchseg.nn.unet from the paper's description
(and DESIGN.md's naming), so agreement between the two is evidence, not an echo.
``load_torch_unet(path)`` builds it from a scratchseg model file. This module imports
torch; scratchseg's own modules never import it at import time, so scratchseg runs
without torch.
"""

import torch
from torch import nn

from scratchseg.training.checkpoint import load_model


def _block(c_in, c_out, pad, batch_norm):
    layers = {}
    for k, c in enumerate((c_in, c_out), start=1):
        layers[f"conv{k}"] = nn.Conv2d(c, c_out, 3, padding=pad, bias=not batch_norm)
        if batch_norm:
            layers[f"bn{k}"] = nn.BatchNorm2d(c_out)
        layers[f"relu{k}"] = nn.ReLU()
    return nn.Sequential(torch.nn.modules.container.OrderedDict(layers))


class _Up(nn.Module):
    def __init__(self, c, pad, batch_norm):
        super().__init__()
        self.up = nn.ConvTranspose2d(2 * c, c, 2, stride=2)
        block = _block(2 * c, c, pad, batch_norm)
        for name, layer in block.named_children():
            self.add_module(name, layer)
        self.names = [name for name, _ in block.named_children()]

    def forward(self, x, skip):
        x = self.up(x)
        h, w = x.shape[2:]
        top, left = (skip.shape[2] - h) // 2, (skip.shape[3] - w) // 2
        x = torch.cat([skip[:, :, top:top + h, left:left + w], x], dim=1)
        for name in self.names:
            x = getattr(self, name)(x)
        return x


class TorchUNet(nn.Module):
    def __init__(self, in_channels=1, num_classes=2, base_channels=64, depth=4, padding="valid",
                 batch_norm=False, dropout=0.0):
        super().__init__()
        pad = 1 if padding == "same" else 0
        widths = [base_channels * 2**i for i in range(depth + 1)]
        self.encoder = nn.ModuleList(
            _block(c_in, c, pad, batch_norm)
            for c_in, c in zip([in_channels] + widths[:-2], widths[:-1]))
        self.bottleneck = _block(widths[-2], widths[-1], pad, batch_norm)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.decoder = nn.ModuleList(_Up(c, pad, batch_norm) for c in widths[-2::-1])
        self.head = nn.Conv2d(base_channels, num_classes, 1)

    def forward(self, x):
        skips = []
        for block in self.encoder:
            x = block(x)
            skips.append(x)
            x = nn.functional.max_pool2d(x, 2)
        x = self.bottleneck(x)
        if self.dropout is not None:
            x = self.dropout(x)
        for up, skip in zip(self.decoder, reversed(skips)):
            x = up(x, skip)
        return self.head(x)


def load_torch_unet(path):
    """The TorchUNet of a scratchseg model file (``model.safetensors``), in eval mode.

    The architecture comes from the file's metadata ``config``; the tensors (read
    once, by ``checkpoint.load_model``, as ``safetensors.torch.load_file`` would give
    them) load with ``strict=True``, so every name and shape must match. A file written
    without batch-norm counters (``add_batch_norm_counters``) gets counters of 0,
    which PyTorch reads only when a BatchNorm2d's momentum is None. A missing or
    unreadable file, or one that is not a scratchseg model, is a ValueError
    naming ``path``.
    """
    arrays, config, _ = load_model(path)  # checks the format; names the path in its errors
    try:
        model = TorchUNet(**config)
    except TypeError as err:
        raise ValueError(f"cannot load {path}: config {config} does not fit TorchUNet: {err}"
                         ) from err
    tensors = {name: torch.from_numpy(array) for name, array in arrays.items()}
    counters = {name: torch.zeros((), dtype=torch.int64)
                for name in model.state_dict() if name.endswith(".num_batches_tracked")}
    try:
        model.load_state_dict({**counters, **tensors}, strict=True)
    except RuntimeError as err:
        raise ValueError(f"cannot load {path}: TorchUNet.load_state_dict failed: {err}"
                         ) from err
    return model.eval()
