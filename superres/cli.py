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


def _int_at_least(minimum: int, what: str) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= ``minimum``, else an error saying it expected ``what``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {value}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _tile(text: str) -> int | str:
    """``--tile``: ``auto`` or a size in input pixels >= 0."""
    return "auto" if text == "auto" else _non_negative_int(text)


def _add_precision_options(p: argparse.ArgumentParser, default: str) -> None:
    """``--precision`` and its alias ``--bf16`` (resolved by :func:`_precision`, which knows ``default``)."""
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default=None,
                   help="model precision: auto (bf16 where the CPU/GPU computes it natively and the model's measured "
                   "Set5/Set14 PSNR-Y stays within 0.01 dB of fp32, else fp32), fp32, bf16, fp16 "
                   f"(default: {default})")
    p.add_argument("--bf16", action="store_true",
                   help="same as --precision bf16: bf16 autocast on a CPU (native with AVX512-BF16/AMX, else "
                   "emulated, slower, with a note) or a GPU with bf16; refused on MPS, on a GPU without bf16 and "
                   "with --backend onnx")
    p.set_defaults(precision_default=default)


def _precision(args: argparse.Namespace) -> str:
    """The precision ``--precision``/``--bf16`` ask for (the command's default when neither is given);
    ``--bf16`` with another ``--precision`` is an error."""
    if args.bf16:
        if args.precision not in (None, "bf16"):
            raise SuperresError(f"--bf16 and --precision {args.precision} conflict: give one of them")
        return "bf16"
    return args.precision or args.precision_default


def _print_json(obj: object) -> None:
    sys.stdout.write(json.dumps(obj, indent=2) + "\n")


# --------------------------------------------------------------------------- eval
def _cmd_eval(args: argparse.Namespace) -> int:
    from superres.evaluate import evaluate, format_report
    from superres.threads import apply_threads

    args.precision = _precision(args)
    apply_threads(args.threads)
    report = evaluate(
        args.model,
        Path(args.data),
        scale=args.scale,
        device=_concrete_device(args.device, args.backend),
        tile=args.tile,
        backend=args.backend,
        perceptual=_perceptual_metric(args),
        lr=args.lr,
        precision=args.precision,
        progress=True,
    )
    _device_announcer(args)(_concrete_device(args.device, args.backend))
    if args.json:
        _print_json(report)
    else:
        print(format_report(report))
    return 0


def _perceptual_metric(args: argparse.Namespace):
    """The metric --perceptual names (built once, with --perceptual-weights / --lpips-heads), or None."""
    if args.perceptual is None:
        if args.perceptual_weights is not None or args.lpips_heads is not None:
            raise SuperresError("--perceptual-weights / --lpips-heads: give --perceptual too")
        return None
    from superres.perceptual import build_perceptual

    return build_perceptual(args.perceptual, weights_path=args.perceptual_weights, heads_path=args.lpips_heads)


