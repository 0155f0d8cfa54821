"""Benchmarks against PyTorch: every U-Net op, forward and backward, and one training step.

Each framework runs in its own subprocess (``python -m scratchseg.bench --worker ...``),
so NumPy's OpenBLAS threads and PyTorch's thread pool never share a process (OpenBLAS
workers that spin after a NumPy GEMM slow a PyTorch call made right after) and each
step's peak RSS (``ru_maxrss``, read in the child right after the timed steps) is its
own. A worker times each call after warm-up (synchronising the GPU around every timed
call) and a float32 2048^3 GEMM (NumPy / CuPy ``@``, ``torch.mm``) before and after the
rest: the faster block's median is the peak its framework's BLAS reaches in that
process. The parent computes GFLOP/s and the fraction of that peak and prints markdown
tables. Ratios are scratchseg / torch: above 1, scratchseg is slower (or uses more memory).

Forward ops are timed as in training (PyTorch inputs require grad, so it records its
graph; scratchseg builds its cache); a backward is timed on one forward's cache or graph.

FLOPs count a multiply-add as 2. A convolution's backward computes dx and dw: twice its
forward. ReLU, max-pool, concat and the loss are memory-bound and get no FLOP rate. The
step is 3x the forward FLOPs of ``unet_summary``.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy

REFERENCE = dict(batch=1, in_channels=1, num_classes=2, base_channels=32, depth=4, size=256)
QUICK = dict(batch=1, in_channels=1, num_classes=2, base_channels=4, depth=2, size=16)
COMPARES = ("torch", "none")
WHICH = ("all", "ops", "step")
RECORD_KEYS = ("name", "pass", "framework", "backend", "device", "library", "threads", "shape",
               "count", "median_ms", "min_ms", "times_ms", "repeats", "warmup", "gflops",
               "gflops_per_s", "gemm_peak_gflops_per_s", "frac_gemm_peak", "peak_rss_mib",
               "import_rss_mib", "peak_device_mib")


def reference_config(quick=False):
    """The benchmarked U-Net (same padding, float32): the issue's reference, or a tiny one."""
    return dict(QUICK if quick else REFERENCE)


def _settings(quick, repeats, warmup):
    op_reps, step_reps, warm, gemm = (2, 2, 1, 256) if quick else (10, 5, 2, 2048)
    return dict(op_repeats=repeats or op_reps, step_repeats=repeats or step_reps,
                warmup=warm if warmup is None else warmup, gemm_n=gemm)


def _dims(*shape):
    return "x".join(str(int(d)) for d in shape)


def op_specs(config):
    """The distinct ops of one U-Net training step in forward order, each with its count.

    A spec is a dict: name, args (sizes), shape (a label), count (uses per step) and
    flops (forward FLOPs; None for memory-bound ops).
    """
    n, size, depth = config["batch"], config["size"], config["depth"]
    widths = [config["base_channels"] * 2**level for level in range(depth + 1)]
    specs = {}

    def add(name, label, flops=None, **args):
        key = (name, label)
        if key in specs:
            specs[key]["count"] += 1
        else:
            specs[key] = dict(name=name, args=dict(n=n, **args), shape=label, count=1,
                              flops=flops)

    def conv(c_in, c_out, s, k=3):
        pad = (k - 1) // 2
        add("conv2d", f"{_dims(n, c_in, s, s)} -> {c_out}, {k}x{k} p{pad}",
            2 * n * c_in * c_out * k * k * s * s, c_in=c_in, c_out=c_out, s=s, k=k, pad=pad)

    def relu(c, s):
        add("relu", _dims(n, c, s, s), c=c, s=s)

    c_in = config["in_channels"]
    for level, c in enumerate(widths[:-1]):
        s = size >> level
        conv(c_in, c, s), relu(c, s), conv(c, c, s), relu(c, s)
        add("max_pool2d", f"{_dims(n, c, s, s)}, 2x2", c=c, s=s)
        c_in = c
    s = size >> depth
    conv(widths[-2], widths[-1], s), relu(widths[-1], s)
    conv(widths[-1], widths[-1], s), relu(widths[-1], s)
    for c in widths[-2::-1]:
        add("conv_transpose2d", f"{_dims(n, 2 * c, s, s)} -> {c}, 2x2 s2",
            2 * n * 2 * c * c * 4 * s * s, c_in=2 * c, c_out=c, s=s)
        s *= 2
        add("concat", f"{_dims(n, c, s, s)} + {_dims(n, c, s, s)}", c=c, s=s)
        conv(2 * c, c, s), relu(c, s), conv(c, c, s), relu(c, s)
    conv(widths[0], config["num_classes"], size, k=1)
    add("softmax_cross_entropy", _dims(n, config["num_classes"], size, size),
        c=config["num_classes"], s=size)
    return list(specs.values())


