"""The benchmark tooling runs end to end (--quick) and reports what it promises.

Nothing here asserts on speed: the numbers depend on the machine and its load.
"""

import json
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from scratchseg.tools import bench, bench_worker

HAS_TORCH = find_spec("torch") is not None
ROOT = Path(__file__).resolve().parents[1]


def test_reference_ops_cover_every_unet_level():
    specs = bench.op_specs(bench.reference_config())
    shapes = {(s["name"], s["shape"]): s["count"] for s in specs}
    for c_in, c_out, size, count in [(1, 32, 256, 1), (32, 32, 256, 2), (32, 64, 128, 1),
                                     (64, 64, 128, 2), (256, 512, 16, 1), (512, 512, 16, 1),
                                     (512, 256, 32, 1), (64, 32, 256, 1)]:
        assert shapes[("conv2d", f"1x{c_in}x{size}x{size} -> {c_out}, 3x3 p1")] == count
    for c in (256, 128, 64, 32):
        assert ("conv_transpose2d", f"1x{2 * c}x{4096 // c}x{4096 // c} -> {c}, 2x2 s2") in shapes
        assert ("concat", f"1x{c}x{8192 // c}x{8192 // c} + 1x{c}x{8192 // c}x{8192 // c}") \
            in shapes
    pools = [s for s in specs if s["name"] == "max_pool2d"]
    assert [s["shape"] for s in pools] == [f"1x{32 << i}x{256 >> i}x{256 >> i}, 2x2"
                                           for i in range(4)]
    assert shapes[("softmax_cross_entropy", "1x2x256x256")] == 1
    # The convolutions' FLOPs add up to the summary's (which also counts ReLU and pooling).
    step = bench.step_gflops(bench.reference_config())
    conv = sum(s["flops"] * s["count"] for s in specs if s["flops"]) / 1e9
    assert step == pytest.approx(72.27, abs=0.01)
    assert 3 * conv == pytest.approx(step, rel=1e-3)


def test_quick_run_end_to_end(tmp_path, capsys):
    compare = "torch" if HAS_TORCH else "none"
    path = tmp_path / "bench.json"
    assert bench.main_from_args("numpy", compare, str(path), quick=True) == 0
    out = capsys.readouterr().out
    records = json.loads(path.read_text())
    assert records and all(set(r) == set(bench.RECORD_KEYS) for r in records)
    frameworks = ["scratchseg", "torch"] if HAS_TORCH else ["scratchseg"]
    assert sorted({r["framework"] for r in records}) == frameworks
    for framework in frameworks:
        own = [r for r in records if r["framework"] == framework]
        names = {(r["name"], r["pass"]) for r in own}
        for op in ("conv2d", "conv_transpose2d", "max_pool2d", "relu", "concat",
                   "softmax_cross_entropy"):
            assert {(op, "forward"), (op, "backward")} <= names
        assert {("unet_train_step", "step"), ("gemm", "forward"),
                ("unet_inference", "forward")} <= names
        step = next(r for r in own if r["name"] == "unet_train_step")
        assert step["peak_rss_mib"] > 0 and step["gflops"] > 0
        assert step["frac_gemm_peak"] > 0 and step["median_ms"] > 0
        conv = next(r for r in own if r["name"] == "conv2d")
        assert conv["gflops_per_s"] > 0 and conv["frac_gemm_peak"] > 0
        relu = next(r for r in own if r["name"] == "relu")
        assert relu["gflops"] is None and relu["frac_gemm_peak"] is None
        assert all(len(r["times_ms"]) == r["repeats"] for r in own if r["name"] != "gemm")
        _check_step_phases(own, step)
    assert "| op | shape |" in out and "| conv2d fwd | 1x1x16x16 -> 4, 3x3 p1 |" in out
    assert "| U-Net train step:" in out and "| peak RSS MiB |" in out
    assert "| U-Net inference (eval, no_grad): 1x1x16x16" in out
    assert "| median ms: zero_grad, forward, loss |" in out and "| median ms: SGD update |" in out
    assert "GEMM peak:" in out and "sum × count, backward" in out


