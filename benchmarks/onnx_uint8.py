"""``superres upscale --backend onnx`` on 8-bit photos: the 8-bit graph against the float path, side by side.

Usage (from the repository root)::

    PYTHONPATH=. python benchmarks/onnx_uint8.py --threads 1 --images 4 --repeats 3

Since the conversions moved into the graph, ``superres upscale --backend onnx`` runs an 8-bit RGB
image that fits in one pass through :meth:`superres.export.OnnxModel.run_uint8` (uint8 in, uint8 out,
bit for bit the float path's samples). This script runs :func:`superres.inference.upscale_files` on a
folder of ``--images`` 1000 x 1000 PNG photos (crops and flips of scikit-image's astronaut and
coffee) into PNGs at ``--png-level`` (1, ``superres upscale``'s default) with each ``--models``
model, alternating the two routes in one process (``float``: the 8-bit route switched off, as before
it existed), ``--repeats`` passes after a warm-up, the fastest kept; it checks that both routes wrote
the same samples. Reported: images/s, ms per output MP, and the ratio. Two more columns per model
time the model call alone on one image (``network``: the float graph on the float input;
``uint8 graph``: ``run_uint8``), so the share of the per-image work outside the network shows.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    import torch

    import superres.inference as inference
    from superres.devices import cpu_name
    from superres.io import read_raw, to_float

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from upscale_throughput import make_photos

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--models", nargs="+", default=["lumanet-x4", "lumanet-x4-deep-int8"])
    ap.add_argument("--png-level", type=int, default=1, help="zlib level of the PNGs written (1: superres upscale's default)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    real = inference._runs_in_uint8
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="superres-u8-") as tmp:
        tmp = Path(tmp)
        folder = tmp / "photos"
        folder.mkdir()
        paths = make_photos(folder, args.images)
        out_mp = args.images * 16.0  # 1000 x 1000 at x4
        for name in args.models:
            net = inference.load_for_backend(name, backend="onnx")
            best = {"float": float("inf"), "uint8": float("inf")}
            for _ in range(args.repeats + 1):  # the first pass warms up
                for route in best:
                    inference._runs_in_uint8 = real if route == "uint8" else (lambda *a, **k: False)
                    start = time.perf_counter()
                    inference.upscale_files([folder], model=name, backend="onnx", out_dir=tmp / route, device="cpu",
                                            progress=False, existing="overwrite", png_level=args.png_level)
                    best[route] = min(best[route], time.perf_counter() - start)
            inference._runs_in_uint8 = real
            for path in paths:
                a, b = read_raw(tmp / "float" / path.name), read_raw(tmp / "uint8" / path.name)
                assert np.array_equal(a.pixels, b.pixels), path
            pixels = read_raw(paths[0]).pixels
            x = np.ascontiguousarray(to_float(pixels).transpose(2, 0, 1))[None]
            calls = {"network": lambda: net(torch.from_numpy(x)), "uint8 graph": lambda: net.run_uint8(pixels)}
            alone = {key: float("inf") for key in calls}
            for _ in range(args.repeats + 1):
                for key, call in calls.items():
                    start = time.perf_counter()
                    call()
                    alone[key] = min(alone[key], time.perf_counter() - start)
            rows.append((name, best, alone))
    print(f"CPU: {cpu_name()}; {args.threads} thread(s); {args.images} photos 1000x1000 RGB PNG -> x4 PNG; "
          f"PNG level {args.png_level}; fastest of {args.repeats} passes; load average {load_before[0]:.2f} before, {os.getloadavg()[0]:.2f} after\n")
    print("| model | float path (images/s) | uint8 graph (images/s) | ratio | float path ms/MP | uint8 graph ms/MP "
          "| network alone ms/MP | uint8 graph alone ms/MP |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, best, alone in rows:
        print(f"| {name} | {args.images / best['float']:.3f} | {args.images / best['uint8']:.3f} | "
              f"{best['float'] / best['uint8']:.2f}x | {best['float'] / out_mp * 1e3:.0f} | {best['uint8'] / out_mp * 1e3:.0f} | "
              f"{alone['network'] / 16 * 1e3:.0f} | {alone['uint8 graph'] / 16 * 1e3:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
