"""Benchmarks against PyTorch: every U-Net op, forward and backward, and one training step.

Each framework runs in its own subprocess (``python -m scratchseg.tools.bench_worker``), so
NumPy's OpenBLAS threads and PyTorch's thread pool never share a process (OpenBLAS
workers that spin after a NumPy GEMM slow a PyTorch call made right after) and each
step's peak RSS (``ru_maxrss``, read in the child right after the timed steps) is its
own. A worker times each call after warm-up (synchronising the GPU around every timed
call) and a float32 2048^3 GEMM (NumPy / CuPy ``@``, ``torch.mm``) before and after the
rest: the faster block's median is the peak its framework's BLAS reaches in that
process.

The workers run in alternating rounds (scratchseg, torch, scratchseg, torch, ...), so load
from elsewhere on a shared machine reaches both frameworks. Each benchmark's figure is
the median of its best round, the round medians are kept beside it, and the parent
computes GFLOP/s and the fraction of the GEMM peak and prints markdown tables. Ratios
are scratchseg / torch: above 1, scratchseg is slower (or uses more memory).

The model is the reference U-Net below unless the options say otherwise (``--input-size``,
``--batch-size``, ``--base-channels``, ``--depth``, ``--padding``, ``--batch-norm``), so the
paper's network (``--base-channels 64 --depth 4 --padding valid --input-size 572``) is one
command. ``--engine`` picks scratchseg's engine for NumPy (``scratchseg.ops``). The
inference benchmark (``--which infer``) times one forward pass in eval mode without
caches (``scratchseg.no_grad()``, ``torch.no_grad()``) in a worker of its own, so its peak
RSS is the inference's alone.

The step is also timed in its phases, within the same calls: zero_grad, forward and loss;
their backward; the SGD update (on a GPU the device is synchronised after each phase, two
synchronisations more per step). Their medians show which half of the step a gap is in.

Forward ops are timed as in training (PyTorch inputs require grad, so it records its
graph; scratchseg builds its cache); a backward is timed on one forward's cache or graph.

FLOPs count a multiply-add as 2. A convolution's backward computes dx and dw: twice its
forward. ReLU, max-pool, concat and the loss are memory-bound and get no FLOP rate. The
step is 3x the forward FLOPs of ``unet_summary``.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REFERENCE = dict(batch=1, in_channels=1, num_classes=2, base_channels=32, depth=4, size=256,
                 padding="same", batch_norm=False)
QUICK = dict(REFERENCE, base_channels=4, depth=2, size=16)
# the options that change the model, by their command-line names
MODEL_OPTIONS = {"input_size": "size", "batch_size": "batch", "base_channels": "base_channels",
                 "depth": "depth", "padding": "padding", "batch_norm": "batch_norm",
                 "in_channels": "in_channels", "num_classes": "num_classes"}
COMPARES = ("torch", "none")
WHICH = ("all", "ops", "step", "infer")
ENGINES = ("fast", "reference")
# the step timed in parts, in order: zero_grad + forward + loss, its backward, the SGD update
STEP_PHASE_LABELS = {"forward": "median ms: zero_grad, forward, loss",
                     "backward": "median ms: backward", "update": "median ms: SGD update"}
STEP_PHASES = tuple(STEP_PHASE_LABELS)
RECORD_KEYS = ("name", "pass", "framework", "backend", "engine", "device", "library", "threads",
               "config", "shape",
               "count", "median_ms", "min_ms", "round_medians_ms", "times_ms", "repeats",
               "warmup", "gflops", "gflops_per_s", "gemm_peak_gflops_per_s", "frac_gemm_peak",
               "peak_rss_mib", "import_rss_mib", "peak_device_mib")


def reference_config(quick=False):
    """The benchmarked U-Net (same padding, float32): the issue's reference, or a tiny one."""
    return dict(QUICK if quick else REFERENCE)