def _check_step_phases(records, step):
    """The phases are timed in the step's own calls (not its warm-ups) and cover it: each
    call's phases add up to its time, less the clock reads between them."""
    phases = {r["pass"]: r for r in records if r["name"] == "step_phase"}
    assert list(phases) == list(bench.STEP_PHASES)
    assert phases["forward"]["gflops"] == pytest.approx(step["gflops"] / 3)
    assert phases["backward"]["gflops"] == pytest.approx(2 * step["gflops"] / 3)
    assert phases["update"]["gflops"] is None
    assert all(len(r["times_ms"]) == len(step["times_ms"]) for r in phases.values())
    for k, total in enumerate(step["times_ms"]):
        parts = sum(phases[phase]["times_ms"][k] for phase in bench.STEP_PHASES)
        assert 0.95 * total <= parts <= total * (1 + 1e-9)


def test_threads_reach_both_workers_and_their_records():
    # one thread each, where the libraries' defaults would take every core (CI has two)
    compare = "torch" if HAS_TORCH else "none"
    records, _ = bench.run("numpy", compare, which="step", quick=True, threads=1)
    assert {r["framework"]: r["threads"] for r in records} == \
        {fw: 1 for fw in (["scratchseg", "torch"] if HAS_TORCH else ["scratchseg"])}
    assert "(cpu, 1 thread)" in bench._environment(records, "numpy")


def test_tables_without_torch_show_dashes():
    rec = dict.fromkeys(bench.RECORD_KEYS)
    rec.update(name="relu", framework="scratchseg", backend="numpy", shape="1x4x8x8",
               count=2, median_ms=0.5, pass_="forward")
    rec["pass"] = "forward"
    step = dict(rec, name="unet_train_step", shape="tiny", gflops=1.0, gflops_per_s=2.0,
                frac_gemm_peak=0.5, peak_rss_mib=100.0, import_rss_mib=30.0)
    step["pass"] = "step"
    ops = bench.format_ops_table([rec])
    assert "| relu fwd | 1x4x8x8 | 2 | 0.500 | - | - |" in ops
    assert "| **sum × count, forward** | whole U-Net | | 1.00 | - | - |" in ops
    table = bench.format_step_table([step])
    assert "| peak RSS MiB | 100 | - | - |" in table and "| % of GEMM peak | 50 | - | - |" in table


def test_step_table_puts_each_phase_beside_torch():
    records = [_record("scratchseg", 120.0, [120.0]), _record("torch", 100.0, [100.0])]
    for framework, times in (("scratchseg", (50.0, 60.0, 10.0)), ("torch", (40.0, 50.0, 10.0))):
        for phase, ms in zip(bench.STEP_PHASES, times):
            records.append(dict(_record(framework, ms, [ms]), name="step_phase"))
            records[-1]["pass"] = phase
    bench._add_rates(records, step_gflop=3.0)
    table = bench.format_step_table(records)
    assert "| median ms | 120 | 100 | 1.20 |" in table
    assert "| median ms: zero_grad, forward, loss | 50.0 | 40.0 | 1.25 |" in table
    assert "| median ms: backward | 60.0 | 50.0 | 1.20 |" in table
    assert "| median ms: SGD update | 10.0 | 10.0 | 1.00 |" in table
    assert table.index("| median ms |") < table.index("backward |") < table.index("| min ms |")
    assert "step_phase" not in bench.format_ops_table(records)
    forward = next(r for r in records if r["name"] == "step_phase" and r["pass"] == "forward")
    assert forward["gflops_per_s"] == pytest.approx(1.0 / 0.05)  # a third of 3 GFLOP in 50 ms


