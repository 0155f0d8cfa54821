"""The benchmark worker: one framework in its own process, timing what the parent asks.

``python -m scratchseg.tools.bench_worker FRAMEWORK --tasks step,ops --out FILE`` runs a GEMM
block, the training step (its peak RSS read right after it, before any op benchmark
allocates), every op of ``scratchseg.tools.bench.op_specs`` forward and backward, and a second
GEMM block, then writes its records as JSON. ``--tasks infer`` times one forward pass in
eval mode without caches instead, and no GEMM (the parent runs it in a process of its
own, so its peak RSS is the model's and the forward's).
``--config JSON`` sets the model (default: the reference config). ``scratchseg.tools.bench``
spawns it once per framework and round, so NumPy's OpenBLAS threads and PyTorch's never
share a process.
"""

import argparse
import json
import statistics
import sys
import time

import numpy

from scratchseg.tools.bench import (
    RECORD_KEYS,
    STEP_PHASES,
    op_specs,
    output_size,
    reference_config,
    settings,
    step_label,
)


def _peak_rss_mib():
    try:
        import resource
    except ImportError:  # not Unix
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes / KiB


def _blas_threads():
    """The threads NumPy's BLAS runs (scratchseg splits its own work over as many)."""
    from threadpoolctl import threadpool_info

    return max((lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"),
               default=None)


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
            self.engine = None
        else:
            from scratchseg.backend import check_backend, synchronize
            from scratchseg.ops import current_engine

            check_backend(backend)
            self.engine = "reference" if backend == "cupy" else current_engine()
            self.library = f"{backend} {sys.modules.get(backend, numpy).__version__}"
            self.threads = None if backend == "cupy" else _blas_threads()
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
                      self.array(c_out, scale=0.1) if a.get("bias", True) else None)
            options = dict(padding=a["pad"]) if name == "conv2d" else dict(stride=2)
        elif name == "concat":
            skip = a.get("skip", s)
            inputs, options = (self.array(n, a["c"], skip, skip), self.array(n, a["c"], s, s)), {}
        elif name == "batch_norm2d":
            c = a["c"]
            inputs = (self.array(n, c, s, s), self.array(c), self.array(c))
            options = {}
        elif name == "softmax_cross_entropy":
            inputs, options = (self.array(n, a["c"], s, s),), {}
            labels = self.labels(a["c"], n, s, s)
        else:
            inputs = (self.array(n, a["c"], s, s),)
            options = dict(kernel_size=2) if name == "max_pool2d" else {}
        if self.name == "torch":
            return self._torch_op(name, inputs, options, labels)
        from scratchseg import ops

        fwd = getattr(ops, f"{name}_forward")
        bwd = getattr(ops, f"{name}_backward")
        if name == "batch_norm2d":
            running_mean, running_var = (self._wrap(numpy.full(a["c"], v, numpy.float32), False)
                                         for v in (0.0, 1.0))
            inputs = (*inputs, running_mean, running_var)
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
        def crop_cat(skip, x):
            top = (skip.shape[2] - x.shape[2]) // 2
            return torch.cat([skip[:, :, top:top + x.shape[2], top:top + x.shape[3]], x], dim=1)

        fn = {"conv2d": F.conv2d, "conv_transpose2d": F.conv_transpose2d,
              "max_pool2d": F.max_pool2d, "relu": F.relu, "concat": crop_cat,
              "batch_norm2d": lambda x, g, b: F.batch_norm(x, None, None, g, b, training=True),
              "softmax_cross_entropy": lambda z: F.cross_entropy(z, labels)}[name]
        forward = lambda: fn(*inputs, **options)  # noqa: E731  (a graph, as in training)
        y = forward()
        dy = None if y.ndim == 0 else torch.randn_like(y)
        wanted = [t for t in inputs if t is not None]
        return forward, lambda: torch.autograd.grad(y, wanted, dy, retain_graph=True)

    def step(self, config, lr):
        """A training-step callable (zero_grad, forward, loss, backward, SGD with momentum
        0.99), and the list to which each call appends its STEP_PHASES' times in ms:
        zero_grad, forward and loss; their backward; the SGD update (the device
        synchronised after each)."""
        model = self.model(config)
        n, c, s, out = config["batch"], config["in_channels"], config["size"], output_size(config)
        x = self.array(n, c, s, s, grad=False)
        labels = self.labels(config["num_classes"], n, out, out)
        if self.name == "torch":
            opt = self.torch.optim.SGD(model.parameters(), lr=lr, momentum=0.99)

            def forward():
                opt.zero_grad()
                return self.torch.nn.functional.cross_entropy(model(x), labels)

            def backward(loss):
                loss.backward()
        else:
            from scratchseg import ops
            from scratchseg.nn import SGD

            opt = SGD(model, lr=lr, momentum=0.99)

            def forward():
                model.zero_grad()
                return ops.softmax_cross_entropy_forward(model.forward(x), labels)[1]

            def backward(loss_cache):
                dlogits = ops.softmax_cross_entropy_backward(1.0, loss_cache)
                model.backward(dlogits, input_grad=False)

        phase_times = []

        def step():
            start = time.perf_counter()
            loss = forward()
            self.sync()
            forward_end = time.perf_counter()
            backward(loss)
            self.sync()
            backward_end = time.perf_counter()
            opt.step()
            self.sync()
            times = (forward_end - start, backward_end - forward_end,
                     time.perf_counter() - backward_end)
            phase_times.append([t * 1e3 for t in times])

        return step, phase_times

    def model(self, config):
        """The U-Net of ``config`` in training mode: scratchseg's, or its PyTorch oracle."""
        options = dict(in_channels=config["in_channels"], num_classes=config["num_classes"],
                       base_channels=config["base_channels"], depth=config["depth"],
                       padding=config["padding"], batch_norm=config["batch_norm"])
        if self.name == "torch":
            from scratchseg.tools.torch_unet import TorchUNet

            return TorchUNet(**options).to(self.device)
        from scratchseg.nn import UNet

        return UNet(**options, backend=self.backend)

    def inference(self, config):
        """A callable running one forward pass in eval mode without caches."""
        model = self.model(config).eval()
        n, c, s = config["batch"], config["in_channels"], config["size"]
        x = self.array(n, c, s, s, grad=False)
        if self.name == "torch":
            def forward():
                with self.torch.no_grad():
                    return model(x)
        else:
            import scratchseg

            def forward():
                with scratchseg.no_grad():
                    return model.forward(x)
        return forward

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
                   device=self.device, library=self.library, threads=self.threads,
                   engine=self.engine, **extra)
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