def model_config(quick=False, **options):
    """The reference config with ``options`` (MODEL_OPTIONS' names, None = the default)
    applied and checked: ValueError naming the option, or the input sizes the U-Net takes."""
    config = reference_config(quick)
    for name, value in options.items():
        if name not in MODEL_OPTIONS:
            raise ValueError(f"bench: unknown model option {name!r}")
        if value is not None:
            config[MODEL_OPTIONS[name]] = value
    for key in ("size", "batch", "base_channels", "depth", "in_channels", "num_classes"):
        value = config[key]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            flag = next(k for k, v in MODEL_OPTIONS.items() if v == key).replace("_", "-")
            raise ValueError(f"bench: --{flag} must be an integer >= 1, got {value!r}")
    try:
        output_size(config)
    except ValueError as error:
        raise ValueError(f"bench: --input-size: {error}") from None
    return config


def output_size(config):
    """The edge of the logits (the input's with same padding, smaller with valid)."""
    from scratchseg.nn import UNet

    return UNet(config["in_channels"], config["num_classes"], 1, config["depth"],
                padding=config["padding"]).output_size(config["size"])


def settings(quick, repeats=None, warmup=None, rounds=None):
    """Timed calls, warm-up calls, rounds and the GEMM size: the defaults, or --quick's."""
    op_reps, step_reps, warm, gemm, rounds_ = (2, 2, 1, 256, 1) if quick else (10, 5, 2, 2048, 3)
    return dict(op_repeats=repeats or op_reps, step_repeats=repeats or step_reps,
                warmup=warm if warmup is None else warmup, gemm_n=gemm,
                rounds=rounds or rounds_)


def _dims(*shape):
    return "x".join(str(int(d)) for d in shape)


def op_specs(config):
    """The distinct ops of one U-Net training step in forward order, each with its count.

    A spec is a dict: name, args (sizes), shape (a label), count (uses per step) and
    flops (forward FLOPs; None for memory-bound ops). Valid padding shrinks each map by
    2 per 3x3 convolution, and the skips are cropped; batch norm follows every 3x3
    convolution, which then has no bias.
    """
    n, depth, batch_norm = config["batch"], config["depth"], config["batch_norm"]
    pad = 1 if config["padding"] == "same" else 0
    widths = [config["base_channels"] * 2**level for level in range(depth + 1)]
    specs = {}

    def add(name, label, flops=None, **args):
        key = (name, label)
        if key in specs:
            specs[key]["count"] += 1
        else:
            specs[key] = dict(name=name, args=dict(n=n, **args), shape=label, count=1,
                              flops=flops)

    def conv_relu(c_in, c_out, s):
        """A 3x3 convolution, its batch norm and ReLU; the output edge."""
        out = s + 2 * pad - 2
        add("conv2d", f"{_dims(n, c_in, s, s)} -> {c_out}, 3x3 p{pad}",
            2 * n * c_in * c_out * 9 * out * out, c_in=c_in, c_out=c_out, s=s, k=3, pad=pad,
            bias=not batch_norm)
        if batch_norm:
            add("batch_norm2d", _dims(n, c_out, out, out), c=c_out, s=out)
        add("relu", _dims(n, c_out, out, out), c=c_out, s=out)
        return out

    s, c_in, skips = config["size"], config["in_channels"], []
    for c in widths[:-1]:
        s = conv_relu(c, c, conv_relu(c_in, c, s))
        skips.append(s)
        add("max_pool2d", f"{_dims(n, c, s, s)}, 2x2", c=c, s=s)
        s, c_in = s // 2, c
    s = conv_relu(widths[-1], widths[-1], conv_relu(widths[-2], widths[-1], s))
    for c, skip in zip(widths[-2::-1], reversed(skips)):
        add("conv_transpose2d", f"{_dims(n, 2 * c, s, s)} -> {c}, 2x2 s2",
            2 * n * 2 * c * c * 4 * s * s, c_in=2 * c, c_out=c, s=s)
        s *= 2
        add("concat", f"{_dims(n, c, skip, skip)} + {_dims(n, c, s, s)}", c=c, s=s, skip=skip)
        s = conv_relu(c, c, conv_relu(2 * c, c, s))
    add("conv2d", f"{_dims(n, widths[0], s, s)} -> {config['num_classes']}, 1x1 p0",
        2 * n * widths[0] * config["num_classes"] * s * s, c_in=widths[0],
        c_out=config["num_classes"], s=s, k=1, pad=0, bias=True)
    add("softmax_cross_entropy", _dims(n, config["num_classes"], s, s),
        c=config["num_classes"], s=s)
    return list(specs.values())


