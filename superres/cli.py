"""The ``superres`` command: argument parsing only.

Each subcommand parses its options here and calls one function of the module that owns the
feature (``evaluate``, ``data``, ``training``, ``inference``, ``demo`` ...). Modules are imported
inside the handlers so that ``superres --help`` answers without importing torch.

Errors the user can act on are raised as :class:`superres.errors.SuperresError` anywhere below; they
are printed here as one line on stderr with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from superres import __version__
from superres.errors import SuperresError
from superres.scales import SCALES


def _scale(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"scale must be an integer, got {text!r}") from None
    if value not in SCALES:
        raise argparse.ArgumentTypeError(f"unsupported scale {value}; choose one of {', '.join(map(str, SCALES))}")
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def _tile(text: str) -> int | str:
    """``--tile``: ``auto`` or a size in input pixels >= 0."""
    return "auto" if text == "auto" else _non_negative_int(text)


_PRECISION_HELP = (
    "model precision: auto (bf16 where the CPU/GPU computes it natively and the model's measured Set5/Set14 "
    "PSNR-Y stays within 0.01 dB of fp32, else fp32), fp32, bf16, fp16 (default: %(default)s)"
)


def _print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


# --------------------------------------------------------------------------- eval
def _cmd_eval(args: argparse.Namespace) -> int:
    from superres.evaluate import evaluate, format_report
    from superres.threads import apply_threads

    apply_threads(args.threads)
    report = evaluate(
        args.model,
        Path(args.data),
        scale=args.scale,
        device=args.device,
        tile=args.tile,
        backend=args.backend,
        precision=args.precision,
    )
    if args.json:
        _print_json(report)
    else:
        print(format_report(report))
    return 0


def _add_eval(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="score a model on a benchmark folder (HR/ + LR_bicubic/X{s}/) under the paper protocol",
        description=(
            "Score a model on a benchmark folder laid out as DIR/HR/*.png and DIR/LR_bicubic/X{s}/*.png "
            "(the LR is made with MATLAB-exact bicubic from the top-left mod-cropped HR when LR_bicubic is "
            "absent). PSNR/SSIM on Y of BT.601 (grayscale on intensity), shave = scale."
        ),
    )
    p.add_argument("--model", default="bicubic", help="'bicubic', a shipped model name, or a model file (.safetensors)")
    p.add_argument("--data", required=True, help="benchmark folder, e.g. ../shared/data/Set5")
    p.add_argument("--scale", type=_scale, required=True, help="upscaling factor (2, 3, 4)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    p.add_argument("--device", default="cpu", help="torch device for models (cpu, cuda, cuda:1, ...)")
    p.add_argument("--tile", type=_non_negative_int, default=0, help="tile size in LR pixels (0: whole image)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="inference backend for models")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="fp32", help=_PRECISION_HELP)
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for torch and onnxruntime (default: the physical cores not busy at the start)")
    p.set_defaults(func=_cmd_eval)


# --------------------------------------------------------------------------- data
def _cmd_data_patches(args: argparse.Namespace) -> int:
    from superres.data.patches import make_patch_files

    summary = make_patch_files(
        [Path(s) for s in args.sources],
        Path(args.out),
        hr_size=args.hr_size,
        scale=args.scale,
        stride=args.stride,
        max_patches=args.max_patches,
        seed=args.seed,
    )
    notes = []
    if summary.get("stride_reduced"):
        notes.append(f"stride reduced to {summary['stride']} to have {summary['count']} patches")
    if summary.get("skipped"):
        notes.append(f"{summary['skipped']} image(s) smaller than {args.hr_size}x{args.hr_size} skipped")
    print(
        f"wrote {summary['count']} patch pairs ({summary['hr_shape']} HR, {summary['lr_shape']} LR) "
        f"to {summary['hr_file']} and {summary['pair_file']}" + (f" ({'; '.join(notes)})" if notes else "")
    )
    return 0


def _cmd_data_stats(args: argparse.Namespace) -> int:
    from superres.data.stats import compute_stats, format_stats, plot_stats

    stats = compute_stats([Path(s) for s in args.sources])
    if args.plot:
        plot_stats(stats, Path(args.plot))
    if args.json:
        _print_json(stats)
    else:
        print(format_stats(stats))
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare and inspect training data", description="Prepare and inspect training data.")
    data_sub = p.add_subparsers(dest="data_command", metavar="{patches,stats}")
    data_sub.required = True

    pp = data_sub.add_parser(
        "patches",
        help="cut HR patches from image folders and write hr_images.npz and hr_lr_images.npz",
        description=(
            "Cut HR patches from image files or folders and write DIR/hr_images.npz (array 'hr', N x H x W x C) "
            "and DIR/hr_lr_images.npz (arrays 'hr' and 'lr'); LR is made with MATLAB-exact bicubic."
        ),
    )
    pp.add_argument("sources", nargs="+", metavar="SRC", help="image files or folders (searched recursively)")
    pp.add_argument("--out", required=True, help="output folder")
    pp.add_argument("--hr-size", type=_positive_int, default=128, help="HR patch side in pixels (default 128)")
    pp.add_argument("--scale", type=_scale, default=4, help="downscaling factor for the LR patches (default 4)")
    pp.add_argument("--stride", type=_positive_int, default=None,
                    help="step between patches (default: hr-size, reduced automatically if --max-patches needs more patches)")
    pp.add_argument("--max-patches", type=_positive_int, default=None,
                    help="write exactly N patches, a random choice from the grid; without --stride the stride is reduced "
                         "to the largest step giving at least N (reported); with a --stride too coarse it is an error")
    pp.add_argument("--seed", type=int, default=0, help="random seed for --max-patches (default 0)")
    pp.set_defaults(func=_cmd_data_patches)

    ps = data_sub.add_parser(
        "stats",
        help="count, sizes, channels, bit depth, per-channel mean/std of image folders",
        description="Summarise image files or folders: count, size range, channels, bit depth, per-channel mean and std.",
    )
    ps.add_argument("sources", nargs="+", metavar="SRC", help="image files or folders (searched recursively)")
    ps.add_argument("--plot", metavar="FILE.png", help="also write histograms and a size scatter plot")
    ps.add_argument("--json", action="store_true", help="print the statistics as one JSON object")
    ps.set_defaults(func=_cmd_data_stats)


# --------------------------------------------------------------------------- train
def _cmd_train(args: argparse.Namespace) -> int:
    from superres.training import train_from_cli

    run_dir = train_from_cli(args.config, args.overrides, resume=args.resume, out=args.out)
    print(f"run folder: {run_dir}")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model from a YAML config (presets in configs/)",
        description=(
            "Train a model from a YAML config. Any config key can be overridden as key=value "
            "(dotted for nested keys, e.g. train.iterations=2000 model.name=enhanced). "
            "The run folder gets the resolved config, checkpoints, metrics.csv, curves.png and the model file."
        ),
    )
    p.add_argument("--config", required=True, help="YAML config file")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.add_argument("--resume", nargs="?", const="auto", default=None, metavar="RUN_DIR",
                   help="resume from the last checkpoint of RUN_DIR (default: the config's run folder)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    p.set_defaults(func=_cmd_train)


# --------------------------------------------------------------------------- upscale
def _cmd_upscale(args: argparse.Namespace) -> int:
    from superres.inference import upscale_files
    from superres.threads import apply_threads, physical_cores

    threads = apply_threads(args.threads)
    cores = physical_cores()
    # Printed with the first choice upscale_files announces, i.e. once every option is checked, so an
    # option error stays one line.
    pending = [f"threads: {threads} ({cores} physical core(s), {cores - threads} busy at the start; --threads sets it)"]

    def note(line: str) -> None:
        if args.threads is None:
            for earlier in pending:
                print(earlier, file=sys.stderr, flush=True)
        pending.clear()
        print(line, file=sys.stderr, flush=True)

    written = upscale_files(
        [Path(s) for s in args.inputs],
        model=args.model,
        out_dir=Path(args.out),
        tile=args.tile,
        tile_overlap=args.tile_overlap,
        device=args.device,
        half=args.half,
        backend=args.backend,
        progress=not args.quiet,
        precision=args.precision,
        note=None if args.quiet else note,
    )
    if not args.quiet:
        print(f"wrote {len(written)} image(s) to {args.out}")
    return 0


def _add_upscale(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upscale",
        help="upscale images with a model (tiled, keeps bit depth, channels and alpha)",
        description=(
            "Upscale image files or folders. Large images are processed in overlapping tiles blended "
            "together, so memory is bounded by the tile size. 16-bit in gives 16-bit out, gray gives gray, "
            "alpha is kept (resized with bicubic)."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders")
    p.add_argument("--model", default=None,
                   help="shipped model name or model file (default: the best shipped x4 model within this machine's "
                        "speed budget, about 1 s per output megapixel on a CPU; the choice is printed)")
    p.add_argument("--out", default="upscaled", help="output folder (default: ./upscaled)")
    p.add_argument("--tile", type=_tile, default="auto",
                   help="tile size in input pixels (0: no tiling; default auto: the largest tile whose memory fits "
                        "a quarter of the free RAM, half of the free GPU memory)")
    p.add_argument("--tile-overlap", type=_non_negative_int, default=16, help="overlap between tiles in input pixels (default 16)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--half", action="store_true", help="run the model in half precision (GPU)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="inference backend")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto", help=_PRECISION_HELP)
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for torch and onnxruntime (default: the physical cores not busy at the start)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_upscale)


# --------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from superres.demo import run_demo

    run_demo(Path(args.out), seconds=args.seconds)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="build a patch set from sample photos, train baseline and enhanced briefly, compare with bicubic",
        description=(
            "The end-to-end tour in a few minutes on a CPU: patches from scikit-image's sample photos, "
            "short training of `baseline` and `enhanced` at x4, scores against bicubic on held-out images, "
            "metrics.json and a comparison figure."
        ),
    )
    p.add_argument("--out", default="demo-out", help="output folder (default: ./demo-out)")
    p.add_argument("--seconds", type=float, default=None, help="training time budget per model in seconds")
    p.set_defaults(func=_cmd_demo)


# --------------------------------------------------------------------------- models
def _cmd_models(args: argparse.Namespace) -> int:
    from superres.modelfile import list_models, format_models

    entries = list_models()
    if args.json:
        _print_json(entries)
    else:
        print(format_models(entries))
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list shipped pretrained models and registered architectures",
                       description="List the pretrained models shipped with superres and the architectures in the registry.")
    p.add_argument("--json", action="store_true", help="print one JSON list")
    p.set_defaults(func=_cmd_models)


# --------------------------------------------------------------------------- export
def _cmd_export(args: argparse.Namespace) -> int:
    from superres.export import export_onnx

    if args.io == "uint8":
        from superres.graphio import export_uint8_onnx

        info = export_uint8_onnx(args.model, Path(args.out), opset=args.opset)
        print(f"wrote {info['path']} ({info['arch']}, x{info['scale']}; uint8 NHWC lr_u8 -> sr_u8; "
              f"at most {info['max_level_diff']} level from the float graph + rounding)")
        return 0
    result = export_onnx(args.model, Path(args.out), opset=args.opset, check_image=args.check_image)
    print(result.summary())
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX (dynamic batch/height/width), verified with onnxruntime",
        description=(
            "Export a shipped model or model file to ONNX with dynamic batch, height and width and the model's "
            "metadata (arch, scale, in_channels, value range) in metadata_props. The file is checked with "
            "onnxruntime against PyTorch on a random input and a real photo (max |diff| < 1e-4, printed) before "
            "it is written. An int8 model (e.g. lumanet-x4-deep-int8) is written with its quantized convs as "
            "QLinearConv and checked the same way. "
            "Run it with `superres upscale --backend onnx --model FILE.onnx`."
        ),
    )
    p.add_argument("model", help="shipped model name or model file (.safetensors)")
    p.add_argument("--out", required=True, help="ONNX file to write, e.g. model.onnx")
    p.add_argument("--opset", type=_positive_int, default=17, help="ONNX opset version (default 17; >= 11)")
    p.add_argument("--io", choices=("float", "uint8"), default="float",
                   help="float: lr/sr float NCHW in [0, 1] (default); uint8: lr_u8/sr_u8 uint8 NHWC images, the "
                        "conversions inside the graph (RGB models)")
    p.add_argument("--check-image", default=None, metavar="IMAGE",
                   help="LR image for the agreement check (default: scikit-image's astronaut photo)")
    p.set_defaults(func=_cmd_export)


# --------------------------------------------------------------------------- benchmark
def _benchmark_command(args: argparse.Namespace) -> str:
    """The full command line equivalent to ``args`` (defaults spelled out), recorded with the table."""
    parts = ["superres benchmark", "--sets", *args.sets, "--scales", *map(str, args.scales)]
    if args.models:
        parts += ["--models", *args.models]
    parts += ["--peers" if args.peers else "--no-peers", "--data-root", args.data_root]
    if args.peers_dir is not None:
        parts += ["--peers-dir", args.peers_dir]
    parts += ["--threads", str(args.threads), "--backend", args.backend]
    if args.precision != "fp32":
        parts += ["--precision", args.precision]
    parts += ["--out", args.out]
    return " ".join(parts)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from superres.benchmark import run_benchmark

    doc = run_benchmark(
        sets=args.sets,
        scales=args.scales,
        models=args.models,
        peers=args.peers,
        data_root=Path(args.data_root),
        peers_dir=None if args.peers_dir is None else Path(args.peers_dir),
        out=Path(args.out),
        threads=args.threads,
        backend=args.backend,
        precision=args.precision,
        command=_benchmark_command(args),
        progress=None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True)),
    )
    print(f"{len(doc['rows'])} rows written to {Path(args.out) / 'benchmark.md'} and {Path(args.out) / 'benchmark.json'}")
    return 0


def _add_benchmark(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "benchmark",
        help="score shipped models, bicubic and peer models on test sets (quality, params, FLOPs, CPU time)",
        description=(
            "Score every shipped model, any --models given, bicubic and (with --peers) the peer models found in "
            "the peers folder on each set and scale under the paper protocol, with parameters, FLOPs for a "
            "512x512 output and CPU time per output megapixel at a fixed thread count. Writes DIR/benchmark.md "
            "and DIR/benchmark.json."
        ),
    )
    p.add_argument("--sets", nargs="+", default=["Set5", "Set14"], metavar="SET", help="set folders under --data-root (default: Set5 Set14)")
    p.add_argument("--scales", nargs="+", type=_scale, default=[2, 3, 4], metavar="S", help="scales (default: 2 3 4)")
    p.add_argument("--models", nargs="*", default=[], metavar="MODEL", help="extra model files or shipped names")
    p.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True, help="include the peer models (default: yes)")
    p.add_argument("--data-root", default="../shared/data", help="folder holding the sets (default: ../shared/data)")
    p.add_argument("--peers-dir", default=None, help="folder with the peer weights (default: DATA_ROOT/../peers)")
    p.add_argument("--out", default="benchmark-out", help="output folder (default: ./benchmark-out)")
    p.add_argument("--threads", type=_positive_int, default=1, help="CPU threads for every method (default 1)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="inference backend for our models")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="fp32", help=_PRECISION_HELP)
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_benchmark)


_ADDERS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_eval,
    _add_data,
    _add_train,
    _add_upscale,
    _add_demo,
    _add_models,
    _add_export,
    _add_benchmark,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="superres",
        description="Single-image super-resolution: MATLAB-exact data, paper-protocol metrics, training, tiled upscaling.",
    )
    parser.add_argument("--version", action="version", version=f"superres {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in _ADDERS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from superres.threads import prefer_passive_waits

    prefer_passive_waits()  # OpenMP workers sleep instead of spinning (before torch is imported)
    try:
        return int(args.func(args) or 0)
    except SuperresError as exc:
        print(f"superres: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("superres: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`superres models | head`): stop quietly, as other command-line tools
        # do. Point stdout at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