@pytest.mark.skipif(not HAS_TORCH, reason="PyTorch is not installed")
@pytest.mark.parametrize("padding, batch_norm, size", [("same", False, 16), ("valid", True, 44)])
def test_both_workers_build_the_same_network(padding, batch_norm, size):
    """The benchmark's PyTorch side is the tests' oracle, scratchseg/tools/torch_unet.py, built
    from the same config: the same parameters, and logits of the same size."""
    import torch

    config = bench.model_config(quick=True, padding=padding, batch_norm=batch_norm,
                                input_size=size)
    ours = bench_worker._Framework("scratchseg", "numpy").model(config)
    theirs = bench_worker._Framework("torch", "numpy").model(config)
    assert [(name, tuple(a.shape)) for name, a in ours.parameters()] == \
        [(name, tuple(p.shape)) for name, p in theirs.named_parameters()]
    out = bench.output_size(config)
    x = torch.zeros(1, config["in_channels"], size, size)
    assert tuple(theirs(x).shape) == (1, config["num_classes"], out, out)
    assert out == (size if padding == "same" else size - 40)


def test_the_model_options_shape_the_ops_and_the_step():
    """The paper's network: valid padding shrinks every map and crops the skips; its
    convolutions' FLOPs still add up to the summary's."""
    config = bench.model_config(base_channels=64, depth=4, padding="valid", input_size=572)
    specs = {(s["name"], s["shape"]) for s in bench.op_specs(config)}
    assert ("conv2d", "1x1x572x572 -> 64, 3x3 p0") in specs
    assert ("concat", "1x64x568x568 + 1x64x392x392") in specs  # 88 px cropped per side
    assert ("softmax_cross_entropy", "1x2x388x388") in specs
    step = bench.step_gflops(config)
    conv = sum(s["flops"] * s["count"] for s in bench.op_specs(config) if s["flops"]) / 1e9
    assert 3 * conv == pytest.approx(step, rel=2e-3)
    with_bn = bench.op_specs(bench.model_config(quick=True, batch_norm=True))
    convs = [s for s in with_bn if s["name"] == "conv2d" and "3x3" in s["shape"]]
    norms = [s for s in with_bn if s["name"] == "batch_norm2d"]
    assert sum(s["count"] for s in convs) == sum(s["count"] for s in norms)
    assert all(not s["args"]["bias"] for s in convs)
    assert "valid, batch norm" in bench.step_label(dict(config, batch_norm=True))


@pytest.mark.parametrize("framework", ["scratchseg"] + (["torch"] if HAS_TORCH else []))
def test_every_op_of_the_valid_network_runs_at_its_sizes(framework):
    """The op benchmarks take the sizes of the specs: valid convolutions shrink, a concat's
    skip is the larger encoder map (its gradient has the skip's shape), a convolution
    before batch norm has no bias."""
    config = bench.model_config(quick=True, padding="valid", input_size=44, batch_norm=True)
    fw = bench_worker._Framework(framework, "numpy")
    for spec in bench.op_specs(config):
        forward, backward = fw.op(spec)
        y, grads = forward(), backward()
        y = y[0] if isinstance(y, tuple) else y
        a = spec["args"]
        if spec["name"] == "conv2d":
            edge = a["s"] + 2 * a["pad"] - a["k"] + 1
            assert tuple(y.shape) == (a["n"], a["c_out"], edge, edge)
            assert len([g for g in grads if g is not None]) == 2 + a["bias"]
        if spec["name"] == "concat":
            n, c, skip, s = a["n"], a["c"], a["skip"], a["s"]
            assert spec["shape"] == f"{n}x{c}x{skip}x{skip} + {n}x{c}x{s}x{s}" and skip > s
            assert tuple(grads[0].shape) == (n, c, skip, skip)
            assert tuple(y.shape) == (n, 2 * c, s, s)


def test_bad_model_options_are_refused_with_the_sizes_that_work():
    with pytest.raises(ValueError, match="nearest valid sizes: 556 and 572"):
        bench.model_config(depth=4, padding="valid", input_size=570)
    with pytest.raises(ValueError, match="--base-channels must be an integer >= 1"):
        bench.model_config(base_channels=0)
    with pytest.raises(ValueError, match="engine"):
        bench.run("numpy", "none", engine="turbo")


