"""Distillation data: LR patches of the training images paired with a teacher model's output.

Usage (from the repository root, ``../shared/data`` next to it)::

    OMP_NUM_THREADS=1 python scripts/make_distill_patches.py --teacher edsr-baseline-x4 \\
        --out runs/distill/edsr_baseline_x4_p96.npz

For each training image (default: T91, BSD200 and General100 of ``../shared/data/train``):

1. the HR image is mod-cropped to a multiple of the scale and downscaled with MATLAB bicubic, rounded
   to its integer type (:func:`superres.data.patches.downscale`, the LR the trainer and the
   benchmark sets use);
2. the teacher upscales the whole LR image (:func:`superres.upscale`, tiled), and its output is
   rounded to the image's levels, as a saved file would be;
3. aligned patches are cut on a grid (``--patch`` HR side, ``--stride`` HR pixels): the LR patch
   from the LR image and the target from the teacher's output.

The result is a patch archive (``hr`` = teacher targets, ``lr`` = LR inputs, ``N x H x W x C`` uint8)
that ``superres train`` reads as ``data.train: [FILE.npz]`` (``data.patch_size`` = ``--patch``), plus
``FILE.json`` naming the teacher, the images and the settings. The student then learns to map the
real LR to the teacher's output; validation still scores it against the real HR. Images smaller
than one patch, and images whose channel count the teacher cannot take, are skipped (and listed).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
TRAIN = REPO.parent / "shared" / "data" / "train"


def grid(size: int, patch: int, stride: int, scale: int) -> list[int]:
    """Top-left HR positions along one axis: multiples of ``scale`` (so LR patches align), every
    ``stride``, plus the last position that still fits, so that the far border is covered too."""
    if size < patch:
        return []
    last = (size - patch) // scale * scale
    points = list(range(0, last + 1, stride))
    if points[-1] != last:
        points.append(last)
    return points


def image_patches(hr: np.ndarray, teacher, scale: int, patch: int, stride: int, tile: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lr_patches, target_patches)`` of one integer ``H x W x C`` HR image (see the module docstring)."""
    import superres
    from superres.data.patches import downscale
    from superres.resize import modcrop

    hr = modcrop(hr, scale)
    lr = downscale(hr, scale)
    peak = float(np.iinfo(hr.dtype).max)
    out = superres.upscale(teacher, lr.astype(np.float32) / peak, tile=tile)
    target = np.clip(np.round(out.reshape(hr.shape) * peak), 0, peak).astype(hr.dtype)
    lrs, targets = [], []
    p = patch // scale
    for y in grid(hr.shape[0], patch, stride, scale):
        for x in grid(hr.shape[1], patch, stride, scale):
            targets.append(target[y:y + patch, x:x + patch])
            lrs.append(lr[y // scale:y // scale + p, x // scale:x // scale + p])
    if not lrs:
        return np.zeros((0, p, p, hr.shape[2]), hr.dtype), np.zeros((0, patch, patch, hr.shape[2]), hr.dtype)
    return np.stack(lrs), np.stack(targets)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", required=True, help="a shipped model name or a model file")
    parser.add_argument("--data", nargs="+", default=[str(TRAIN / n) for n in ("T91", "BSD200", "General100")])
    parser.add_argument("--patch", type=int, default=96, help="HR patch side (a multiple of the teacher's scale)")
    parser.add_argument("--stride", type=int, default=48, help="HR pixels between patches (rounded to the scale)")
    parser.add_argument("--tile", type=int, default=256, help="teacher tile size (LR pixels)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--out", type=Path, required=True, help="the .npz to write (and a .json beside it)")
    args = parser.parse_args(argv)

    import torch

    import superres
    from superres.data.patches import _save_npz
    from superres.errors import SuperresError
    from superres.io import atomic_write, list_images, read_array

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        teacher = superres.load_model(args.teacher)
        scale, channels = int(teacher.scale), int(teacher.in_channels)
        if args.patch % scale:
            raise SuperresError(f"--patch {args.patch} is not a multiple of the teacher's scale {scale}")
        stride = max(scale, args.stride // scale * scale)
        paths = list_images([Path(p) for p in args.data])
        lrs, targets, used, skipped = [], [], [], []
        t0 = time.monotonic()
        for n, path in enumerate(paths, 1):
            hr = np.asarray(read_array(path))
            if hr.ndim == 2:
                hr = hr[:, :, None]
            if hr.shape[2] != channels or hr.dtype not in (np.uint8, np.uint16):
                skipped.append(f"{path}: {hr.shape[2]} channel(s) {hr.dtype}")
                continue
            with torch.inference_mode():
                lr, target = image_patches(hr, teacher, scale, args.patch, stride, args.tile)
            if not len(lr):
                skipped.append(f"{path}: smaller than {args.patch} px")
                continue
            lrs.append(lr)
            targets.append(target)
            used.append(str(path))
            if n % 25 == 0 or n == len(paths):
                count = sum(len(a) for a in lrs)
                print(f"{n}/{len(paths)} images, {count} patches, {time.monotonic() - t0:.0f} s", flush=True)
        if not lrs:
            raise SuperresError("no image gave a patch; see --patch and --data")
        lr_all, target_all = np.concatenate(lrs), np.concatenate(targets)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        _save_npz(args.out, hr=target_all, lr=lr_all)
        info = {"teacher": args.teacher, "scale": scale, "patch": args.patch, "stride": stride,
                "patches": int(len(lr_all)), "images": used, "skipped": skipped, "data": args.data,
                "seconds": round(time.monotonic() - t0, 1), "hr": "teacher output", "lr": "MATLAB bicubic of the HR"}
        with atomic_write(args.out.with_suffix(".json")) as tmp:
            Path(tmp).write_text(json.dumps(info, indent=2) + "\n")
    except SuperresError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {len(lr_all)} patch pairs from {len(used)} images ({len(skipped)} skipped)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
