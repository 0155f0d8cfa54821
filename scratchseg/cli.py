"""The ``scratchseg`` command: gradcheck, train, predict, evaluate, export, detect, summary,
bench."""

import argparse
import json
import sys
import traceback
from pathlib import Path

from scratchseg.backend import BACKENDS
from scratchseg.training.options import TrainOptions, add_option_flags


class OneLineErrorParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line with a pointer to --help (exit code 2)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class DefaultsShown(argparse.HelpFormatter):
    """Help that ends each flag's text with its default, unless the text already names it
    or there is none to show (a switch, or a default of None)."""

    def _get_help_string(self, action):
        text = action.help or ""
        hidden = action.default is None or action.default is False \
            or action.default == argparse.SUPPRESS
        if hidden or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _print_check_table(rows, first_column):
    width = max([len(first_column)] + [len(row[0]) for row in rows])
    header = f"{first_column:<{width}} {'gradient':<9} {'max abs err':>12} {'max rel err':>12}" \
             "  result"
    print(header)
    print("-" * len(header))
    for op, grad, abs_err, rel_err, passed, message in rows:
        result = "pass" if passed else f"FAIL  {message}"
        print(f"{op:<{width}} {grad:<9} {abs_err:>12.2e} {rel_err:>12.2e}  {result}")


def _gradcheck(args):
    from scratchseg.tools.selfcheck import run_checks, run_model_checks

    rows = run_checks(args.backend, args.seed)
    _print_check_table(rows, "op")
    if args.model:
        model_rows = run_model_checks(args.backend, args.seed, args.mode)
        print(f"\nThe whole U-Net ({args.mode} mode): every parameter's gradient")
        _print_check_table(model_rows, "network: layer")
        rows += model_rows
    failures = sum(not row[4] for row in rows)
    print(f"\n{len(rows) - failures} passed, {failures} failed ({args.backend}, float64)")
    return 1 if failures else 0


def _run_options(args, options_class, resume_options, paths):
    """(options, run folder) of a train command: the flags given, or with --resume the
    run's stored options with the given ones applied; ``paths`` name the flags that
    hold files, made absolute (a resumed run may start in another folder)."""
    from scratchseg.training.options import given_options

    given = given_options(args, options_class)
    for name in paths:
        if given.get(name) not in (None, "", "synthetic"):
            given[name] = str(Path(given[name]).resolve())
    if args.resume:
        if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
            raise ValueError(f"--resume {args.resume} continues writing into {args.resume}; "
                             f"drop --out {args.out} (copy the run folder first to branch it)")
        return resume_options(args.resume, **given), args.resume
    if not args.out:
        raise ValueError("--out RUN_DIR is required (or --resume RUN_DIR)")
    return options_class(**given), args.out


def _train(args):
    from scratchseg.training.distributed import ONE_PROCESS, MPICommunicator
    from scratchseg.training.loop import Trainer, resume_options

    communicator = MPICommunicator() if args.distributed else ONE_PROCESS
    args.communicator = communicator  # main() aborts every process on an error
    options, out = _run_options(args, TrainOptions, resume_options, ("data", "val_data"))
    trainer = Trainer(options, out, resume=bool(args.resume), progress=not args.quiet,
                      communicator=communicator)
    history = trainer.run()
    if communicator.rank == 0 and history and history[-1]["val_miou"] is not None:
        last = history[-1]
        print(f"done: val mIoU {last['val_miou']:.4f}, val pixel accuracy "
              f"{last['val_pixel_acc']:.4f}; wrote {trainer.out_dir}")
    return 0


def _predict(args):
    from tqdm import tqdm

    from scratchseg.inference import predict_files

    written = 0
    try:
        for path in predict_files(args.model, args.images, args.out, overlay_images=args.overlay,
                                  tile=args.tile, backend=args.backend,
                                  progress=not args.quiet, instances=args.instances,
                                  min_size=args.min_size):
            tqdm.write(str(path))
            written += 1
    except (ValueError, OSError) as error:
        if written:
            raise type(error)(f"{error} (the {written} file(s) listed above were written "
                              f"before it)") from error
        raise
    return 0