def run_worker(framework, backend, tasks, quick=False, repeats=None, warmup=None, lr=1e-3,
               config=None):
    """Run ``tasks`` ("step", "ops", "infer") for one framework in this process; return its
    result.

    Order: the inference (its peak RSS read right after it, before anything else
    allocates), a GEMM block, the step (its peak RSS read likewise, before any op benchmark
    allocates), the ops, a second GEMM block. The GEMM blocks run only with "step" or
    "ops" (an inference alone has none: its peak RSS is the forward's and the model's).
    ``config``: the model (default: the reference config). Returns {"records": [...],
    "skipped": None or a reason}.
    """
    config = config or reference_config(quick)
    opts = settings(quick, repeats, warmup)
    if framework == "torch" and backend == "cupy":
        import torch

        if not torch.cuda.is_available():
            return {"records": [], "skipped": "PyTorch sees no CUDA device"}
    fw = _Framework(framework, backend)
    tag, warm, records = f"[{framework} {fw.device}]", opts["warmup"], []
    import_rss = _peak_rss_mib()
    if "infer" in tasks:  # first, so that its peak RSS is its own (the parent runs it alone)
        times = _time_calls(fw.inference(config), fw.sync, opts["step_repeats"], warm)
        records.append(fw.record(
            "unet_inference", "forward", step_label(config), times, warm, count=1,
            config=config, peak_rss_mib=_peak_rss_mib(), import_rss_mib=import_rss,
            peak_device_mib=fw.device_peak_mib()))
        _log(f"{tag} unet_inference {records[-1]['median_ms']:.1f} ms, peak RSS "
             f"{records[-1]['peak_rss_mib']:.0f} MiB")
    gemm = "step" in tasks or "ops" in tasks  # the GEMM peak, for their % of it
    if gemm:
        gemm_times = _time_calls(fw.gemm(opts["gemm_n"]), fw.sync,
                                 max(3, opts["op_repeats"]), max(1, warm))
    if "step" in tasks:
        step, phase_times = fw.step(config, lr)
        times = _time_calls(step, fw.sync, opts["step_repeats"], warm)
        records.append(fw.record(
            "unet_train_step", "step", step_label(config), times, warm, count=1,
            config=config, peak_rss_mib=_peak_rss_mib(), import_rss_mib=import_rss,
            peak_device_mib=fw.device_peak_mib()))
        _log(f"{tag} unet_train_step {records[-1]['median_ms']:.1f} ms")
        timed_calls = phase_times[warm:]
        for k, phase in enumerate(STEP_PHASES):
            records.append(fw.record("step_phase", phase, step_label(config),
                                     [call[k] for call in timed_calls], warm, count=1))
        _log(f"{tag} step phases: " + ", ".join(
            f"{r['pass']} {r['median_ms']:.1f} ms" for r in records[-len(STEP_PHASES):]))
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
    if gemm:
        records.append(_gemm_record(fw, opts["gemm_n"], gemm_times,
                                    max(3, opts["op_repeats"]), max(1, warm)))
        _log(f"{tag} gemm {opts['gemm_n']}^3: {records[-1]['median_ms']:.2f} ms")
    return {"records": records, "skipped": None}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m scratchseg.tools.bench_worker",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("framework", choices=("scratchseg", "torch"))
    parser.add_argument("--backend", choices=("numpy", "cupy"), default="numpy")
    parser.add_argument("--tasks", default="step,ops")
    parser.add_argument("--out", required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--config", type=json.loads, default=None, help="the model, as JSON")
    args = parser.parse_args(argv)
    result = run_worker(args.framework, args.backend, args.tasks.split(","), args.quick,
                        args.repeats, args.warmup, args.lr, args.config)
    with open(args.out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