def step_gflops(config):
    """GFLOP of one training step: 3x the forward FLOPs of ``unet_summary``."""

    return 3 * forward_gflops(config)


def forward_gflops(config):
    """GFLOP of one forward pass: the sum of ``unet_summary``'s rows."""
    from scratchseg.nn import UNet
    from scratchseg.nn.summary import unet_summary

    model = UNet(config["in_channels"], config["num_classes"], config["base_channels"],
                 config["depth"], padding=config["padding"], batch_norm=config["batch_norm"])
    return sum(row.flops for row in unet_summary(model, config["size"], config["batch"])) / 1e9


def step_label(config):
    c = config
    return (f"{_dims(c['batch'], c['in_channels'], c['size'], c['size'])}, base "
            f"{c['base_channels']}, depth {c['depth']}, {c['padding']}"
            f"{', batch norm' if c['batch_norm'] else ''}, {c['num_classes']} classes")


# -- the parent: spawns workers, derives rates, formats -------------------------------------


THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


# the worker's place in a checkout: since the two-tier layout, and before it (so that
# benchmarks/compare_versions.py can time commits from either side of that change)
WORKER_MODULES = ("scratchseg.tools.bench_worker", "scratchseg.bench_worker")


def worker_module(package_root):
    """The importable name of the benchmark worker in the checkout at ``package_root``."""
    for module in WORKER_MODULES:
        if (Path(package_root) / (module.replace(".", "/") + ".py")).is_file():
            return module
    raise FileNotFoundError(f"bench: {package_root} is not a scratchseg checkout with a "
                            f"benchmark worker ({' or '.join(WORKER_MODULES)})")


def spawn_worker(framework, backend, tasks, quick, repeats, warmup, lr, package_root=None,
                 threads=None, config=None, engine=None):
    """Run one worker in a fresh interpreter (the same one) importing the scratchseg in
    ``package_root`` (a checkout's root; by default this one). ``threads``: the CPU
    threads of its BLAS and its op splits (scratchseg) or intra-op pool (PyTorch), set
    through THREAD_VARIABLES, which both libraries read when they load. ``config``: the
    model (default: the reference config); ``engine``: SCRATCHSEG_ENGINE for the worker
    (default: the environment's)."""
    package_root = package_root or str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)  # OPENBLAS_* and thread settings pass through untouched
    if threads is not None:
        env.update(dict.fromkeys(THREAD_VARIABLES, str(threads)))
    if engine is not None:
        env["SCRATCHSEG_ENGINE"] = engine
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.json")
        cmd = [sys.executable, "-m", worker_module(package_root), framework, "--tasks",
               ",".join(tasks), "--backend", backend, "--out", out, "--lr", repr(lr)]
        cmd += ["--quick"] if quick else []
        cmd += ["--repeats", str(repeats)] if repeats else []
        cmd += ["--warmup", str(warmup)] if warmup is not None else []
        cmd += ["--config", json.dumps(config)] if config is not None else []
        # -m puts the working directory first on sys.path: run inside the checkout
        code = subprocess.run(cmd, env=env, cwd=package_root, stdout=2).returncode
        if code:
            raise RuntimeError(f"bench: the {framework} worker failed with exit code {code} "
                               "(its messages are above)")
        with open(out) as f:
            return json.load(f)


