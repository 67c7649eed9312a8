"""Side-by-side timings of the inference building blocks superres replaced, old form against new.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/ops_speed.py --threads 1

Each pair computes the same values (checked here before timing; the crop draw excepted, see below)
for a 256x256 RGB input at x4 (a 1-megapixel output), in one process, interleaved, fastest of
``--repeats`` runs:

* bicubic upscale: ``F.interpolate(mode="bicubic")`` against
  :class:`superres.models.blocks.BicubicUpsample` (a grouped 5x5 conv + pixel shuffle), in PyTorch
  and, exported, in onnxruntime (cubic ``Resize`` against ``Conv`` + ``DepthToSpace``);
* pixel shuffle of 48 channels by 4: ``nn.PixelShuffle`` against :class:`superres.models.blocks.PixelShuffle`;
* float -> uint8 of the 3-channel output: the former numpy ``to_integer`` against
  :func:`superres.io.to_integer` (torch);
* the training crop draw for a batch of 64 over the 391 training-image sizes: one
  ``np.random.default_rng((seed, iteration, slot))`` per item (the former draw) against
  :func:`superres.data.folders.draw_crops` (a counter-based hash for the whole batch). These give
  different random streams of the same law (``tests/test_device_data.py`` checks the law), so the
  pair is timed without the equality check.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _numpy_to_integer(data: np.ndarray) -> np.ndarray:
    """superres.io.to_integer(data, 8) as it was before it moved to torch."""
    scaled = np.nan_to_num(np.asarray(data, dtype=np.float32) * np.float32(255), nan=0.0)
    np.clip(scaled, 0, 255, out=scaled)
    return np.rint(scaled).astype(np.uint8)


def _old_crop_draws(cdf: np.ndarray, heights: np.ndarray, widths: np.ndarray, patch: int, iteration: int,
                    slots: range) -> np.ndarray:
    """The crop draw as it was: a numpy Generator per item (DeviceBatches.draws before the hash)."""
    out = np.zeros((len(slots), 4), dtype=np.int64)
    for n, slot in enumerate(slots):
        rng = np.random.default_rng((0, iteration, slot))
        k = int(cdf.searchsorted(rng.random(), side="right"))
        out[n] = (k, int(rng.integers(0, heights[k] - patch + 1)), int(rng.integers(0, widths[k] - patch + 1)),
                  int(rng.integers(0, 8)))
    return out


def _onnx_session(module: object, x: object, path: Path, threads: int) -> Callable[[], object]:
    import onnxruntime as ort
    import torch

    torch.onnx.export(module, (x,), str(path), input_names=["x"], output_names=["y"], opset_version=17,
                      dynamic_axes={"x": {2: "h", 3: "w"}}, dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    feed = {"x": x.numpy()}
    return lambda: session.run(None, feed)[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F
    from torch import nn

    from superres.data.folders import crop_tables, draw_crops
    from superres.io import to_integer
    from superres.models.blocks import TORCH_CUBIC_A, BicubicUpsample, PixelShuffle

    torch.set_num_threads(args.threads)
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    phases = torch.rand(1, 48, 256, 256, generator=torch.Generator().manual_seed(1))
    out_hwc = np.random.default_rng(2).random((1024, 1024, 3), dtype=np.float32) * 1.2 - 0.1
    up = BicubicUpsample(4, 3, a=TORCH_CUBIC_A).eval()

    class Interpolate(nn.Module):
        def forward(self, t: torch.Tensor) -> torch.Tensor:
            return F.interpolate(t, scale_factor=4, mode="bicubic", align_corners=False)

    pairs: list[tuple[str, str, Callable[[], object], str, Callable[[], object]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        ort_resize = _onnx_session(Interpolate(), x, Path(tmp) / "resize.onnx", args.threads)
        ort_conv = _onnx_session(up, x, Path(tmp) / "conv.onnx", args.threads)
    pairs.append(("bicubic x4, torch", "F.interpolate", lambda: Interpolate()(x), "BicubicUpsample", lambda: up(x)))
    pairs.append(("bicubic x4, onnxruntime", "Resize (cubic)", ort_resize, "Conv + DepthToSpace", ort_conv))
    pairs.append(("pixel shuffle 48ch x4", "nn.PixelShuffle", lambda: nn.PixelShuffle(4)(phases),
                  "blocks.PixelShuffle", lambda: PixelShuffle(4)(phases)))
    pairs.append(("float -> uint8, 1 MP RGB", "numpy", lambda: _numpy_to_integer(out_hwc),
                  "torch (io.to_integer)", lambda: to_integer(out_hwc, 8)))
    rng = np.random.default_rng(3)  # 391 image sizes like the training sets' (their range of sides)
    cdf, heights, widths = crop_tables([(int(h), int(w)) for h, w in rng.integers(100, 520, (391, 2))], 96)
    slots = range(64)
    pairs.append(("crop draw, batch of 64", "Generator per item",
                  lambda: _old_crop_draws(cdf, heights, widths, 96, 7, slots), "draw_crops (hash)",
                  lambda: draw_crops(0, 7, np.arange(64), cdf=cdf, heights=heights, widths=widths, patch_size=96,
                                     augment=True)))
    different_streams = {"crop draw, batch of 64"}

    with torch.inference_mode():
        for name, _, old, _, new in pairs:  # same values first
            a, b = old(), new()
            if name in different_streams:
                continue
            a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
            b = b.numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
            diff = float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())
            if diff > 1e-4:
                raise SystemExit(f"{name}: the two forms differ by {diff}")
        best = [[float("inf"), float("inf")] for _ in pairs]
        for _ in range(args.repeats):
            for i, (_, _, old, _, new) in enumerate(pairs):
                for j, fn in enumerate((old, new)):
                    start = time.perf_counter()
                    fn()
                    best[i][j] = min(best[i][j], time.perf_counter() - start)

    print(f"threads {args.threads}, torch {torch.__version__}, fastest of {args.repeats}\n")
    print("| operation | before | ms | now | ms | speed-up |")
    print("|---|---|---:|---|---:|---:|")
    for (name, old_name, _, new_name, _), (t_old, t_new) in zip(pairs, best):
        print(f"| {name} | {old_name} | {t_old * 1e3:.1f} | {new_name} | {t_new * 1e3:.1f} | {t_old / t_new:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
