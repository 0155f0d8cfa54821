"""A per-layer table of a U-Net: output shape, parameters, forward FLOPs, activation memory.

Shapes are followed analytically (no forward pass, so the paper's 572x572
network is summarised instantly). FLOPs count a multiply-add as 2:
conv 2 C_in kH kW C_out H' W', up-conv 2 C_in C_out kH kW H W, and one FLOP
per output element for ReLU and per window element for max-pool. Activation
memory is the output's bytes at the model's dtype.
"""

from dataclasses import dataclass

from scratchseg.nn.layers import BatchNorm2d, Conv2d, ConvTranspose2d, Dropout, MaxPool2d, ReLU


@dataclass
class SummaryRow:
    name: str
    kind: str
    output_shape: tuple
    parameters: int
    flops: int
    activation_bytes: int


def _layer_row(name, layer, shape, itemsize):
    n, c, h, w = shape
    params = sum(int(a.size) for a in layer.params.values())
    if isinstance(layer, Conv2d):
        c_out, _, kh, kw = layer.params["weight"].shape
        pad = layer.padding
        h, w = h + 2 * pad - kh + 1, w + 2 * pad - kw + 1
        out = (n, c_out, h, w)
        flops = 2 * c * kh * kw * c_out * h * w * n
    elif isinstance(layer, ConvTranspose2d):
        _, c_out, kh, kw = layer.params["weight"].shape
        out = (n, c_out, 2 * h, 2 * w)
        flops = 2 * c * c_out * kh * kw * h * w * n
    elif isinstance(layer, MaxPool2d):
        out = (n, c, h // 2, w // 2)
        flops = 4 * n * c * (h // 2) * (w // 2)
    elif isinstance(layer, (ReLU, BatchNorm2d, Dropout)):
        out = shape
        flops = (4 if isinstance(layer, BatchNorm2d) else 1) * n * c * h * w
    else:
        raise TypeError(f"summary: unknown layer {type(layer).__name__}")
    size = out[0] * out[1] * out[2] * out[3]
    return SummaryRow(name, type(layer).__name__, out, params, flops, size * itemsize)


def unet_summary(model, input_size, batch_size=1):
    """Rows for every layer of ``model`` (a UNet) on a square ``input_size`` input."""
    model.output_size(input_size)
    itemsize = model.head.params["weight"].dtype.itemsize
    shape = (batch_size, model.config["in_channels"], input_size, input_size)
    rows, skips = [], []

    def run(prefix, layers):
        nonlocal shape
        for name, layer in layers:
            row = _layer_row(f"{prefix}.{name}" if prefix else name, layer, shape, itemsize)
            rows.append(row)
            shape = row.output_shape

    for i, (block, pool) in enumerate(zip(model.encoder, model.pools)):
        run(f"encoder.{i}", block.children.items())
        skips.append(shape)
        run(f"encoder.{i}", [("pool", pool)])
    run("bottleneck", model.bottleneck.children.items())
    if model.dropout is not None:
        run("", [("dropout", model.dropout)])
    for i, block in enumerate(model.decoder):
        run(f"decoder.{i}", [("up", block.up)])
        skip = skips[-1 - i]
        shape = (shape[0], shape[1] + skip[1], shape[2], shape[3])
        rows.append(SummaryRow(f"decoder.{i}.concat", "Concat", shape, 0, 0,
                               shape[0] * shape[1] * shape[2] * shape[3] * itemsize))
        run(f"decoder.{i}", block.convs.children.items())
    run("", [("head", model.head)])
    return rows


def format_summary(rows):
    """The rows as a text table with totals."""
    header = f"{'layer':<24} {'kind':<16} {'output shape':<22} {'params':>12} " \
             f"{'GFLOPs':>9} {'act. MiB':>9}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.name:<24} {r.kind:<16} {str(r.output_shape):<22} "
                     f"{r.parameters:>12,} {r.flops / 1e9:>9.3f} "
                     f"{r.activation_bytes / 2**20:>9.2f}")
    lines.append("-" * len(header))
    lines.append(f"{'total':<63} {sum(r.parameters for r in rows):>12,} "
                 f"{sum(r.flops for r in rows) / 1e9:>9.3f} "
                 f"{sum(r.activation_bytes for r in rows) / 2**20:>9.2f}")
    return "\n".join(lines)