def step_gflops(config):
    """GFLOP of one training step: 3x the forward FLOPs of ``unet_summary``."""
    from scratchseg.models import UNet
    from scratchseg.models.summary import unet_summary

    model = UNet(config["in_channels"], config["num_classes"], config["base_channels"],
                 config["depth"], padding="same")
    return 3 * sum(row.flops for row in unet_summary(model, config["size"], config["batch"])) / 1e9


def step_label(config):
    c = config
    return (f"{_dims(c['batch'], c['in_channels'], c['size'], c['size'])}, base "
            f"{c['base_channels']}, depth {c['depth']}, same, {c['num_classes']} classes")


def build_torch_unet(config):
    """The same U-Net (same padding) in torch.nn: what the PyTorch step benchmark trains."""
    import torch
    from torch import nn

    def block(c_in, c):
        return nn.Sequential(nn.Conv2d(c_in, c, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(c, c, 3, padding=1), nn.ReLU())

    widths = [config["base_channels"] * 2**level for level in range(config["depth"] + 1)]

    class TorchUNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.ModuleList(block(c_in, c) for c_in, c in
                                         zip([config["in_channels"]] + widths[:-2], widths[:-1]))
            self.bottleneck = block(widths[-2], widths[-1])
            self.ups = nn.ModuleList(nn.ConvTranspose2d(2 * c, c, 2, stride=2)
                                     for c in widths[-2::-1])
            self.decoder = nn.ModuleList(block(2 * c, c) for c in widths[-2::-1])
            self.head = nn.Conv2d(widths[0], config["num_classes"], 1)

        def forward(self, x):
            skips = []
            for encode in self.encoder:
                x = encode(x)
                skips.append(x)
                x = nn.functional.max_pool2d(x, 2)
            x = self.bottleneck(x)
            for up, decode, skip in zip(self.ups, self.decoder, reversed(skips)):
                x = decode(torch.cat([skip, up(x)], dim=1))
            return self.head(x)

    return TorchUNet()


# -- the worker: runs in its own process, one framework -------------------------------------


def _peak_rss_mib():
    try:
        import resource
    except ImportError:  # not Unix
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes / KiB


def _time_calls(fn, sync, repeats, warmup):
    for _ in range(warmup):
        fn()
        sync()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return times


class _Framework:
    """What differs between scratchseg (NumPy/CuPy) and PyTorch: arrays, sync, ops, step."""

    def __init__(self, name, backend):
        self.name, self.backend = name, backend
        self.device = "cuda" if backend == "cupy" else "cpu"
        self.rng = numpy.random.default_rng(0)
        if name == "torch":
            import torch

            self.torch = torch
            self.library = f"torch {torch.__version__}"
            self.threads = torch.get_num_threads()
            if self.device == "cuda":  # full float32, as CuPy computes: no TF32 convs or GEMMs
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False
            self.sync = torch.cuda.synchronize if self.device == "cuda" else (lambda: None)
        else:
            from scratchseg.backend import check_backend, synchronize

            check_backend(backend)
            self.library = f"{backend} {sys.modules.get(backend, numpy).__version__}"
            self.threads = None
            self.sync = lambda: synchronize(backend)

    def array(self, *shape, scale=1.0, grad=True):
        host = (self.rng.standard_normal(shape) * scale).astype(numpy.float32)
        return self._wrap(host, grad)

    def labels(self, classes, *shape):
        return self._wrap(self.rng.integers(0, classes, shape), False)

    def _wrap(self, host, grad):
        if self.name == "torch":
            tensor = self.torch.from_numpy(host).to(self.device)
            return tensor.requires_grad_(grad) if tensor.is_floating_point() else tensor
        from scratchseg.backend import to_device

        return to_device(host, self.backend)

    def op(self, spec):
        """(forward, backward) callables for one op spec; the backward reuses one forward."""
        a, labels = spec["args"], None
        n, s, name = a["n"], a["s"], spec["name"]
        if name in ("conv2d", "conv_transpose2d"):
            k = a.get("k", 2)
            c_in, c_out = a["c_in"], a["c_out"]
            w_shape = (c_out, c_in, k, k) if name == "conv2d" else (c_in, c_out, k, k)
            inputs = (self.array(n, c_in, s, s), self.array(*w_shape, scale=(2 / c_in) ** 0.5),
                      self.array(c_out, scale=0.1))
            options = dict(padding=a["pad"]) if name == "conv2d" else dict(stride=2)
        elif name == "concat":
            inputs, options = (self.array(n, a["c"], s, s), self.array(n, a["c"], s, s)), {}
        elif name == "softmax_cross_entropy":
            inputs, options = (self.array(n, a["c"], s, s),), {}
            labels = self.labels(a["c"], n, s, s)
        else:
            inputs = (self.array(n, a["c"], s, s),)
            options = dict(kernel_size=2) if name == "max_pool2d" else {}
        if self.name == "torch":
            return self._torch_op(name, inputs, options, labels)
        from scratchseg import functional as F

        fwd = getattr(F, f"{name}_forward")
        bwd = getattr(F, f"{name}_backward")
        if name == "softmax_cross_entropy":
            forward = lambda: fwd(inputs[0], labels)  # noqa: E731
            _, cache = forward()
            return forward, lambda: bwd(1.0, cache)
        forward = lambda: fwd(*inputs, **options)  # noqa: E731
        y, cache = forward()
        dy = self.array(*y.shape)
        return forward, lambda: bwd(dy, cache)

    def _torch_op(self, name, inputs, options, labels):
        torch, F = self.torch, self.torch.nn.functional
        fn = {"conv2d": F.conv2d, "conv_transpose2d": F.conv_transpose2d,
              "max_pool2d": F.max_pool2d, "relu": F.relu,
              "concat": lambda skip, x: torch.cat([skip, x], dim=1),
              "softmax_cross_entropy": lambda z: F.cross_entropy(z, labels)}[name]
        forward = lambda: fn(*inputs, **options)  # noqa: E731  (a graph, as in training)
        y = forward()
        dy = None if y.ndim == 0 else torch.randn_like(y)
        return forward, lambda: torch.autograd.grad(y, inputs, dy, retain_graph=True)

    def step(self, config, lr):
        """A training-step callable: zero_grad, forward, loss, backward, SGD(momentum 0.99)."""
        n, c, s = config["batch"], config["in_channels"], config["size"]
        x, labels = self.array(n, c, s, s, grad=False), self.labels(config["num_classes"], n, s, s)
        if self.name == "torch":
            model = build_torch_unet(config).to(self.device)
            opt = self.torch.optim.SGD(model.parameters(), lr=lr, momentum=0.99)

            def step():
                opt.zero_grad()
                loss = self.torch.nn.functional.cross_entropy(model(x), labels)
                loss.backward()
                opt.step()

            return step
        from scratchseg import functional as F
        from scratchseg.models import UNet
        from scratchseg.optim import SGD

        model = UNet(c, config["num_classes"], config["base_channels"], config["depth"],
                     padding="same", backend=self.backend)
        opt = SGD(model, lr=lr, momentum=0.99)

        def step():
            model.zero_grad()
            loss, cache = F.softmax_cross_entropy_forward(model.forward(x), labels)
            model.backward(F.softmax_cross_entropy_backward(1.0, cache))
            opt.step()

        return step

    def gemm(self, size):
        a, b = self.array(size, size, grad=False), self.array(size, size, grad=False)
        return (lambda: self.torch.mm(a, b)) if self.name == "torch" else (lambda: a @ b)

    def device_peak_mib(self):
        """Peak GPU memory (PyTorch's allocator peak; CuPy's pool size), None on the CPU."""
        if self.device != "cuda":
            return None
        if self.name == "torch":
            return self.torch.cuda.max_memory_allocated() / 2**20
        return sys.modules["cupy"].get_default_memory_pool().total_bytes() / 2**20

    def record(self, name, pass_, shape, times, warmup, **extra):
        rec = dict.fromkeys(RECORD_KEYS)
        rec.update(name=name, framework=self.name, shape=shape, times_ms=times,
                   median_ms=statistics.median(times), min_ms=min(times), repeats=len(times),
                   warmup=warmup, backend="torch" if self.name == "torch" else self.backend,
                   device=self.device, library=self.library, threads=self.threads, **extra)
        rec["pass"] = pass_
        return rec


def _gemm_record(fw, size, first_block, repeats, warmup):
    second_block = _time_calls(fw.gemm(size), fw.sync, repeats, warmup)
    rec = fw.record("gemm", "forward", f"{size}x{size} @ {size}x{size} float32",
                    first_block + second_block, warmup, gflops=2 * size**3 / 1e9)
    rec["median_ms"] = min(statistics.median(first_block), statistics.median(second_block))
    return rec


def _log(message):
    print(message, file=sys.stderr, flush=True)


def run_worker(framework, backend, tasks, quick=False, repeats=None, warmup=None, lr=1e-3):
    """Run ``tasks`` ("step", "ops") for one framework in this process; return its result.

    Order: a GEMM block, the step (its peak RSS read right after it, before any op
    benchmark allocates), the ops, a second GEMM block. Returns {"records": [...],
    "skipped": None or a reason}.
    """
    config, opts = reference_config(quick), _settings(quick, repeats, warmup)
    if framework == "torch" and backend == "cupy":
        import torch

        if not torch.cuda.is_available():
            return {"records": [], "skipped": "PyTorch sees no CUDA device"}
    fw = _Framework(framework, backend)
    tag, warm, records = f"[{framework} {fw.device}]", opts["warmup"], []
    import_rss = _peak_rss_mib()
    gemm_times = _time_calls(fw.gemm(opts["gemm_n"]), fw.sync, max(3, opts["op_repeats"]),
                             max(1, warm))
    if "step" in tasks:
        times = _time_calls(fw.step(config, lr), fw.sync, opts["step_repeats"], warm)
        records.append(fw.record(
            "unet_train_step", "step", step_label(config), times, warm, count=1,
            peak_rss_mib=_peak_rss_mib(), import_rss_mib=import_rss,
            peak_device_mib=fw.device_peak_mib()))
        _log(f"{tag} unet_train_step {records[-1]['median_ms']:.1f} ms")
    if "ops" in tasks:
        for spec in op_specs(config):
            forward, backward = fw.op(spec)
            for pass_, fn in (("forward", forward), ("backward", backward)):
                times = _time_calls(fn, fw.sync, opts["op_repeats"], warm)
                flops = spec["flops"] and spec["flops"] * (1 if pass_ == "forward" else 2)
                records.append(fw.record(spec["name"], pass_, spec["shape"], times, warm,
                                         count=spec["count"], gflops=flops and flops / 1e9))
                _log(f"{tag} {spec['name']} {pass_} {spec['shape']}: "
                     f"{records[-1]['median_ms']:.3f} ms")
            del forward, backward
    # The GEMM peak: the faster of a block before and a block after the benchmarks, so a
    # burst of load from elsewhere on the machine does not set it.
    records.append(_gemm_record(fw, opts["gemm_n"], gemm_times, max(3, opts["op_repeats"]),
                                max(1, warm)))
    _log(f"{tag} gemm {opts['gemm_n']}^3: {records[-1]['median_ms']:.2f} ms")
    return {"records": records, "skipped": None}


# -- the parent: spawns workers, derives rates, formats -------------------------------------


def _spawn(framework, backend, tasks, quick, repeats, warmup, lr):
    """Run one worker in a fresh interpreter (the same one, the same scratchseg)."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ)  # OPENBLAS_* and thread settings pass through untouched
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", "scratchseg.bench", "--worker", framework, "--tasks",
               ",".join(tasks), "--backend", backend, "--out", out, "--lr", repr(lr)]
        cmd += ["--quick"] if quick else []
        cmd += ["--repeats", str(repeats)] if repeats else []
        cmd += ["--warmup", str(warmup)] if warmup is not None else []
        code = subprocess.run(cmd, env=env, stdout=2).returncode  # progress: stderr
        if code:
            raise RuntimeError(f"bench: the {framework} worker failed with exit code {code} "
                               "(its messages are above)")
        with open(out) as f:
            return json.load(f)


def run(backend="numpy", compare="torch", *, which="all", quick=False, repeats=None,
        warmup=None, lr=1e-3):
    """Benchmark ``which`` ("all", "ops", "step"); return (records, notes).

    One subprocess per framework; rates and GEMM fractions are filled in here.
    """
    if compare not in COMPARES:
        raise ValueError(f"bench: compare must be one of {COMPARES}, got {compare!r}")
    if which not in WHICH:
        raise ValueError(f"bench: which must be one of {WHICH}, got {which!r}")
    from importlib.util import find_spec

    from scratchseg.backend import check_backend

    check_backend(backend)
    if compare == "torch" and find_spec("torch") is None:
        raise ValueError("bench: --compare torch needs PyTorch (pip install torch); "
                         "or use --compare none")
    tasks = ("step", "ops") if which == "all" else (which,)
    records, notes = [], []
    for framework in ("scratchseg", "torch")[: 2 if compare == "torch" else 1]:
        result = _spawn(framework, backend, tasks, quick, repeats, warmup, lr)
        if result["skipped"]:
            notes.append(f"{framework} skipped: {result['skipped']}")
        records += result["records"]
    config = reference_config(quick)
    step = step_gflops(config) if "step" in tasks else None
    peaks = {}
    for r in records:
        if r["name"] == "unet_train_step":
            r["gflops"] = step
        if r["gflops"]:
            r["gflops_per_s"] = r["gflops"] / (r["median_ms"] / 1e3)
    for r in records:
        if r["name"] == "gemm":
            peaks[r["framework"]] = r["gflops_per_s"]
    for r in records:
        if r["gflops"]:
            r["gemm_peak_gflops_per_s"] = peaks.get(r["framework"])
            if r["gemm_peak_gflops_per_s"]:
                r["frac_gemm_peak"] = r["gflops_per_s"] / r["gemm_peak_gflops_per_s"]
    return records, notes


def _ms(v):
    if v is None:
        return "-"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 10 else f"{v:.2f}" if v >= 1 \
        else f"{v:.3f}"


def _num(v, fmt):
    return "-" if v is None else format(v, fmt)


def _ratio(a, b):
    return None if a is None or b is None or not b else a / b


_PASS = {"forward": "fwd", "backward": "bwd"}


def _by_key(records, framework):
    return {(r["name"], r["pass"], r["shape"]): r for r in records
            if r["framework"] == framework}


def format_ops_table(records):
    """Markdown: one row per op and pass, scratchseg next to torch, and count-weighted sums."""
    ours, theirs = _by_key(records, "scratchseg"), _by_key(records, "torch")
    head = ("| op | shape | × per step | scratchseg ms | torch ms | ratio | scratchseg GFLOP/s "
            "| torch GFLOP/s | scratchseg % GEMM peak | torch % GEMM peak |")
    lines = [head, "|" + "---|" * head.count(" | ") + "---|"]
    totals = {}
    for key, r in ours.items():
        if r["name"] in ("gemm", "unet_train_step"):
            continue
        t = theirs.get(key, {})
        for fw, rec in (("scratchseg", r), ("torch", t)):
            if rec.get("median_ms") is not None:
                totals.setdefault((r["pass"], fw), 0.0)
                totals[(r["pass"], fw)] += rec["median_ms"] * r["count"]
        pct = [None if x.get("frac_gemm_peak") is None else 100 * x["frac_gemm_peak"]
               for x in (r, t)]
        cells = [f"{r['name']} {_PASS[r['pass']]}", r["shape"], r["count"], _ms(r["median_ms"]),
                 _ms(t.get("median_ms")), _num(_ratio(r["median_ms"], t.get("median_ms")), ".2f"),
                 _num(r["gflops_per_s"], ".1f"), _num(t.get("gflops_per_s"), ".1f"),
                 _num(pct[0], ".0f"), _num(pct[1], ".0f")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    for pass_ in ("forward", "backward"):
        a, b = totals.get((pass_, "scratchseg")), totals.get((pass_, "torch"))
        if a is not None:
            lines.append(f"| **sum × count, {pass_}** | whole U-Net | | {_ms(a)} | {_ms(b)} | "
                         f"{_num(_ratio(a, b), '.2f')} | | | | |")
    return "\n".join(lines)


def format_step_table(records):
    """Markdown: the training step, scratchseg and torch side by side, with ratios."""
    step = {r["framework"]: r for r in records if r["name"] == "unet_train_step"}
    if "scratchseg" not in step:
        return ""
    a, b = step["scratchseg"], step.get("torch", {})
    rows = [("median ms", "median_ms", _ms, True), ("min ms", "min_ms", _ms, True),
            ("GFLOP/s", "gflops_per_s", lambda v: _num(v, ".1f"), True),
            ("% of GEMM peak", "frac_gemm_peak", lambda v: _num(v and 100 * v, ".0f"), False),
            ("peak RSS MiB", "peak_rss_mib", lambda v: _num(v, ".0f"), True),
            ("RSS after imports MiB", "import_rss_mib", lambda v: _num(v, ".0f"), False),
            ("peak GPU MiB", "peak_device_mib", lambda v: _num(v, ".0f"), True)]
    lines = [f"| U-Net train step: {a['shape']}, {a['gflops']:.3g} GFLOP | scratchseg "
             f"({a['backend']}) | torch ({b.get('device', '-')}) | ratio |", "|---|---|---|---|"]
    for label, key, fmt, with_ratio in rows:
        if key == "peak_device_mib" and a[key] is None:
            continue
        ratio = _ratio(a[key], b.get(key)) if with_ratio else None
        lines.append(f"| {label} | {fmt(a[key])} | {fmt(b.get(key))} | {_num(ratio, '.2f')} |")
    return "\n".join(lines)


def _environment(records, backend):
    libs = sorted({f"{r['library']} ({r['device']}"
                   + (f", {r['threads']} threads)" if r["threads"] else ")") for r in records})
    peaks = [f"{r['framework']} {r['gflops_per_s']:.1f} GFLOP/s ({r['shape']})"
             for r in records if r["name"] == "gemm"]
    blas = ", ".join(f"{k}={os.environ[k]}" for k in sorted(os.environ)
                     if k.startswith(("OPENBLAS", "OMP_", "MKL_")))
    return (f"backend {backend}; {'; '.join(libs)}; {os.cpu_count()} CPUs; "
            f"BLAS env: {blas or 'none set'}\n\nGEMM peak: {'; '.join(peaks)}")


def main_from_args(backend="numpy", compare="torch", json_path=None, *, which="all",
                   quick=False, repeats=None, warmup=None, lr=1e-3, stdout=None):
    """Run, print the markdown tables to ``stdout``, write the records to ``json_path``; 0."""
    out = stdout or sys.stdout
    records, notes = run(backend, compare, which=which, quick=quick, repeats=repeats,
                         warmup=warmup, lr=lr)
    parts = [_environment(records, backend)] + notes
    if which in ("all", "step"):
        parts.append(format_step_table(records))
    if which in ("all", "ops"):
        parts.append(format_ops_table(records))
    print("\n\n".join(p for p in parts if p), file=out)
    if json_path:
        tmp = f"{json_path}.tmp"
        with open(tmp, "w") as f:
            json.dump(records, f, indent=1)
        os.replace(tmp, json_path)
    return 0


def add_arguments(parser, which=True):
    """The benchmark options (for benchmarks/*.py and the CLI's ``bench``)."""
    parser.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    parser.add_argument("--compare", choices=COMPARES, default="torch",
                        help="also run PyTorch (CPU, or CUDA for --backend cupy)")
    parser.add_argument("--json", metavar="FILE", default=None, help="write the records here")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per benchmark (default 10 per op, 5 steps)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed calls first")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 repeats")
    if which:
        parser.add_argument("--which", choices=WHICH, default="all")
    return parser


def main(argv=None):
    parser = add_arguments(argparse.ArgumentParser(prog="python -m scratchseg.bench",
                                                   description=__doc__.split("\n")[0]))
    parser.add_argument("--lr", type=float, default=1e-3, help="SGD learning rate of the step")
    parser.add_argument("--worker", choices=("scratchseg", "torch"), help=argparse.SUPPRESS)
    parser.add_argument("--tasks", default="step,ops", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = run_worker(args.worker, args.backend, args.tasks.split(","), args.quick,
                            args.repeats, args.warmup, args.lr)
        with open(args.out, "w") as f:
            json.dump(result, f)
        return 0
    try:
        return main_from_args(args.backend, args.compare, args.json, which=args.which,
                              quick=args.quick, repeats=args.repeats, warmup=args.warmup,
                              lr=args.lr)
    except (ValueError, RuntimeError, OSError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