def _evaluate(args):
    from scratchseg.inference import evaluate_folder, evaluate_instances

    if args.instances:
        result = evaluate_instances(args.model, args.data, tile=args.tile, backend=args.backend,
                                    mask_suffix=args.mask_suffix, min_size=args.min_size)
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            _print_instance_scores(result)
        return 0
    result = evaluate_folder(args.model, args.data, tile=args.tile, backend=args.backend,
                             mask_suffix=args.mask_suffix)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'class':>5} {'value':>6} {'IoU':>8} {'Dice':>8}")
    for row in result["per_class"]:
        print(f"{row['class']:>5} {row['value']:>6} {row['iou']:>8.4f} {row['dice']:>8.4f}")
    print(f"\nimages {result['images']}  pixel accuracy {result['pixel_accuracy']:.4f}  "
          f"mean IoU {result['mean_iou']:.4f}  mean Dice {result['mean_dice']:.4f}")
    return 0


def _print_instance_scores(result):
    print(f"{'IoU >=':>6} {'TP':>6} {'FP':>6} {'FN':>6} {'precision':>9} {'recall':>7} "
          f"{'F1':>6} {'AP':>6}")
    for row in result["per_threshold"]:
        print(f"{row['threshold']:>6.2f} {row['tp']:>6} {row['fp']:>6} {row['fn']:>6} "
              f"{row['precision']:>9.4f} {row['recall']:>7.4f} {row['f1']:>6.4f} "
              f"{row['ap']:>6.4f}")
    print(f"\nimages {result['n_images']}  objects {result['n_true']} true, {result['n_pred']} "
          f"predicted  mean AP (DSB 2018) {result['mean_ap']:.4f}  PQ {result['pq']:.4f} "
          f"(SQ {result['sq']:.4f}, RQ {result['rq']:.4f})  per image: --json")


def _export(args):
    from scratchseg.export import export_onnx
    from scratchseg.inference import model_file

    export_onnx(model_file(args.model), args.onnx)
    print(args.onnx)
    return 0


def _detect_train(args):
    from scratchseg.detection.options import DetectOptions
    from scratchseg.detection.train import DetectionTrainer, resume_detection_options

    options, out = _run_options(args, DetectOptions, resume_detection_options,
                                ("data", "val_data", "images"))
    trainer = DetectionTrainer(options, out, resume=bool(args.resume), progress=not args.quiet)
    history = trainer.run()
    if history:
        print(f"done: val mAP@0.5 {history[-1]['val_map50']:.4f}, mAP@[.5:.95] "
              f"{history[-1]['val_map']:.4f}; wrote {trainer.out_dir}")
    return 0


def _detect_predict(args):
    from tqdm import tqdm

    from scratchseg.detection.inference import predict_detection_files

    for path in predict_detection_files(args.model, args.images, args.out,
                                        score_threshold=args.score_threshold,
                                        backend=args.backend, progress=not args.quiet):
        tqdm.write(str(path))
    return 0


def _detect_evaluate(args):
    from scratchseg.detection.inference import evaluate_detection

    result = evaluate_detection(args.model, args.data, args.images, samples=args.samples,
                                size=args.size, backend=args.backend, progress=not args.quiet)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{'class':<16} {'AP@[.5:.95]':>11} {'AP@0.5':>8}")
    for row in result["per_class"]:
        print(f"{row['name']:<16} {row['ap']:>11.4f} {row['ap50']:>8.4f}")
    stages = "  ".join(f"{k} {v * 1000:.1f} ms" for k, v in result["seconds_per_image"].items())
    print(f"\n{result['model']} on {result['images']} images: mAP@0.5 {result['map50']:.4f}  "
          f"mAP@[.5:.95] {result['map']:.4f}  mAP@0.75 {result['map75']:.4f}\n"
          f"per image: {result['total_seconds_per_image'] * 1000:.1f} ms ({stages})")
    return 0


