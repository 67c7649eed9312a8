"""CPU inference speed of our compact models next to OpenCV's FSRCNN and ESPCN graphs, in one process.

Usage (from the repository root; one thread, as on a shared machine)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/inference_speed.py --threads 1 --out speed.md
    # the shape of another shipped model too, e.g. the deeper compact model:
    OMP_NUM_THREADS=1 python benchmarks/inference_speed.py --models lumanet --shipped lumanet-x4-deep --tiles 0
    # other scales / images, e.g. Set14 at x3, lumanet only, one tile size:
    OMP_NUM_THREADS=1 python benchmarks/inference_speed.py --scale 3 --data ../shared/data/Set14/LR_bicubic/X3 \
        --models lumanet --tiles 256

What is measured, all on the same images in the same process (so machine load affects every row
alike), reported as milliseconds per output megapixel and as a ratio to OpenCV FSRCNN x4:

* our models at x4 with random weights (speed does not depend on the weights; an int8 model named
  by ``--shipped`` runs with its shipped weights, as it needs its activation scales), each in the shape
  of its shipped model at that scale where there is one (``shipped_options``): ``lumanet`` (the
  shipped compact model, RGB in/out), ``espcn`` and ``fsrcnn`` as the 1-channel (Y) models of their
  papers, ``enhanced`` and ``baseline`` as RGB models (``--models`` picks some), each
  - **pipeline** rows: uint8 RGB in -> :func:`superres.inference.upscale` -> uint8 RGB out, i.e. what
    ``superres upscale`` does per image (Y/CbCr conversion and chroma resize for Y models included),
    with the torch backend at several tile sizes and with the onnx backend (an
    :class:`superres.export.OnnxModel` in the same tiling code);
  - **model only** rows: the network alone on the tensors the pipeline feeds it (whole images), as
    torch eager under ``no_grad``, under ``inference_mode``, under ``inference_mode`` with
    ``channels_last`` weights and inputs, and onnxruntime;
* OpenCV ``dnn_superres`` FSRCNN x4 and ESPCN x4 (uint8 RGB -> BGR -> ``upsample`` -> RGB), when
  ``cv2.dnn_superres`` and ``../shared/peers`` are available.

Each figure is the fastest of ``--repeats`` passes over the whole image set (on a shared machine other
processes only ever add time, so the minimum is the best estimate of the method's own cost), after
one warm-up pass; the passes of all rows are interleaved, so load bursts hit every row alike. Images: the Set5 x4 LR files (``--data``) plus one 256x256 LR crop of scikit-image's
astronaut photo, large enough for tiling to matter; without the data folder, 5 crops of the photo.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared" / "data" / "Set5" / "LR_bicubic" / "X4"
DEFAULT_PEERS = REPO.parent / "shared" / "peers"
MODELS = (("lumanet", 3), ("espcn", 1), ("fsrcnn", 1), ("enhanced", 3), ("baseline", 3))
SCALE = 4  # --scale sets it


def shipped_shape(name: str) -> tuple[str, int, int, dict] | None:
    """``(arch, scale, in_channels, options)`` of the shipped model ``name``; ``None`` if none is shipped."""
    from superres.modelfile import WEIGHTS_DIR, read_metadata

    path = WEIGHTS_DIR / f"{name}.safetensors"
    if not path.is_file():
        return None
    meta = read_metadata(path)
    options = {k: v for k, v in meta["args"].items() if k not in ("scale", "in_channels")}
    return meta["arch"], int(meta["scale"]), int(meta["in_channels"]), options


def shipped_options(arch: str, scale: int) -> dict:
    """The model options of the shipped ``ARCH-xSCALE`` model (e.g. ``lumanet-x4``'s width and depth),
    so that its row times the shape that ships; ``{}`` (the defaults) when none is shipped."""
    shape = shipped_shape(f"{arch}-x{scale}")
    return {} if shape is None else shape[3]


def model_list(models: list[str], shipped: list[str]) -> list[tuple[str, str, int, dict]]:
    """(row label, arch, in_channels, options) of each model to time: ``--models`` in their shipped
    shape at this scale, then each ``--shipped`` name in its own (its scale must be ``--scale``)."""
    rows = [(name, name, channels, shipped_options(name, SCALE)) for name, channels in MODELS if name in models]
    for name in shipped:
        shape = shipped_shape(name)
        if shape is None:
            raise SystemExit(f"--shipped {name}: no such shipped model")
        arch, scale, channels, options = shape
        if scale != SCALE:
            raise SystemExit(f"--shipped {name}: a x{scale} model, and --scale is {SCALE}")
        rows.append((name, arch, channels, options))
    return rows


def load_images(folder: Path) -> tuple[list[np.ndarray], str]:
    """uint8 RGB LR images and a description of where they came from."""
    from skimage import data as samples

    from superres.resize import imresize

    photo = samples.astronaut()
    large = np.asarray(imresize(photo, size=(256, 256)))
    if folder.is_dir():
        from superres.io import list_images, read_array

        images = [read_array(p) for p in list_images([folder])]
        # as RGB: gray images (Set14 has two) repeated to three channels, alpha dropped
        images = [np.repeat(im.reshape(*im.shape[:2], -1), 3, axis=2) if im.ndim == 2 or im.shape[2] == 1 else im[:, :, :3]
                  for im in images]
        return images + [large], f"the {len(images)} images of {folder} + astronaut 256x256"
    crops = [photo[y : y + 96, x : x + 128] for y, x in ((0, 0), (100, 200), (300, 100), (400, 380), (200, 300))]
    return crops + [large], "5 crops (96x128) of the astronaut photo + astronaut 256x256 (no data folder)"


def time_entries(entries: list[tuple[str, str, Callable[[np.ndarray], object]]], images: list[np.ndarray], repeats: int) -> list[float]:
    """Fastest total time (s) of each entry over ``repeats`` passes on every image.

    The passes are interleaved (round-robin over the entries, after one warm-up pass each), so a burst
    of load from other processes hits every entry alike instead of one unlucky row.
    """
    for _, _, fn in entries:
        for im in images:
            fn(im)
    best = [float("inf")] * len(entries)
    for _ in range(repeats):
        for k, (_, _, fn) in enumerate(entries):
            start = time.perf_counter()
            for im in images:
                fn(im)
            best[k] = min(best[k], time.perf_counter() - start)
    return best


def build_entries(threads: int, tiles: list[int], images: list[np.ndarray], peers_dir: Path, tmp: Path,
                  models: list[tuple[str, str, int, dict]]) -> list[tuple[str, str, Callable[[np.ndarray], object]]]:
    """(method, variant, fn(uint8 RGB image)) for every row of the table."""
    import torch

    from superres.export import OnnxModel, export_onnx
    from superres.color import rgb_to_ycbcr
    from superres.inference import upscale
    from superres.io import to_float, to_integer
    from superres.models import build

    torch.set_num_threads(threads)
    entries: list[tuple[str, str, Callable[[np.ndarray], object]]] = []
    reason = None
    try:
        import cv2

        if not hasattr(cv2, "dnn_superres"):
            reason = "cv2 has no dnn_superres"
    except ImportError:
        reason = "OpenCV not installed"
    if reason is None and peers_dir.is_dir():
        from superres.peers import opencv_peer

        for stem in ("FSRCNN", "ESPCN"):
            graph = peers_dir / f"{stem}_x{SCALE}.pb"
            if graph.is_file():
                entries.append((f"OpenCV {stem} x{SCALE} (.pb)", "pipeline (uint8 RGB in/out)", opencv_peer(graph, threads=threads).upscale))
    elif reason is not None:
        print(f"OpenCV peers skipped: {reason}", file=sys.stderr)

    torch.manual_seed(0)
    index = {id(im): i for i, im in enumerate(images)}
    for name, arch, channels, options in models:
        if options.get("int8"):
            # An int8 model needs its observed activation scales, so it runs with its shipped weights.
            from superres.modelfile import load_model

            net = load_model(name).eval()
        else:
            net = build(arch, scale=SCALE, in_channels=channels, **options).eval()
            net.superres_meta = {"arch": arch, "args": {"scale": SCALE, "in_channels": channels, **options}}

        def pipeline(model: object, tile: int) -> Callable[[np.ndarray], object]:
            return lambda im: to_integer(upscale(model, to_float(im), tile=tile), 8)

        for tile in tiles:
            label = "whole image" if tile == 0 else f"tile {tile}, overlap 16"
            entries.append((name, f"pipeline torch, {label}", pipeline(net, tile)))
        onnx_path = tmp / f"{name}.onnx"
        export_onnx(net, onnx_path)
        onnx_model = OnnxModel(onnx_path, threads=threads)
        entries.append((name, "pipeline onnxruntime, whole image", pipeline(onnx_model, 0)))

        def model_input(im: np.ndarray, channels: int = channels) -> np.ndarray:
            data = to_float(im)
            if channels == 1:
                data = rgb_to_ycbcr(data)[:, :, :1]
            return np.ascontiguousarray(data.transpose(2, 0, 1)[None], dtype=np.float32)

        inputs = [model_input(im) for im in images]
        tensors = [torch.from_numpy(x) for x in inputs]
        cl_net = build(arch, scale=SCALE, in_channels=channels, **options).eval()
        cl_net.load_state_dict(net.state_dict())
        cl_net = cl_net.to(memory_format=torch.channels_last)
        cl_tensors = [t.contiguous(memory_format=torch.channels_last) for t in tensors]

        def run(model: object, xs: list, grad_mode: Callable[[], object]) -> Callable[[np.ndarray], object]:
            def fn(im: np.ndarray) -> object:
                with grad_mode():
                    return model(xs[index[id(im)]])

            return fn

        entries.append((name, "model only: torch no_grad", run(net, tensors, torch.no_grad)))
        entries.append((name, "model only: torch inference_mode", run(net, tensors, torch.inference_mode)))
        entries.append((name, "model only: inference_mode + channels_last", run(cl_net, cl_tensors, torch.inference_mode)))
        session = onnx_model.session
        entries.append((name, "model only: onnxruntime",
                        lambda im, session=session, inputs=inputs: session.run(None, {"lr": inputs[index[id(im)]]})))
    return entries


def measure(threads: int, tiles: list[int], repeats: int, images: list[np.ndarray], peers_dir: Path,
            models: list[tuple[str, str, int, dict]]) -> list[dict]:
    import tempfile

    out_mp = sum(im.shape[0] * im.shape[1] * SCALE * SCALE for im in images) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        entries = build_entries(threads, tiles, images, peers_dir, Path(tmp), models)
        seconds = time_entries(entries, images, repeats)
    rows = []
    for (method, variant, _), sec in zip(entries, seconds):
        rows.append({"threads": threads, "method": method, "variant": variant, "ms_per_mp": 1e3 * sec / out_mp})
        print(f"  [{threads} thr] {method:<22} {variant:<42} {1e3 * sec / out_mp:9.1f} ms/MP", file=sys.stderr, flush=True)
    return rows


def to_markdown(rows: list[dict], context: str) -> str:
    ref = {r["threads"]: r["ms_per_mp"] for r in rows if r["method"].startswith("OpenCV FSRCNN")}
    lines = [context, "", f"| threads | method | variant | ms / output MP | x OpenCV FSRCNN x{SCALE} |", "|---:|---|---|---:|---:|"]
    for r in rows:
        ratio = f"{r['ms_per_mp'] / ref[r['threads']]:.2f}" if r["threads"] in ref else "-"
        lines.append(f"| {r['threads']} | {r['method']} | {r['variant']} | {r['ms_per_mp']:.0f} | {ratio} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="folder of LR images (default: Set5 LR at --scale)")
    parser.add_argument("--scale", type=int, default=4, choices=[2, 3, 4],
                        help="upscaling factor of our models and of the OpenCV graphs (default 4)")
    parser.add_argument("--peers", type=Path, default=DEFAULT_PEERS, help="folder with FSRCNN_x4.pb / ESPCN_x4.pb")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="thread counts to measure (default: 1)")
    parser.add_argument("--tiles", type=int, nargs="+", default=[0, 256, 128, 64], help="tile sizes (0: whole image)")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per figure (fastest kept)")
    parser.add_argument("--models", nargs="+", default=[m for m, _ in MODELS], choices=[m for m, _ in MODELS],
                        help="our models to time (default: all)")
    parser.add_argument("--shipped", nargs="+", default=[], metavar="NAME",
                        help="also time shipped models' shapes by name (e.g. lumanet-x4-deep; random weights, "
                             "except int8 models, which run with their shipped weights and scales)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table to this file")
    args = parser.parse_args(argv)
    global SCALE
    SCALE = args.scale
    data = args.data if args.data is not None else DEFAULT_DATA.parent / f"X{SCALE}"

    images, what = load_images(data)
    rows: list[dict] = []
    for threads in args.threads:
        rows += measure(threads, args.tiles, args.repeats, images, args.peers, model_list(args.models, args.shipped))

    import torch

    from superres.devices import cpu_name

    cpu = cpu_name()
    load = [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else "?"
    out_mp = sum(im.shape[0] * im.shape[1] * SCALE * SCALE for im in images) / 1e6
    context = (
        f"Images: {what} ({out_mp:.2f} output MP per pass at x4). Machine: {cpu}, {os.cpu_count()} logical CPUs, "
        f"load average {load} at the end; torch {torch.__version__}; fastest of {args.repeats} passes."
    )
    table = to_markdown(rows, context)
    print(table)
    if args.out is not None:
        from superres.io import atomic_write

        with atomic_write(args.out) as tmp:
            tmp.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