def _add_perceptual_options(p: argparse.ArgumentParser) -> None:
    # The names are checked by superres.perceptual.build_perceptual (not imported here: it imports torch).
    p.add_argument("--perceptual", nargs="?", const="effdist", default=None, metavar="METRIC",
                   help="also report a perceptual distance per image and its mean: effdist (the default, offline "
                   "with superres[perceptual]), lpips-alex, lpips-vgg, lpips-squeeze; see docs/PROTOCOL.md")
    p.add_argument("--perceptual-weights", default=None, metavar="PATH",
                   help="backbone weights file for --perceptual (EfficientNet-Lite0's, or torchvision's "
                   "alexnet/vgg16/squeezenet1_1 file for lpips-*; default: installed package / torch hub cache)")
    p.add_argument("--lpips-heads", default=None, metavar="PATH",
                   help="LPIPS v0.1 heads file (default: lpips/weights/v0.1/<net>.pth of the installed lpips package)")


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
    p.add_argument("--model", default="bicubic", help="'bicubic', a shipped model name, a model file (.safetensors), "
                   "community weights (.pth) or a Real-ESRGAN peer name")
    p.add_argument("--data", required=True, help="benchmark folder, e.g. ../shared/data/Set5")
    p.add_argument("--scale", type=_scale, required=True, help="upscaling factor (2, 3, 4)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    p.add_argument("--device", default="auto", help="torch device for models: auto (CUDA, then MPS, then CPU; the default), cpu, cuda, cuda:1, mps")
    p.add_argument("--tile", type=_non_negative_int, default=0, help="tile size in LR pixels (0: whole image)")
    p.add_argument("--backend", choices=("torch", "onnx"), default="torch", help="inference backend for models")
    _add_perceptual_options(p)
    p.add_argument("--lr", default="LR_bicubic", metavar="NAME",
                   help="LR folder DATA/NAME/X{s} (default LR_bicubic; e.g. LR_medium from `superres data degrade`)")
    _add_precision_options(p, "fp32")
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
        progress=True,
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

    stats = compute_stats([Path(s) for s in args.sources], progress=True)
    if args.plot:
        plot_stats(stats, Path(args.plot))
    if args.json:
        _print_json(stats)
    else:
        print(format_stats(stats))
        if args.plot:
            print(f"plot written to {args.plot}")
    return 0


def _cmd_data_degrade(args: argparse.Namespace) -> int:
    from superres.degrade import make_degraded_set

    summary = make_degraded_set(args.sources, args.out, scale=args.scale, preset=args.preset, seed=args.seed,
                                overrides=args.overrides, progress=True)
    print(f"wrote {summary['count']} pairs to {summary['hr_dir']} and {summary['lr_dir']}")
    return 0


def _add_data(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="prepare and inspect training data", description="Prepare and inspect training data.")
    data_sub = p.add_subparsers(dest="data_command", metavar="{patches,stats,degrade}")
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

    pd = data_sub.add_parser(
        "degrade",
        help="write a reproducible real-world degraded test set (HR/ + LR_<preset>/X{s}/)",
        description=(
            "Mod-crop each image to a multiple of --scale into OUT/HR/ and write its degraded LR (Real-ESRGAN's "
            "second-order model, docs/DEGRADATIONS.md) into OUT/LR_<preset>/X<scale>/; the same --seed gives "
            "byte-identical files. Score it with `superres eval --data OUT --lr LR_<preset>`."
        ),
    )
    pd.add_argument("sources", nargs="+", metavar="SRC", help="image files or folders (searched recursively)")
    pd.add_argument("--out", required=True, help="output folder")
    pd.add_argument("--scale", type=_scale, default=4, help="downscaling factor (default 4)")
    pd.add_argument("--preset", default="medium", help="light, medium, heavy or realesrgan (default medium)")
    pd.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    pd.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                    help="override a preset value, a key of data.degradation (e.g. first.noise_range=[1,10]); repeatable")
    pd.set_defaults(func=_cmd_data_degrade)


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
    from superres.outputs import OutputSize, rank_and_world, rank_device
    from superres.video import is_video, upscale_videos, videos_in

    from superres.threads import apply_threads, physical_cores

    size = OutputSize(outscale=args.outscale, size=args.size, width=args.width)
    args.precision = _precision(args)
    announce = _device_announcer(args)
    threads = apply_threads(args.threads)
    cores = physical_cores()
    # Printed with the first choice upscale_files announces, i.e. once every option is checked, so an
    # option error stays one line.
    pending = [] if args.threads is not None else [
        f"threads: {threads} ({cores} physical core(s), {cores - threads} busy at the start; --threads sets it)"]

    said: set[str] = set()

    def note(line: str) -> None:
        # Images and videos each announce their choices: a choice is said once per run.
        for text in [*pending, line]:
            if text not in said:
                said.add(text)
                print(text, file=sys.stderr, flush=True)
        pending.clear()

    model = args.model
    if args.purpose is not None or args.strength is not None:
        from superres.devices import resolve_device
        from superres.speed import model_for

        if args.strength is not None and (args.backend == "onnx" or str(args.model or "").lower().endswith(".onnx")):
            raise SuperresError("--strength: blends two PyTorch networks; not with the onnx backend")
        model, choices = model_for(args.model, resolve_device(_concrete_device(args.device, args.backend)),
                                   purpose=args.purpose, strength=args.strength)
        pending += choices

    args.device = rank_device(args.device)  # torchrun: one GPU per rank
    paths = [Path(s) for s in args.inputs]
    # A folder's videos go to the video path (layout kept); a folder of videos only is not an image input.
    videos = [p for p in paths if is_video(p) or (p.is_dir() and videos_in(p))]
    images = [p for p in paths if not is_video(p) and not (p.is_dir() and videos_in(p) and not _has_images(p))]
    common = dict(model=model, out_dir=Path(args.out), tile=args.tile, tile_overlap=args.tile_overlap,
                  device=args.device, half=args.half, progress=not args.quiet and rank_and_world()[0] == 0,
                  existing="overwrite" if args.overwrite else "skip" if args.skip_existing else "error",
                  suffix=args.suffix, ext=args.ext, output_size=size, on_start=announce)
    failures: list = []
    written = []
    if images:
        backend = args.backend or ("onnx" if str(model or "").lower().endswith(".onnx") else "torch")
        if backend == "onnx":
            common["device"] = _concrete_device(args.device, backend)
        written += upscale_files(
            images,
            backend=backend,
            max_memory=None if args.max_memory is None else int(args.max_memory * 2**20),
            failures=failures,
            precision=args.precision,
            note=None if args.quiet else note,
            png_level=args.png_level,
            **common,
        )
    if videos:
        written += upscale_videos(videos, codec=args.codec, crf=args.crf, failures=failures, precision=args.precision,
                                  note=None if args.quiet else note, **common)
    return _upscale_summary(args, written, failures)