def merge_rounds(rounds):
    """One record per benchmark from each round's records: the best round's median.

    ``rounds`` is a list (one entry per round) of record lists. A benchmark's
    ``median_ms`` becomes the smallest of its round medians (kept in
    ``round_medians_ms``), ``min_ms`` the fastest call of any round, ``times_ms``
    every call, and the peak memory the largest any round saw.
    """
    merged = {}
    for records in rounds:
        for r in records:
            key = (r["framework"], r["name"], r["pass"], r["shape"])
            if key not in merged:
                merged[key] = dict(r, round_medians_ms=[], times_ms=[], repeats=0)
            m = merged[key]
            m["round_medians_ms"].append(r["median_ms"])
            m["times_ms"] += r["times_ms"]
            m["repeats"] += r["repeats"]
            m["median_ms"] = min(m["round_medians_ms"])
            m["min_ms"] = min(m["min_ms"], r["min_ms"])
            for peak in ("peak_rss_mib", "peak_device_mib"):
                if r[peak] is not None:
                    m[peak] = max(m[peak], r[peak])
    return list(merged.values())


def _add_rates(records, step_gflop):
    """Fill in GFLOP/s and the fraction of the same framework's GEMM peak."""
    share = {"forward": 1 / 3, "backward": 2 / 3}  # the step is 3x the forward's FLOPs
    for r in records:
        if r["name"] == "unet_train_step":
            r["gflops"] = step_gflop
        elif r["name"] == "step_phase" and r["pass"] in share:
            r["gflops"] = step_gflop * share[r["pass"]]
        elif r["name"] == "unet_inference":
            r["gflops"] = step_gflop / 3
        if r["gflops"]:
            r["gflops_per_s"] = r["gflops"] / (r["median_ms"] / 1e3)
    peaks = {r["framework"]: r["gflops_per_s"] for r in records if r["name"] == "gemm"}
    for r in records:
        if r["gflops"]:
            r["gemm_peak_gflops_per_s"] = peaks.get(r["framework"])
            if r["gemm_peak_gflops_per_s"]:
                r["frac_gemm_peak"] = r["gflops_per_s"] / r["gemm_peak_gflops_per_s"]


def run(backend="numpy", compare="torch", *, which="all", quick=False, repeats=None,
        warmup=None, rounds=None, lr=1e-3, threads=None, engine=None, **model_options):
    """Benchmark ``which`` ("all", "ops", "step", "infer"); return (records, notes).

    ``rounds`` rounds (default 3; 1 with ``quick``), each one subprocess per
    framework and task group (the inference in a process of its own), alternating;
    rates and GEMM fractions are filled in here. ``threads``: CPU threads for both
    frameworks (default: the environment's settings, else each library's own
    default). ``engine``: scratchseg's engine for NumPy. ``model_options``:
    MODEL_OPTIONS (input_size, batch_size, ...), None for the reference config's.
    """
    if compare not in COMPARES:
        raise ValueError(f"bench: compare must be one of {COMPARES}, got {compare!r}")
    if which not in WHICH:
        raise ValueError(f"bench: which must be one of {WHICH}, got {which!r}")
    if rounds is not None and rounds < 1:
        raise ValueError(f"bench: rounds must be >= 1, got {rounds}")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ValueError(f"bench: threads must be an integer >= 1, got {threads!r}")
    if engine is not None and engine not in ENGINES:
        raise ValueError(f"bench: engine must be one of {ENGINES}, got {engine!r}")
    config = model_config(quick, **model_options)
    from importlib.util import find_spec

    from scratchseg.backend import check_backend

    check_backend(backend)
    if compare == "torch" and find_spec("torch") is None:
        raise ValueError("bench: --compare torch needs PyTorch (pip install torch); "
                         "or use --compare none")
    groups = [("step", "ops"), ("infer",)] if which == "all" else [(which,)]
    frameworks = ("scratchseg", "torch")[: 2 if compare == "torch" else 1]
    per_round, notes = [], []
    for _ in range(settings(quick, rounds=rounds)["rounds"]):
        records = []
        for tasks in groups:
            for framework in frameworks:
                result = spawn_worker(framework, backend, tasks, quick, repeats, warmup, lr,
                                      threads=threads, config=config, engine=engine)
                note = f"{framework} skipped: {result['skipped']}"
                if result["skipped"] and note not in notes:
                    notes.append(note)
                records += result["records"]
        per_round.append(records)
    records = merge_rounds(per_round)
    _add_rates(records, step_gflops(config) if which != "ops" else None)
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
        if r["name"] in ("gemm", "unet_train_step", "step_phase", "unet_inference"):
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