def test_quick_inference_and_engine_reach_the_records(tmp_path, capsys):
    """--which infer: one forward per framework in a worker that runs nothing else (no GEMM
    block before it), the engine and the model's config in every record, and a table."""
    compare = "torch" if HAS_TORCH else "none"
    path = tmp_path / "infer.json"
    assert bench.main_from_args("numpy", compare, str(path), which="infer", quick=True,
                                engine="reference", padding="valid", input_size=44,
                                batch_size=2, num_classes=3) == 0
    out = capsys.readouterr().out
    assert "| U-Net inference (eval, no_grad): 2x1x44x44, base 4, depth 2, valid, 3 classes" \
        in out
    assert "(numpy, reference engine)" in out and "| peak RSS MiB |" in out
    records = json.loads(path.read_text())
    assert [r["name"] for r in records] == ["unet_inference"] * (2 if HAS_TORCH else 1)
    for r in records:
        assert r["peak_rss_mib"] >= r["import_rss_mib"] > 0 and r["gflops"] > 0
        assert r["config"] == dict(bench.reference_config(quick=True), batch=2, size=44,
                                   padding="valid", num_classes=3)
        assert r["engine"] == ("reference" if r["framework"] == "scratchseg" else None)


def _spy_models(fw, seen):
    """Make ``fw`` build models that record (gradients enabled, training) at each forward."""
    build = fw.model

    def model(config):
        net = build(config)
        forward = net.forward

        def spied(*args):
            if fw.name == "torch":
                seen.append((fw.torch.is_grad_enabled(), net.training))
            else:
                import scratchseg

                seen.append((scratchseg.is_grad_enabled(), net.training))
            return forward(*args)

        net.forward = spied
        return net

    fw.model = model


@pytest.mark.parametrize("framework", ["scratchseg"] + (["torch"] if HAS_TORCH else []))
def test_inference_runs_in_eval_mode_without_gradients(framework):
    fw = bench_worker._Framework(framework, "numpy")
    seen = []
    _spy_models(fw, seen)
    forward = fw.inference(bench.model_config(quick=True, batch_norm=True))
    logits = forward()
    forward()
    assert seen == [(False, False)] * 2
    assert tuple(logits.shape) == (1, 2, 16, 16)
    if framework == "torch":
        assert not logits.requires_grad


def test_inference_gets_a_worker_of_its_own(monkeypatch):
    """Its peak RSS is the forward's: --which all runs it apart from the step and the ops."""
    calls = []

    def spawn(framework, backend, tasks, *args, **kwargs):
        calls.append((framework, tuple(tasks), kwargs["config"]["depth"], kwargs["engine"]))
        return {"records": [], "skipped": None}

    monkeypatch.setattr(bench, "spawn_worker", spawn)
    bench.run("numpy", "none", which="all", quick=True, rounds=2, depth=3, engine="fast")
    assert calls == [("scratchseg", ("step", "ops"), 3, "fast"),
                     ("scratchseg", ("infer",), 3, "fast")] * 2


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="compare"):
        bench.run("numpy", "tensorflow")
    with pytest.raises(ValueError, match="which"):
        bench.run("numpy", "none", which="everything")
    with pytest.raises(ValueError, match="rounds"):
        bench.run("numpy", "none", rounds=0)
    with pytest.raises(ValueError, match="threads must be an integer >= 1"):
        bench.run("numpy", "none", threads=0)


def _record(framework, median, times, rss=None):
    rec = dict.fromkeys(bench.RECORD_KEYS)
    rec.update(name="unet_train_step", framework=framework, shape="tiny", median_ms=median,
               min_ms=min(times), times_ms=list(times), repeats=len(times), peak_rss_mib=rss)
    rec["pass"] = "step"
    return rec


