#!/usr/bin/env python
"""The upsampler study behind docs/UPSAMPLING.md: same model, same budget, each upsampler.

For every (model, upsampler) pair it trains the model at x4 with ``superres.training.train`` (the
``configs/<model>_x4.yaml`` preset with ``model.options.upsampler`` overridden and a wall-time budget
``train.iterations``), scores the result on Set5 and Set14 with ``superres.evaluate.evaluate``
(paper protocol), and draws one crop per upsampler from a region with fine periodic detail where
checkerboard artefacts of transposed convolutions show first. Then it writes docs/UPSAMPLING.md.

Run from the repository root (needs ../shared/data)::

    OMP_NUM_THREADS=1 python benchmarks/upsampling_study.py --models enhanced --iterations 1000 --jobs 2

The budget is a number of iterations (same batches, same learning-rate schedule for every run)
rather than wall time, so the comparison does not depend on what else the machine was doing;
the wall time each run took is reported beside it. ``--jobs`` trains that many runs at once, each
on one torch thread.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KINDS = ("pixelshuffle", "deconv", "nearest", "bicubic")
CROP_IMAGE, CROP_BOX = "barbara", (300, 30, 96)  # Set14 barbara: (top, left, size) in HR pixels, checked tablecloth


def _train(model: str, kind: str, iterations: int, runs: Path, data: Path) -> Path:
    """Train one (model, upsampler) pair in a subprocess with one torch thread; return its model file."""
    run_dir = runs / f"{model}-{kind}"
    model_file = run_dir / "model.safetensors"
    if model_file.exists():
        return model_file
    train_sets = [str(data / "train" / s) for s in ("T91", "BSD200", "General100")]
    cmd = [
        sys.executable, "-m", "superres.cli", "train", "--config", str(REPO / "configs" / f"{model}_x4.yaml"),
        "--out", str(run_dir),
        f"model.options.upsampler={kind}",
        f"data.train=[{','.join(train_sets)}]",
        f"data.val={data / 'Set5'}",
        f"train.iterations={iterations}", "train.max_seconds=null",
        "train.val_every=100000", "train.save_every=1000", "train.log_every=100",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with open(runs / f"{model}-{kind}.log", "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    return model_file


def _crop_figure(entries: list[dict], data: Path, out_png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    import superres
    from superres.io import atomic_write, read_image
    from superres.resize import modcrop

    top, left, size = CROP_BOX
    hr = modcrop(read_image(data / "Set14" / "HR" / f"{CROP_IMAGE}.png").data, 4)
    lr = read_image(data / "Set14" / "LR_bicubic" / "X4" / f"{CROP_IMAGE}.png").data
    panels = [("bicubic", superres.imresize(lr.astype(np.float64), scale=4))]
    for e in entries:
        model = superres.load_model(e["model_file"])
        panels.append((f"{e['model']}, {e['upsampler']}", superres.upscale(model, lr, tile=0)))
    panels.append(("HR", hr))
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 2.9))
    for ax, (title, img) in zip(axes, panels):
        crop = np.clip(img[top:top + size, left:left + size], 0, 1)
        ax.imshow(crop.squeeze(), cmap="gray" if crop.shape[-1] == 1 else None, interpolation="nearest")
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    with atomic_write(out_png) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["enhanced"], choices=["baseline", "enhanced"])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--iterations", type=int, default=1000, help="training iterations per run")
    parser.add_argument("--jobs", type=int, default=2, help="runs trained at once (one thread each)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--runs", type=Path, default=REPO / "runs" / "upsampling")
    parser.add_argument("--doc", type=Path, default=REPO / "docs" / "UPSAMPLING.md")
    args = parser.parse_args(argv)

    from superres.evaluate import evaluate
    from superres.io import atomic_write
    from superres.modelfile import read_metadata

    args.runs.mkdir(parents=True, exist_ok=True)
    pairs = [(m, k) for m in args.models for k in args.kinds]
    started = time.time()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        files = list(pool.map(lambda p: _train(*p, args.iterations, args.runs, args.data), pairs))

    entries = []
    for (model, kind), model_file in zip(pairs, files):
        meta = read_metadata(model_file)
        row = {"model": model, "upsampler": kind, "model_file": str(model_file), "params": meta["params"],
               "iterations": meta.get("iterations"), "wall_time_s": meta.get("wall_time_s")}
        for s in ("Set5", "Set14"):
            rep = evaluate(str(model_file), args.data / s, scale=4)
            row[s] = {"psnr_y": rep["psnr_y"], "ssim_y": rep["ssim_y"]}
        entries.append(row)
    bicubic = {s: evaluate("bicubic", args.data / s, scale=4) for s in ("Set5", "Set14")}
    fig_path = args.doc.parent / "images" / "upsampling_crops.png"
    fig_path.parent.mkdir(parents=True, exist_ok=True)
    _crop_figure(entries, args.data, fig_path)

    cmd = "OMP_NUM_THREADS=1 python benchmarks/upsampling_study.py " + " ".join(
        ["--models", *args.models, "--iterations", str(args.iterations), "--jobs", str(args.jobs)])
    lines = [
        "# Upsampling choices",
        "",
        "`baseline` and `enhanced` take `upsampler` as a constructor argument (config key",
        "`model.options.upsampler`): `pixelshuffle` (sub-pixel convolution), `deconv` (transposed",
        "convolution), `nearest` (nearest-neighbour resize + conv) and `bicubic` (bicubic resize + conv;",
        "for `enhanced` the output is always bicubic(LR) + a learned residual). See docs/MODELS.md for",
        "their exact layers and costs.",
        "",
        f"Study: each model trained at x4 for the same budget of {args.iterations} iterations (same batches and",
        "learning-rate schedule; one torch thread per run) on T91 + BSD200 + General100 with its preset",
        "(`configs/<model>_x4.yaml`), scored on the official Set5/Set14 LR under the paper protocol",
        "(PSNR-Y / SSIM-Y, shave 4). The wall time column shows what each upsampler costs to train.",
        "",
        f"Command: `{cmd}` (total {time.time() - started:.0f} s).",
        "",
        "| model | upsampler | params | train wall time (s) | Set5 PSNR-Y / SSIM-Y | Set14 PSNR-Y / SSIM-Y |",
        "|---|---|---:|---:|---|---|",
        f"| bicubic | - | - | - | {bicubic['Set5']['psnr_y']:.2f} / {bicubic['Set5']['ssim_y']:.4f} | "
        f"{bicubic['Set14']['psnr_y']:.2f} / {bicubic['Set14']['ssim_y']:.4f} |",
    ]
    for e in entries:
        lines.append(
            f"| {e['model']} | {e['upsampler']} | {e['params']:,} | {e['wall_time_s']:.0f} | "
            f"{e['Set5']['psnr_y']:.2f} / {e['Set5']['ssim_y']:.4f} | {e['Set14']['psnr_y']:.2f} / {e['Set14']['ssim_y']:.4f} |"
        )
    lines += [
        "",
        f"Crops from Set14 `{CROP_IMAGE}` (HR rows {CROP_BOX[0]}-{CROP_BOX[0] + CROP_BOX[2]}, columns "
        f"{CROP_BOX[1]}-{CROP_BOX[1] + CROP_BOX[2]}), shown with nearest-neighbour display so that",
        "pixel-level patterns (the checkerboard of uneven transposed-convolution overlap) stay visible:",
        "",
        "![upsampler crops](images/upsampling_crops.png)",
        "",
    ]
    with atomic_write(args.doc) as tmp:
        tmp.write_text("\n".join(lines), encoding="utf-8")
    with atomic_write(args.runs / "study.json") as tmp:
        tmp.write_text(json.dumps({"entries": entries, "iterations": args.iterations}, indent=2), encoding="utf-8")
    print(f"wrote {args.doc} and {fig_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