def _has_images(folder: Path) -> bool:
    from superres.io import list_images

    try:
        return bool(list_images([folder]))
    except SuperresError:
        return False


def _device_announcer(args: argparse.Namespace) -> Callable[[str], None]:
    """A callback printing the device a command runs on, once (stderr), when the work starts: only
    when it was chosen with ``auto`` and the command is not ``--quiet``."""
    printed: list[str] = []
    auto = args.device == "auto"

    def announce(device: str) -> None:
        if auto and not getattr(args, "quiet", False) and not printed:
            printed.append(device)
            print(f"superres: device {device} (--device auto)", file=sys.stderr)

    return announce


def _concrete_device(device: str, backend: str | None) -> str:
    """``auto`` made concrete (the CPU for the onnx backend, which runs on onnxruntime's CPU provider)."""
    if device != "auto":
        return device
    if backend == "onnx":
        return "cpu"
    from superres.devices import resolve_device

    return str(resolve_device("auto"))


def _upscale_summary(args: argparse.Namespace, written: list, failures: list) -> int:
    """Report failed files (one line each), then the totals; exit 2 when any file failed."""
    from superres.outputs import rank_and_world

    rank, world = rank_and_world()
    where = f" (rank {rank} of {world})" if world > 1 else ""
    if failures and not written and len(failures) == 1:
        raise SuperresError(failures[0][1])  # one file, one error: the usual one line
    for _, message in failures:
        print(f"superres: error: {message}", file=sys.stderr)
    if failures:
        print(f"superres: {len(failures)} of {len(failures) + len(written)} file(s) failed and were skipped; "
              f"{len(written)} written to {args.out}{where}", file=sys.stderr)
        return 2
    if not args.quiet or world > 1:
        print(f"wrote {len(written)} file(s) to {args.out}{where}")
    return 0


def _output_size_text(text: str) -> tuple[int, int]:
    from superres.outputs import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _outscale(text: str) -> float:
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 3.5, got {text!r}") from None
    if not math.isfinite(value) or value <= 0 or value > 16:
        raise argparse.ArgumentTypeError(f"expected a number greater than 0 and at most 16, got {text!r}")
    return value