def test_rounds_merge_to_the_best_round():
    rounds = [[_record("scratchseg", 30.0, [29.0, 30.0, 31.0], 100.0),
               _record("torch", 20.0, [20.0])],
              [_record("scratchseg", 10.0, [9.5, 10.0, 12.0], 120.0),
               _record("torch", 25.0, [19.0])]]
    merged = {r["framework"]: r for r in bench.merge_rounds(rounds)}
    ours, theirs = merged["scratchseg"], merged["torch"]
    assert ours["median_ms"] == 10.0 and ours["round_medians_ms"] == [30.0, 10.0]
    assert ours["min_ms"] == 9.5 and ours["repeats"] == 6 and len(ours["times_ms"]) == 6
    assert ours["peak_rss_mib"] == 120.0
    assert theirs["median_ms"] == 20.0 and theirs["min_ms"] == 19.0
    assert theirs["peak_rss_mib"] is None


@pytest.mark.parametrize("script", ["bench_ops.py", "bench_step.py"])
def test_scripts_parse_their_options(script):
    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for flag in ("--backend", "--compare", "--json", "--repeats", "--rounds", "--threads",
                 "--quick", "--engine", "--input-size", "--batch-size", "--base-channels",
                 "--depth", "--padding", "--batch-norm", "--no-batch-norm", "--num-classes"):
        assert flag in result.stdout


def _compare_versions():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import compare_versions
    finally:
        sys.path.pop(0)
    return compare_versions


def test_compare_versions_pairs_two_checkouts(tmp_path, capsys):
    """The same checkout on both sides, tiny model: every pair and the medians come back."""
    compare_versions = _compare_versions()
    out = tmp_path / "pairs.json"
    assert compare_versions.main([str(ROOT), str(ROOT), "--pairs", "2", "--quick",
                                  "--repeats", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert len(result["pairs"]) == 2
    assert all(p["before_ms"] > 0 and p["after_ms"] > 0 for p in result["pairs"])
    ratios = sorted(p["after_ms"] / p["before_ms"] for p in result["pairs"])
    assert result["median_ratio"] == pytest.approx(sum(ratios) / 2)
    assert "median of the pairs' ratios" in capsys.readouterr().out


def test_compare_versions_sets_the_engine_of_the_after_side_only(monkeypatch, capsys):
    compare_versions = _compare_versions()
    calls = []

    def spawn(framework, backend, tasks, quick, repeats, warmup, lr, **kwargs):
        calls.append((kwargs["package_root"], kwargs.get("engine")))
        record = dict(name="unet_train_step", median_ms=10.0)
        return {"records": [record], "skipped": None}

    monkeypatch.setattr(compare_versions.bench, "spawn_worker", spawn)
    assert compare_versions.main([str(ROOT), str(ROOT), "--pairs", "2", "--engine",
                                  "reference"]) == 0
    assert [engine for _, engine in calls] == [None, "reference"] * 2
    assert "median of the pairs' ratios 1.000" in capsys.readouterr().out


def test_compare_versions_refuses_a_directory_without_scratchseg(tmp_path):
    compare_versions = _compare_versions()
    with pytest.raises(SystemExit, match="not a scratchseg checkout"):
        compare_versions.main([str(tmp_path), str(ROOT), "--pairs", "1", "--quick"])
    with pytest.raises(SystemExit):
        compare_versions.main([str(ROOT), str(ROOT), "--pairs", "0"])


def test_compare_versions_summary_is_the_median_of_the_pairs_ratios():
    assert _compare_versions().summary([(10.0, 5.0), (20.0, 20.0), (30.0, 15.0)]) == dict(
        before_median_ms=20.0, after_median_ms=15.0, median_ratio=0.5,
        pairs=[dict(before_ms=10.0, after_ms=5.0), dict(before_ms=20.0, after_ms=20.0),
               dict(before_ms=30.0, after_ms=15.0)])