def format_inference_table(records):
    """Markdown: one forward pass without caches, scratchseg and torch side by side."""
    runs = {r["framework"]: r for r in records if r["name"] == "unet_inference"}
    if "scratchseg" not in runs:
        return ""
    a, b = runs["scratchseg"], runs.get("torch", {})
    engine = f", {a['engine']} engine" if a.get("engine") else ""
    lines = [f"| U-Net inference (eval, no_grad): {a['shape']}, {a['gflops']:.3g} GFLOP | "
             f"scratchseg ({a['backend']}{engine}) | torch ({b.get('device', '-')}) | ratio |",
             "|---|---|---|---|"]
    for label, key, fmt in (("median ms", "median_ms", _ms), ("min ms", "min_ms", _ms),
                            ("GFLOP/s", "gflops_per_s", lambda v: _num(v, ".1f")),
                            ("peak RSS MiB", "peak_rss_mib", lambda v: _num(v, ".0f")),
                            ("RSS after imports MiB", "import_rss_mib",
                             lambda v: _num(v, ".0f")),
                            ("peak GPU MiB", "peak_device_mib", lambda v: _num(v, ".0f"))):
        if key == "peak_device_mib" and a[key] is None:
            continue
        ratio = None if key == "import_rss_mib" else _ratio(a[key], b.get(key))
        lines.append(f"| {label} | {fmt(a[key])} | {fmt(b.get(key))} | {_num(ratio, '.2f')} |")
    return "\n".join(lines)


def format_step_table(records):
    """Markdown: the training step, scratchseg and torch side by side, with ratios; below
    the step's median, the medians of its phases."""
    step = {r["framework"]: r for r in records if r["name"] == "unet_train_step"}
    if "scratchseg" not in step:
        return ""
    a, b = step["scratchseg"], step.get("torch", {})
    phases = {(r["framework"], r["pass"]): r for r in records if r["name"] == "step_phase"}
    rows = [("median ms", a, b, "median_ms", _ms, True)]
    rows += [(STEP_PHASE_LABELS[phase], phases[("scratchseg", phase)],
              phases.get(("torch", phase), {}), "median_ms", _ms, True)
             for phase in STEP_PHASES if ("scratchseg", phase) in phases]
    rows += [(label, a, b, key, fmt, with_ratio) for label, key, fmt, with_ratio in (
        ("min ms", "min_ms", _ms, True),
        ("GFLOP/s", "gflops_per_s", lambda v: _num(v, ".1f"), True),
        ("% of GEMM peak", "frac_gemm_peak", lambda v: _num(v and 100 * v, ".0f"), False),
        ("peak RSS MiB", "peak_rss_mib", lambda v: _num(v, ".0f"), True),
        ("RSS after imports MiB", "import_rss_mib", lambda v: _num(v, ".0f"), False),
        ("peak GPU MiB", "peak_device_mib", lambda v: _num(v, ".0f"), True))]
    engine = f", {a['engine']} engine" if a.get("engine") else ""
    lines = [f"| U-Net train step: {a['shape']}, {a['gflops']:.3g} GFLOP | scratchseg "
             f"({a['backend']}{engine}) | torch ({b.get('device', '-')}) | ratio |",
             "|---|---|---|---|"]
    for label, ours, theirs, key, fmt, with_ratio in rows:
        if key == "peak_device_mib" and ours[key] is None:
            continue
        ratio = _ratio(ours[key], theirs.get(key)) if with_ratio else None
        lines.append(f"| {label} | {fmt(ours[key])} | {fmt(theirs.get(key))} | "
                     f"{_num(ratio, '.2f')} |")
    return "\n".join(lines)