def _strength(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:  # nan fails too
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def _add_upscale(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "upscale",
        help="upscale images with a model (tiled, keeps bit depth, channels and alpha)",
        description=(
            "Upscale image files or folders. Large images are processed in overlapping tiles blended "
            "together, so memory is bounded by the tile size. 16-bit in gives 16-bit out, gray gives gray, "
            "alpha is kept (resized with bicubic). Folders keep their layout under --out; a file that fails "
            "is reported and skipped (exit code 2 and a count at the end). Video files (.mp4, .mkv, .mov, "
            ".webm, .avi; the [video] extra) keep their frame rate, timestamps and audio; animated GIF/WebP "
            "their frame timing. Under torchrun the files (or a clip's frames) are split between the ranks."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or video files")
    p.add_argument("--model", default=None, help="shipped model name, model file, community weights (.pth: ESRGAN, "
                   "Real-ESRGAN, SRVGG) or Real-ESRGAN peer (realesrgan-x4plus ...) (default: the best shipped x4 model within this machine's speed budget, about 1 s per output "
                   "megapixel on a CPU; the choice is printed)")
    p.add_argument("--for", dest="purpose", choices=("benchmark", "photo"), default=None,
                   help="without --model, what the default model is for: benchmark (clean, bicubic-downscaled "
                        "input; the default) or photo (real photos: noise, blur, JPEG; the realworld-x4 pair)")
    p.add_argument("--strength", type=_strength, default=None, metavar="S",
                   help="0..1: blend a photo pair's networks, from the faithful realworld-x4 (0) to the sharper "
                        "realworld-x4-gan (1) (default with --for photo: 0.5); with --model, a model that names a partner")
    p.add_argument("--out", default="upscaled", help="output folder (default: ./upscaled)")
    p.add_argument("--tile", type=_tile, default="auto",
                   help="tile size in input pixels (0: no tiling; default auto: the largest tile whose memory fits "
                        "a quarter of the free RAM, half of the free GPU memory)")
    p.add_argument("--tile-overlap", type=_non_negative_int, default=16, help="overlap between tiles in input pixels (default 16)")
    p.add_argument("--device", default="auto", help="torch device: auto (CUDA, then MPS, then CPU; the default), cpu, cuda, cuda:1, mps")
    p.add_argument("--half", action="store_true", help="run the model in half precision (GPU)")
    p.add_argument("--backend", choices=("torch", "onnx"), default=None,
                   help="inference backend (default: onnx for an .onnx --model, else torch)")
    _add_precision_options(p, "auto")
    p.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for torch and onnxruntime (default: the physical cores not busy at the start)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--outscale", type=_outscale, default=None, metavar="F",
                      help="output size as a factor of the input (e.g. 3.5 or 1.5 with an x4 model): the model runs, "
                           "then MATLAB bicubic (antialiased when going down) resizes to the requested size")
    size.add_argument("--size", type=_output_size_text, default=None, metavar="WxH", help="exact output size, e.g. 1920x1080")
    size.add_argument("--width", type=_positive_int, default=None, metavar="W", help="output width; the height keeps the aspect ratio")
    p.add_argument("--suffix", default="", help="added to each output's name before the extension, e.g. _x4")
    p.add_argument("--ext", choices=("auto", "png", "jpg", "webp", "tif"), default="auto",
                   help="output format (default auto: the input's)")
    p.add_argument("--png-level", type=int, choices=range(10), default=1, metavar="0-9",
                   help="zlib level of PNG outputs (default 1, OpenCV's default: about 4x faster to write than 6, files about "
                        "a third larger; 9: smallest); the pixels are the same at every level")
    p.add_argument("--codec", default=None, help="video encoder (default libx264; libvpx-vp9 for .webm)")
    p.add_argument("--crf", type=_non_negative_int, default=None, help="video quality, lower is better (default 18)")
    p.add_argument("--max-memory", type=_positive_int, default=None, metavar="MB",
                   help="host memory one image may take (default: half the available memory); a larger result "
                        "is computed and written in strips of rows (.png/.tif), so memory stays bounded by the tile")
    existing = p.add_mutually_exclusive_group()
    existing.add_argument("--overwrite", action="store_true",
                          help="replace output files that already exist (default: stop before any work, naming one)")
    existing.add_argument("--skip-existing", action="store_true",
                          help="leave output files that already exist and skip their inputs")
    p.set_defaults(func=_cmd_upscale)


# --------------------------------------------------------------------------- demo
def _cmd_demo(args: argparse.Namespace) -> int:
    from superres.demo import run_demo

    run_demo(Path(args.out), seconds=args.seconds)
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="show the shipped models against bicubic on sample photos, train two models briefly, write a comparison page",
        description=(
            "The tour in a few minutes on a CPU, offline: the shipped x4 models against bicubic on held-out "
            "scikit-image sample photos, clean and degraded (PSNR-Y and the perceptual distance effdist); "
            "a short live training of `baseline` and `enhanced` with a bar over the time budget; "
            "comparison sheets with zoomed crops and index.html putting it all side by side."
        ),
    )
    p.add_argument("--out", default="demo-out", help="output folder (default: ./demo-out)")
    p.add_argument("--seconds", type=float, default=None,
                   help="training time budget per live model in seconds (default: superres.demo.DEFAULT_SECONDS)")
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

        info = export_uint8_onnx(args.model, Path(args.out), opset=args.opset,
                                 progress=lambda line: print(line, file=sys.stderr, flush=True))
        print(f"wrote {info['path']} ({info['arch']}, x{info['scale']}; uint8 NHWC lr_u8 -> sr_u8; "
              f"{info['max_level_diff']} levels from the float graph + rounding)")
        return 0
    result = export_onnx(args.model, Path(args.out), opset=args.opset, check_image=args.check_image,
                         progress=lambda line: print(line, file=sys.stderr, flush=True))
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


# --------------------------------------------------------------------------- convert
def _cmd_convert(args: argparse.Namespace) -> int:
    from superres.modelfile import convert_model

    path = convert_model(args.source, Path(args.out), scale=args.scale)
    print(f"wrote {path}")
    return 0


def _add_convert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert community weights (.pth: ESRGAN, Real-ESRGAN, SRVGG) or a Real-ESRGAN peer to a superres model file",
        description=(
            "Read an ESRGAN / Real-ESRGAN / SRVGGNetCompact .pth state dict (torch.load weights_only=True; a file "
            "that needs pickled code is refused) or a Real-ESRGAN peer name (realesrgan-x4plus ...), recognise the "
            "architecture, scale and width from its keys and shapes, and write a .safetensors model file with "
            "its metadata (arch, args, source, layout)."
        ),
    )
    p.add_argument("source", help="a .pth/.pt file or a Real-ESRGAN peer name")
    p.add_argument("--out", required=True, help="model file to write (.safetensors)")
    p.add_argument("--scale", type=_scale, default=None, help="the scale the weights must have (refused otherwise)")
    p.set_defaults(func=_cmd_convert)


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
    if args.device != "auto":
        parts += ["--device", args.device]
    if args.precision != "fp32":
        parts += ["--precision", args.precision]
    parts += ["--out", args.out]
    if args.perceptual is not None:
        parts += ["--perceptual", args.perceptual]
    if args.lr != "LR_bicubic":
        parts += ["--lr", args.lr]
    return " ".join(parts)


