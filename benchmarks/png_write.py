"""Writing the PNG of an upscaled photo: Pillow against superres.pngenc, side by side in one process.

Usage (from the repository root)::

    PYTHONPATH=. python benchmarks/png_write.py --side 4000 --repeats 3
    PYTHONPATH=. python benchmarks/png_write.py --cli --threads 1 --images 4 --repeats 3

Default: one ``--side`` x ``--side`` RGB image (scikit-image's astronaut, Lanczos-resized: what a x4
result of a 1000x1000 photo looks like to the encoder), written to memory at each ``--levels`` zlib
level by Pillow (``compress_level``, its adaptive row filters, one thread) and by
:func:`superres.pngenc.write_png` on 1 and on 2 threads, the rows interleaved, fastest of
``--repeats`` passes after a warm-up; the file sizes beside. Also a 16-bit row (the same image x 257)
against pypng, which wrote 16-bit PNGs before.

``--cli``: :func:`superres.inference.upscale_files` (``superres upscale`` without the argument
parsing) on ``--images`` 1000x1000 PNG photos at x4 with ``--model`` through ``--backend``, PNG level
1 as ``superres upscale`` writes, once with Pillow writing the PNGs (as before) and once with
``pngenc``, alternating in one process; images/s and the ratio.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def pillow_png(out, samples: np.ndarray, *, level: int = 6, metadata=None, threads=None) -> None:
    """``write_png``'s signature, written by Pillow (8-bit) or pypng (16-bit), as superres.io did before."""
    if samples.dtype == np.uint16:
        import png

        height, width, planes = samples.shape
        writer = png.Writer(width, height, greyscale=planes < 3, alpha=planes in (2, 4), bitdepth=16, compression=level)
        packed = samples.astype(">u2").reshape(height, width * planes).view(np.uint8)
        writer.write_packed(out, (row.tobytes() for row in packed))
        return
    from PIL import Image

    from superres.metadata import pillow_options

    array = samples[:, :, 0] if samples.shape[2] == 1 else samples
    Image.fromarray(np.ascontiguousarray(array)).save(out, format="PNG", compress_level=level,
                                                      **pillow_options("PNG", metadata))


def encoders(args) -> None:
    from PIL import Image
    from skimage import data

    from superres.devices import cpu_name
    from superres.pngenc import write_png

    photo = np.asarray(Image.fromarray(data.astronaut()).resize((args.side, args.side), Image.LANCZOS))
    cases = [("8-bit RGB", photo), ("16-bit RGB", photo.astype(np.uint16) * 257)]
    rows = []
    for what, samples in cases:
        for level in args.levels:
            writers = {"Pillow" if samples.dtype == np.uint8 else "pypng": lambda out, s=samples, lv=level: pillow_png(out, s, level=lv),
                       "pngenc, 1 thread": lambda out, s=samples, lv=level: write_png(out, s, level=lv, threads=1),
                       "pngenc, 2 threads": lambda out, s=samples, lv=level: write_png(out, s, level=lv, threads=2)}
            best = {name: float("inf") for name in writers}
            size = {}
            for _ in range(args.repeats + 1):
                for name, write in writers.items():
                    out = io.BytesIO()
                    start = time.perf_counter()
                    write(out)
                    best[name] = min(best[name], time.perf_counter() - start)
                    size[name] = len(out.getvalue())
            base = next(iter(writers))
            for name in writers:
                rows.append((what, level, name, best[name], size[name], best[base] / best[name]))
    print(f"CPU: {cpu_name()}; {args.side}x{args.side} image; fastest of {args.repeats} passes; "
          f"load average {os.getloadavg()[0]:.2f} after\n")
    print("| image | zlib level | writer | seconds | MB | x faster than Pillow/pypng |")
    print("|---|---:|---|---:|---:|---:|")
    for what, level, name, seconds, nbytes, ratio in rows:
        print(f"| {what} | {level} | {name} | {seconds:.3f} | {nbytes / 1e6:.1f} | {ratio:.2f}x |")


def cli(args) -> None:
    import torch

    import superres.io as sio
    from superres.devices import cpu_name
    from superres.inference import upscale_files
    from superres.pngenc import write_png
    from upscale_throughput import make_photos

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="superres-png-") as tmp:
        tmp = Path(tmp)
        (tmp / "in").mkdir()
        make_photos(tmp / "in", args.images)
        best = {"Pillow": float("inf"), "pngenc": float("inf")}
        for _ in range(args.repeats + 1):
            for name in best:
                sio.write_png = pillow_png if name == "Pillow" else write_png
                start = time.perf_counter()
                upscale_files([tmp / "in"], model=args.model, backend=args.backend, out_dir=tmp / name, device="cpu",
                              progress=False, existing="overwrite", png_level=1)
                best[name] = min(best[name], time.perf_counter() - start)
        sio.write_png = write_png
    print(f"CPU: {cpu_name()}; {args.threads} thread(s); {args.images} photos 1000x1000 -> x4 PNG (level 1), "
          f"{args.model} ({args.backend}); fastest of {args.repeats} passes; load average {os.getloadavg()[0]:.2f} after\n")
    print("| PNG writer | images/s | ms per output MP | ratio |")
    print("|---|---:|---:|---:|")
    for name, seconds in best.items():
        print(f"| {name} | {args.images / seconds:.3f} | {seconds / (16 * args.images) * 1e3:.0f} | "
              f"{best['Pillow'] / seconds:.2f}x |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", type=int, default=4000)
    ap.add_argument("--levels", type=int, nargs="+", default=[1, 6])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cli", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--images", type=int, default=4)
    ap.add_argument("--model", default="lumanet-x4")
    ap.add_argument("--backend", default="onnx")
    args = ap.parse_args()
    cli(args) if args.cli else encoders(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