def _environment(records, backend):
    libs = sorted({f"{r['library']} ({r['device']}"
                   + (f", {r['threads']} thread{'s' * (r['threads'] != 1)})" if r["threads"]
                      else ")") for r in records})
    peaks = [f"{r['framework']} {r['gflops_per_s']:.1f} GFLOP/s ({r['shape']})"
             for r in records if r["name"] == "gemm"]
    env = ", ".join(f"{k}={os.environ[k]}" for k in sorted(os.environ)
                    if k.startswith(("OPENBLAS", "OMP_", "MKL_", "MALLOC_")))
    return (f"backend {backend}; {'; '.join(libs)}; {os.cpu_count()} CPUs; "
            f"BLAS and malloc env: {env or 'none set'}"
            + (f"\n\nGEMM peak: {'; '.join(peaks)}" if peaks else ""))


def main_from_args(backend="numpy", compare="torch", json_path=None, *, which="all",
                   quick=False, repeats=None, warmup=None, rounds=None, lr=1e-3, threads=None,
                   engine=None, stdout=None, **model_options):
    """Run, print the markdown tables to ``stdout``, write the records to ``json_path``; 0."""
    out = stdout or sys.stdout
    records, notes = run(backend, compare, which=which, quick=quick, repeats=repeats,
                         warmup=warmup, rounds=rounds, lr=lr, threads=threads, engine=engine,
                         **model_options)
    parts = [_environment(records, backend)] + notes
    if which in ("all", "step"):
        parts.append(format_step_table(records))
    if which in ("all", "infer"):
        parts.append(format_inference_table(records))
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
    parser.add_argument("--rounds", type=int, default=None,
                        help="alternating rounds of one process per framework; each figure is "
                             "its best round's median (default 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for both frameworks, e.g. 1 to compare them on one "
                             "core (default: the environment's OPENBLAS_NUM_THREADS / "
                             "OMP_NUM_THREADS, else each library's default)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes, 2 repeats, 1 round")
    parser.add_argument("--engine", choices=ENGINES, default=None,
                        help="scratchseg's engine for NumPy (default: SCRATCHSEG_ENGINE, else "
                             "fast)")
    model = parser.add_argument_group(
        "the model (default: the reference U-Net, base 32, depth 4, same padding, 256 px, "
        "batch 1)")
    model.add_argument("--input-size", type=int, default=None, help="edge of the input")
    model.add_argument("--batch-size", type=int, default=None, help="images per batch")
    model.add_argument("--base-channels", type=int, default=None,
                       help="channels of the first level")
    model.add_argument("--depth", type=int, default=None, help="number of 2x2 poolings")
    model.add_argument("--padding", choices=("valid", "same"), default=None,
                       help="valid (the paper's) or same")
    model.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None,
                       help="batch norm after every 3x3 convolution")
    model.add_argument("--in-channels", type=int, default=None,
                       help="channels of the input image (default 1)")
    model.add_argument("--num-classes", type=int, default=None,
                       help="classes of the logits (default 2; the built-in synthetic data "
                            "has 4)")
    if which:
        parser.add_argument("--which", choices=WHICH, default="all",
                            help="step, ops, infer (one forward without caches), or all")
    return parser


def model_options(args):
    """The model options of parsed arguments, as ``run`` takes them."""
    return {name: getattr(args, name) for name in MODEL_OPTIONS}


def main(argv=None):
    parser = add_arguments(argparse.ArgumentParser(prog="python -m scratchseg.tools.bench",
                                                   description=__doc__.split("\n")[0]))
    parser.add_argument("--lr", type=float, default=1e-3, help="SGD learning rate of the step")
    args = parser.parse_args(argv)
    try:
        return main_from_args(args.backend, args.compare, args.json, which=args.which,
                              quick=args.quick, repeats=args.repeats, warmup=args.warmup,
                              rounds=args.rounds, lr=args.lr, threads=args.threads,
                              engine=args.engine, **model_options(args))
    except (ValueError, RuntimeError, OSError) as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
