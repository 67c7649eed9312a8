"""Images per second for 1 MP photos on a GPU: the per-tile loop against batched tiles, per precision.

Usage (from the repository root, on a machine with CUDA)::

    PYTHONPATH=. python benchmarks/gpu_tiles.py --device cuda --model edsr-baseline-x4 --side 1000 --tile 256 --batch 8

Rows (same model, same random 1000x1000 RGB input, ``--images`` timed images after one warm-up,
``torch.cuda.synchronize`` around each):

* ``loop fp32``: :func:`superres.inference.upscale_tensor`, one tile per model call (today's path);
* ``loop bf16`` / ``loop fp16``: the same under autocast (``--precision``);
* ``batched bf16`` / ``batched fp16``: :func:`superres.inference.upscale_tensor` with ``batch``, up to
  ``--batch`` equal-shaped tiles per call (channels_last under autocast on CUDA,
  :func:`superres.inference.tile_layout`); ``--batch 0`` takes what ``superres upscale`` would,
  :func:`superres.speed.tile_batch` for the free GPU memory;
* each batched row's largest difference from ``loop fp32``.

On a CPU (``--device cpu --side 96 --tile 32``) it runs as a smoke test of the script. No figure from
it is in docs/ yet: no GPU was available when it was written.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    import torch

    from superres.devices import cpu_name, resolve_device
    from superres.inference import upscale_tensor
    from superres.modelfile import load_model

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--model", default="edsr-baseline-x4")
    ap.add_argument("--side", type=int, default=1000)
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--precisions", nargs="+", default=["bf16", "fp16"])
    args = ap.parse_args()
    device = resolve_device(args.device)
    net = load_model(args.model, device=str(device))
    if args.batch == 0:
        from superres.speed import tile_batch

        args.batch = tile_batch(net, args.tile, net.in_channels, device)
    x = torch.rand(1, net.in_channels, args.side, args.side, generator=torch.Generator().manual_seed(0)).to(device)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    rows = [("loop fp32", lambda: upscale_tensor(net, x, tile=args.tile))]
    for prec in args.precisions:
        rows.append((f"loop {prec}", lambda p=prec: upscale_tensor(net, x, tile=args.tile, precision=p)))
        rows.append((f"batched {prec}", lambda p=prec: upscale_tensor(net, x, tile=args.tile, batch=args.batch, precision=p)))
    reference = None
    what = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"{what}; {args.model}, {args.side}x{args.side} input, tile {args.tile}, batch {args.batch}")
    print("| path | images/s | s/image | max |diff| vs loop fp32 |")
    print("|---|---:|---:|---:|")
    for label, fn in rows:
        out = fn()
        sync()
        t = time.perf_counter()
        for _ in range(args.images):
            out = fn()
        sync()
        per = (time.perf_counter() - t) / args.images
        if reference is None:
            reference = out
        diff = float((out - reference).abs().max())
        print(f"| {label} | {1 / per:.2f} | {per:.3f} | {diff:.2e} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
