"""Models on degraded test sets, side by side: PSNR-Y, SSIM-Y, effdist and CPU ms per output megapixel.

    python benchmarks/realworld_table.py --sets sets/Set14-medium:LR_medium sets/BSD200-medium:LR_medium \\
        --models bicubic edsr-baseline-x4 realworld-x4 [--limit N] [--threads 1]

Each SET is a folder written by ``superres data degrade`` (HR/ and LR_<preset>/X4/) with the name of
its LR folder after the colon. Scores are ``superres eval --lr NAME --perceptual`` (the paper
protocol on the degraded LR); the time is the wall time of the upscaling alone (model calls, not
reading or scoring) divided by the output megapixels, on ``--threads`` torch threads. Rows are
printed as a Markdown table with the CPU named.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from superres.devices import cpu_name
from superres.evaluate import evaluate, make_upscaler
from superres.perceptual import build_perceptual


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", required=True, metavar="DIR:LR")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    metric = build_perceptual("effdist")
    print(f"CPU: {cpu_name()}, {args.threads} torch thread(s), torch {torch.__version__}")
    print("| set | model | PSNR-Y | SSIM-Y | effdist | ms per output MP |")
    print("|---|---|---:|---:|---:|---:|")
    for spec in args.sets:
        folder, _, lr = spec.partition(":")
        for model in args.models:
            inner = make_upscaler(model, args.scale)
            spent = [0.0, 0]

            def timed(samples: np.ndarray, bit_depth: int, inner=inner, spent=spent) -> np.ndarray:
                t0 = time.perf_counter()
                out = inner(samples, bit_depth)
                spent[0] += time.perf_counter() - t0
                spent[1] += out.shape[0] * out.shape[1]
                return out

            report = evaluate(model, Path(folder), scale=args.scale, upscaler=timed, perceptual=metric, lr=lr or "LR_bicubic")
            ms_mp = 1000 * spent[0] / (spent[1] / 1e6)
            print(f"| {Path(folder).name} | `{model}` | {report['psnr_y']:.2f} | {report['ssim_y']:.4f} | "
                  f"{report['effdist']:.4f} | {ms_mp:,.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
