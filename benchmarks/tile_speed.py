"""CPU time per output megapixel against the tile size, for the ``--tile auto`` cache cap (``superres.speed.CPU_TILE_CAP``).

Usage (from the repository root)::

    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/tile_speed.py --side 768 --repeats 2
    PYTHONPATH=. python benchmarks/tile_speed.py --backend onnx --threads 2 --side 1000 --models lumanet-x4
    PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/tile_speed.py --shapes 360x640 480x854 576x1024 --tiles 0 384

One process, ``--threads`` threads (default 1): scikit-image's astronaut photo Lanczos-resized to
``--side`` x ``--side`` (or each ``--shapes`` H x W; float RGB), ``--path upscale`` (default) or
``tensor`` (:func:`superres.inference.upscale_tensor` on a batch of one, as video frames run), :func:`superres.inference.upscale` at each tile size (0: one
whole pass; overlap 16), fastest of ``--repeats`` interleaved passes after a warm-up pass, per model.
``--backend torch`` runs the model in bf16 (fp32 where the CPU has no native bf16); ``--backend
onnx`` runs its exported graph through onnxruntime (fp32, bands on more than one thread), the
backend :func:`superres.speed.auto_tile` does not cap.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    import torch
    from PIL import Image
    from skimage import data

    from superres.devices import cpu_has_native_bf16, cpu_name
    from superres.inference import load_for_backend, upscale, upscale_tensor
    from superres.modelfile import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=768)
    ap.add_argument("--shapes", nargs="+", default=None, metavar="HxW",
                    help="input sizes, a row each per model (instead of --side x --side)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--models", nargs="+", default=["enhanced-x4", "lumanet-x4-deep", "edsr-baseline-x4"])
    ap.add_argument("--tiles", nargs="+", type=int, default=None)
    ap.add_argument("--backend", choices=("torch", "onnx"), default="torch")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--path", choices=("upscale", "tensor"), default="upscale",
                    help="upscale: superres.upscale on the float image (what superres upscale does per photo); "
                         "tensor: superres.inference.upscale_tensor on a 1 x 3 x H x W batch (what the video path does)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    precision = "bf16" if cpu_has_native_bf16() and args.backend == "torch" else "fp32"
    shapes = [tuple(int(v) for v in shape.split("x")) for shape in args.shapes] if args.shapes else [(args.side, args.side)]
    tiles = list(dict.fromkeys(args.tiles or [0, max(shapes[0]) // 2, 512, 384, 256, 192, 128]))
    print(f"{cpu_name()}, {args.threads} thread(s), {args.backend} {precision}, path {args.path}; ms per output MP (fastest of {args.repeats})")
    print("| model | input (H x W) | " + " | ".join("whole" if t == 0 else f"tile {t}" for t in tiles) + " |")
    print("|---|---|" + "---:|" * len(tiles))
    for name in args.models:
        net = load_model(name) if args.backend == "torch" else load_for_backend(name, backend="onnx")
        scale = int(net.scale)
        for h, w in shapes:
            img = np.asarray(Image.fromarray(data.astronaut()).resize((w, h), Image.LANCZOS), dtype=np.float32) / 255
            batch = torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()
            best = {t: float("inf") for t in tiles}
            for rep in range(args.repeats + 1):  # pass 0 warms up (oneDNN primitives per shape)
                for t in tiles:
                    start = time.perf_counter()
                    if args.path == "tensor":
                        upscale_tensor(net, batch, tile=t, tile_overlap=16, precision=precision)
                    else:
                        upscale(net, img, tile=t, precision=precision)
                    if rep:
                        best[t] = min(best[t], time.perf_counter() - start)
            mp = h * w * scale * scale / 1e6
            print(f"| {name} | {h}x{w} | " + " | ".join(f"{best[t] / mp * 1000:.0f}" for t in tiles) + " |", flush=True)
    print("load average after: " + ", ".join(f"{x:.2f}" for x in os.getloadavg()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