def _cmd_benchmark(args: argparse.Namespace) -> int:
    from superres.benchmark import run_benchmark

    args.precision = _precision(args)
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
        perceptual=_perceptual_metric(args),
        lr=args.lr,
        progress=None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True)),
        device=args.device,
        on_start=_device_announcer(args),
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
    p.add_argument("--device", default="auto", help="torch device for our models: auto (CUDA, then MPS, then CPU; the "
                   "default), cpu, cuda, cuda:1, mps; bicubic, the peers and --backend onnx run on the CPU")
    _add_precision_options(p, "fp32")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    _add_perceptual_options(p)
    p.add_argument("--lr", default="LR_bicubic", metavar="NAME",
                   help="LR folder of every set, SET/NAME/X{s} (default LR_bicubic; e.g. LR_medium from `superres data degrade`)")
    p.set_defaults(func=_cmd_benchmark)


# --------------------------------------------------------------------------- serve
_SERVE_MAX_PIXELS = 2_000_000  # an x4 job's output canvas is 16 times its input: 2 MP in, about 1 GB at the peak


def _cmd_serve(args: argparse.Namespace) -> int:
    from superres.serve import run_server
    from superres.serve.app import ServeConfig

    run_server(ServeConfig(
        host=args.host, port=args.port, device=args.device, workers=args.workers, threads=args.threads,
        queue_depth=args.queue_depth, max_upload_bytes=args.max_upload_mb * 1024 * 1024,
        max_pixels=getattr(args, "max_pixels", None) or _SERVE_MAX_PIXELS,
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
    # --max-pixels and --debug are the global options (superres --help); defined here to say what they
    # mean for the server. The limit also becomes the readers' own (superres.io.set_max_pixels).
    p.add_argument("--max-pixels", type=_positive_int, default=argparse.SUPPRESS, metavar="N",
                   help=f"largest input, width x height, refused from its header before decoding (default {_SERVE_MAX_PIXELS})")
    p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of an unexpected error")
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


# --------------------------------------------------------------------------- compare
def _cmd_compare(args: argparse.Namespace) -> int:
    from superres.compare import compare_images, parse_crop

    compare_images(
        args.inputs,
        args.models,
        Path(args.out),
        lr_from_hr=args.lr_from_hr,
        hr=args.hr,
        crop=parse_crop(args.crop),
        crop_side=args.crop_side,
        perceptual=_perceptual_metric(args),
        device=args.device,
        tile=args.tile,
    )
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compare",
        help="side-by-side sheets (PNG) of LR | each model | HR with zoomed crops and each panel's scores",
        description=(
            "For each image, write OUT/<name>_compare.png: whole views and zoomed crops of the LR, every "
            "model's output and the HR (when given), each labelled with PSNR-Y / SSIM-Y (and --perceptual) "
            "under the paper protocol; OUT/metrics.json holds the figures. --crop auto zooms where the "
            "models differ most."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="IMAGE", help="LR images or folders (HR with --lr-from-hr)")
    p.add_argument("--models", nargs="+", required=True, metavar="MODEL",
                   help="shipped names, model files or bicubic, all of one scale")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--lr-from-hr", action="store_true",
                   help="the inputs are HR images: mod-crop, make the LR with MATLAB bicubic, score against them")
    p.add_argument("--hr", default=None, metavar="PATH", help="HR reference of LR inputs: a file, or a folder of same-named files")
    p.add_argument("--crop", default="auto", metavar="auto|x,y,w,h", help="zoomed window in output pixels (default auto)")
    p.add_argument("--crop-side", type=_positive_int, default=96, metavar="N", help="side of the auto crop (default 96)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, ...)")
    p.add_argument("--tile", type=_non_negative_int, default=0, help="tile size in LR pixels (0: whole image)")
    _add_perceptual_options(p)
    p.set_defaults(func=_cmd_compare)


_ADDERS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _add_eval,
    _add_data,
    _add_train,
    _add_upscale,
    _add_demo,
    _add_models,
    _add_export,
    _add_convert,
    _add_benchmark,
    _add_serve,
    _add_compare,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="superres",
        description="Single-image super-resolution: MATLAB-exact data, paper-protocol metrics, training, tiled upscaling.",
    )
    parser.add_argument("--version", action="version", version=f"superres {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an unexpected error (also SUPERRES_DEBUG=1)")
    parser.add_argument("--max-pixels", type=_positive_int, default=None, metavar="N",
                        help="largest image (height x width) any reader decodes (default 200000000, "
                             "or SUPERRES_MAX_PIXELS); checked on the declared size before decoding")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in _ADDERS:
        add(sub)
    _add_debug_everywhere(parser)
    return parser