def _add_detect_commands(commands, defaults_shown, model_help):
    from scratchseg.detection.options import DetectOptions

    detect = commands.add_parser(
        "detect", help="R-CNN, Fast R-CNN and Faster R-CNN: train, predict, evaluate",
        **defaults_shown)
    stages = detect.add_subparsers(dest="stage", required=True)
    train = stages.add_parser("train", help="train a detector", **defaults_shown)
    train.add_argument("--out", help="run directory (model, checkpoint, metrics, pictures)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    add_option_flags(train, DetectOptions)
    train.set_defaults(run=_detect_train)

    predict = stages.add_parser("predict", help="draw detected boxes, classes and scores",
                                **defaults_shown)
    predict.add_argument("--model", required=True, help=model_help)
    predict.add_argument("--out", required=True,
                         help="folder for <stem>_detections.png and detections.json")
    predict.add_argument("--score-threshold", type=float, default=0.5,
                         help="draw and list detections scoring at least this")
    predict.add_argument("images", nargs="+", help="PNG, JPEG, BMP, GIF or TIFF images")
    predict.set_defaults(run=_detect_predict)

    evaluate = stages.add_parser("evaluate", help="mAP and time per image", **defaults_shown)
    evaluate.add_argument("--model", required=True, help=model_help)
    evaluate.add_argument("--data", default="synthetic",
                          help="'synthetic' (scenes never trained on) or a COCO JSON")
    evaluate.add_argument("--samples", type=int, default=100,
                          help="with --data synthetic: how many scenes")
    evaluate.add_argument("--size", type=int, default=None,
                          help="with --data synthetic: scene edge (default: the training "
                               "scenes'), with as many objects per area")
    evaluate.add_argument("--images", default=None,
                          help="folder of the COCO JSON's images (default: its folder)")
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    evaluate.set_defaults(run=_detect_evaluate)
    for sub in (predict, evaluate):
        sub.add_argument("--backend", choices=BACKENDS, default="numpy", help="array module")
        sub.add_argument("--quiet", action="store_true", help="no progress bar")


def _summary(args):
    from scratchseg.nn import UNet
    from scratchseg.nn.summary import format_summary, unet_summary

    model = UNet(args.in_channels, args.num_classes, args.base_channels, args.depth,
                 args.padding, args.batch_norm, args.dropout)
    for flag, value in (("--input-size", args.input_size), ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    size = args.input_size
    if size is None:
        size = model.valid_input_size(572 if args.padding == "valid" else 256)
    print(f"U-Net {model.config}, input {size}x{size} -> output "
          f"{model.output_size(size)}x{model.output_size(size)}, batch {args.batch_size}")
    print(format_summary(unet_summary(model, size, args.batch_size)))
    return 0


def _bench(args):
    from scratchseg.tools.bench import main_from_args, model_options

    return main_from_args(args.backend, args.compare, args.json, which=args.which,
                          quick=args.quick, repeats=args.repeats, warmup=args.warmup,
                          rounds=args.rounds, threads=args.threads, engine=args.engine,
                          **model_options(args))


def build_parser():
    parser = OneLineErrorParser(prog="scratchseg", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    defaults_shown = dict(formatter_class=DefaultsShown)

    check = commands.add_parser(
        "gradcheck", help="check every op's and layer's gradients against central differences",
        **defaults_shown)
    check.add_argument("--backend", choices=BACKENDS, default="numpy", help="array module")
    check.add_argument("--seed", type=int, default=0, help="seed of the test inputs")
    check.add_argument("--model", action="store_true",
                       help="also check the whole U-Net (tiny configurations), layer by layer")
    check.add_argument("--mode", choices=("full", "random"), default="full",
                       help="for --model: every element, or one random direction per tensor")
    check.set_defaults(run=_gradcheck)

    train = commands.add_parser("train", help="train a U-Net", **defaults_shown)
    train.add_argument("--out", help="run directory (model, checkpoint, metrics, pictures)")
    train.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--distributed", action="store_true",
                       help="data-parallel over MPI: run under mpirun -n N")
    add_option_flags(train, TrainOptions)  # one flag per option, derived from its field
    train.set_defaults(run=_train)

    model_help = ("a run folder (its model_best.safetensors, else model.safetensors) or a "
                  "model file")
    predict = commands.add_parser("predict", help="write predicted masks for images",
                                  **defaults_shown)
    predict.add_argument("--model", required=True, help=model_help)
    predict.add_argument("--out", required=True,
                         help="folder for <stem>.png masks (<stem>_<page>.png for stacks)")
    predict.add_argument("--overlay", action="store_true", help="also write coloured overlays")
    predict.add_argument("--quiet", action="store_true", help="no progress bar")
    predict.add_argument("--instances", action="store_true",
                         help="also write <stem>_instances.png: 16-bit object labels, 0 for "
                              "background (a boundary model's interiors grown by a watershed, "
                              "else connected components); --overlay then outlines each object")
    predict.add_argument("images", nargs="+", help="PNG, JPEG, BMP, GIF or TIFF images")

    evaluate = commands.add_parser("evaluate", help="metrics of a model on a labelled folder",
                                   **defaults_shown)
    evaluate.add_argument("--model", required=True, help=model_help)
    evaluate.add_argument("--data", required=True, help="folder with images/ and masks/")
    evaluate.add_argument("--mask-suffix", default=None,
                          help="a mask's stem is its image's stem plus this (default: the "
                               "training run's)")
    evaluate.add_argument("--instances", action="store_true",
                          help="match predicted objects to the masks' instance ids: TP, FP, "
                               "FN, precision, recall, F1 and AP at IoU 0.5..0.95, mean AP, PQ")
    evaluate.add_argument("--json", action="store_true", help="print JSON")
    for sub, run in ((predict, _predict), (evaluate, _evaluate)):
        sub.add_argument("--tile", type=int, default=None,
                         help="output tile edge (default: up to 192 pixels)")
        sub.add_argument("--backend", choices=BACKENDS, default="numpy", help="array module")
        sub.add_argument("--min-size", type=int, default=0,
                         help="with --instances: drop objects of fewer pixels")
        sub.set_defaults(run=run)

    export = commands.add_parser("export", help="write a trained model as an ONNX file",
                                 **defaults_shown)
    export.add_argument("--model", required=True, help=model_help)
    export.add_argument("--onnx", required=True, metavar="OUT.onnx", help="the file to write")
    export.set_defaults(run=_export)

    _add_detect_commands(commands, defaults_shown, model_help)

    summary = commands.add_parser("summary", help="per-layer shapes, parameters, FLOPs, memory",
                                  **defaults_shown)
    summary.add_argument("--in-channels", type=int, default=1, help="image channels")
    summary.add_argument("--num-classes", type=int, default=2, help="classes")
    summary.add_argument("--base-channels", type=int, default=64,
                         help="channels of the first level")
    summary.add_argument("--depth", type=int, default=4, help="number of 2x2 poolings")
    summary.add_argument("--padding", choices=("valid", "same"), default="valid",
                         help="valid (the paper's) or same")
    summary.add_argument("--batch-norm", action="store_true", help="batch norm after convs")
    summary.add_argument("--dropout", type=float, default=0.0,
                         help="dropout at the end of the contracting path")
    summary.add_argument("--input-size", type=int, default=None,
                         help="input edge (default: 572 valid, 256 same)")
    summary.add_argument("--batch-size", type=int, default=1, help="images per batch")
    summary.set_defaults(run=_summary)

    from scratchseg.tools.bench import add_arguments

    bench = commands.add_parser(
        "bench", help="time every U-Net op and a training step against PyTorch",
        **defaults_shown)
    add_arguments(bench)
    bench.set_defaults(run=_bench)
    return parser


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, or a bad option already reported in one line
        return stop.code
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError, RuntimeError) as error:
        print(f"scratchseg {args.command}: error: {error}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print(f"scratchseg {args.command}: interrupted", file=sys.stderr)
        code = 130
    except BaseException:
        if not _several_processes(args):
            raise
        traceback.print_exc()
        code = 1
    if _several_processes(args):
        # the other processes may be waiting in a collective: end the whole job
        print(f"scratchseg {args.command}: process {args.communicator.rank} of "
              f"{args.communicator.size} failed; aborting every process", file=sys.stderr)
        args.communicator.abort(code)
    return code


def _several_processes(args):
    communicator = getattr(args, "communicator", None)
    return communicator is not None and communicator.size > 1


if __name__ == "__main__":
    sys.exit(main())
