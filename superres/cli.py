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


def _print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


# --------------------------------------------------------------------------- eval
def _cmd_eval(args: argparse.Namespace) -> int:
    from superres.evaluate import evaluate, format_report

    report = evaluate(
        args.model,
        Path(args.data),
        scale=args.scale,
        device=args.device,
        tile=args.tile,
        backend=args.backend,
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
    p.add_argument("--model", default=None, help="shipped model name or model file (default: best shipped x4 model)")
    p.add_argument("--out", default="upscaled", help="output folder (default: ./upscaled)")
    p.add_argument("--tile", type=_non_negative_int, default=256, help="tile size in input pixels (0: no tiling; default 256)")
    p.add_argument("--tile-overlap", type=_non_negative_int, default=16, help="overlap between tiles in input pixels (default 16)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--half", action="store_true", help="run the model in half precision (GPU)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="inference backend")
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
    parts += ["--threads", str(args.threads), "--backend", args.backend, "--out", args.out]
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
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.set_defaults(func=_cmd_benchmark)


# --------------------------------------------------------------------------- serve
def _cmd_serve(args: argparse.Namespace) -> int:
    from superres.serve import run_server
    from superres.serve.app import ServeConfig

    run_server(ServeConfig(
        host=args.host, port=args.port, device=args.device, workers=args.workers, threads=args.threads,
        queue_depth=args.queue_depth, max_upload_bytes=args.max_upload_mb * 1024 * 1024, max_pixels=args.max_pixels,
        max_tile=args.max_tile, result_ttl=args.result_ttl, job_timeout=args.job_timeout, abandon_after=args.abandon_after,
        token=args.token or os.environ.get("SUPERRES_SERVE_TOKEN") or None,
        cors_origins=args.cors_origin, model_files=args.model_file, peers_dir=args.peers_dir,
    ))
    return 0


def _add_serve(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="a web page and an HTTP API for upscaling (needs the [serve] extra)",
        description=(
            "Serve the upscaling page at http://HOST:PORT/ and the HTTP API under /v1 (OpenAPI at /openapi.json). "
            "Jobs wait in a bounded queue (429 past it) and run WORKERS at a time, tiled; uploads are checked "
            "against the size and pixel limits before they are decoded; results are removed after --result-ttl."
        ),
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; elsewhere needs a token)")
    p.add_argument("--port", type=_positive_int, default=8000, help="port (default 8000)")
    p.add_argument("--device", default="auto", help="torch device for the models (default auto)")
    p.add_argument("--workers", type=_positive_int, default=1, help="jobs run at the same time (default 1)")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: CPUs / workers)")
    p.add_argument("--queue-depth", type=_non_negative_int, default=8, help="jobs waiting beyond the running ones (default 8)")
    p.add_argument("--max-upload-mb", type=_positive_int, default=50, help="largest upload in MiB (default 50)")
    p.add_argument("--max-pixels", type=_positive_int, default=2_000_000,
                   help="largest input, width x height, checked on the header before decoding (default 2000000)")
    p.add_argument("--max-tile", type=_positive_int, default=512, help="largest tile a client may ask for (default 512)")
    p.add_argument("--result-ttl", type=float, default=600.0, help="seconds a result is kept (default 600)")
    p.add_argument("--job-timeout", type=float, default=600.0, help="seconds a job may run before it is cancelled (default 600)")
    p.add_argument("--abandon-after", type=float, default=300.0,
                   help="cancel a job nobody has asked about for this many seconds: its client went away (default 300)")
    p.add_argument("--token", default=None, help="access token for the API (or SUPERRES_SERVE_TOKEN; generated when binding beyond localhost)")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN", help="allow this origin (CORS is off by default)")
    p.add_argument("--model-file", action="append", default=[], metavar="PATH",
                   help="offer this server-side model file too (by its file name; clients cannot upload models)")
    p.add_argument("--peers-dir", default=None, metavar="DIR",
                   help="offer the peer models found in DIR too (e.g. ../shared/peers; 8-bit gray/RGB, whole image)")
    p.set_defaults(func=_cmd_serve)


_ADDERS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_eval,
    _add_data,
    _add_train,
    _add_upscale,
    _add_demo,
    _add_models,
    _add_export,
    _add_benchmark,
    _add_serve,
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