def _add_debug_everywhere(parser: argparse.ArgumentParser) -> None:
    """Accept ``--debug`` and ``--max-pixels`` after the subcommand too (``superres upscale --debug ...``)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if not any("--debug" in a.option_strings for a in child._actions):
                    child.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                                       help="show the traceback of an unexpected error")
                    child.add_argument("--max-pixels", type=_positive_int, default=argparse.SUPPRESS, metavar="N",
                                       help="largest image (height x width) any reader decodes")
                _add_debug_everywhere(child)


#: Where an unexpected error (a bug, not a bad input) should be reported. The project records no
#: public URL (pyproject.toml has none), so the line names the tracker and what to attach.
REPORT_TO = "the superres issue tracker, with the command line and the --debug output"


def _subparser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``args`` came from, so a usage error shows that command's usage."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                if name in (getattr(args, "command", None), getattr(args, "data_command", None)):
                    return _subparser(child, args)
    return parser


def _debug_requested(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "debug", False)) or os.environ.get("SUPERRES_DEBUG", "") not in ("", "0")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if extras:
        _subparser(parser, args).error(f"unrecognized arguments: {' '.join(extras)}")
    from superres.threads import prefer_passive_waits

    prefer_passive_waits()  # OpenMP workers sleep instead of spinning (before torch is imported)
    try:
        if getattr(args, "max_pixels", None) is not None:
            from superres.io import set_max_pixels

            set_max_pixels(args.max_pixels)
        return int(args.func(args) or 0)
    except SuperresError as exc:
        message = str(exc)
        if getattr(args, "bf16", False) and message.startswith("--precision bf16:"):
            message = "--bf16" + message[len("--precision bf16"):]  # name the option the user gave
        print(f"superres: error: {message}", file=sys.stderr)
        return 2
    except MemoryError:
        print("superres: error: out of memory (try a smaller --tile or a smaller input)", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("superres: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`superres models | head`): stop quietly, as other command-line tools
        # do. Point stdout at devnull so the interpreter's final flush does not raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as exc:  # noqa: BLE001 - the catch-all: a bug, reported in one line
        if _debug_requested(args):
            import traceback

            traceback.print_exc()
        message = " ".join(str(exc).split())
        if len(message) > 300:
            message = message[:297] + "..."
        print(
            f"superres: internal error: {type(exc).__name__}: {message or '(no message)'}; "
            f"please report it to {REPORT_TO}"
            + ("" if _debug_requested(args) else " (run with --debug or SUPERRES_DEBUG=1 for the traceback)"),
            file=sys.stderr,
        )
        return 1
    finally:
        if getattr(args, "max_pixels", None) is not None:
            from superres.io import set_max_pixels

            set_max_pixels(None)  # main() may be called again in the same process (tests, notebooks)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
