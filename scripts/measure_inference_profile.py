"""Measure what ``--precision auto`` and the default-model choice of ``superres upscale`` read:
``superres/weights/inference_profile.json``.

For every shipped model:

* ``quality``: Set5 and Set14 PSNR-Y at the model's scale with the code of ``superres eval``
  (torch backend, whole images) in fp32 and in bf16 (and fp16 where the CPU has it natively); the
  change against fp32 is stored as ``delta_db`` and ``auto`` accepts a precision only where it is at
  most 0.01 dB on both sets (``superres.precision.TOLERANCE_DB``);
* ``speed``: ms per output megapixel of :func:`superres.inference.upscale` (whole image, float in,
  float out, torch backend) on one 256x256 LR crop of scikit-image's astronaut photo, one thread, in
  each precision; fastest of ``--repeats`` passes after a warm-up, the passes of all rows interleaved.

``--models`` also takes a blend ``NAME@S`` (``upscale --strength``), profiled under that key, e.g. the
``--for photo`` default ``realworld-x4-gan@0.5``.

Usage (from the repository root)::

    PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/measure_inference_profile.py --part quality
    PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/measure_inference_profile.py --part speed --repeats 3

Each part updates its fields of the existing file and records the CPU, the date, the load average
and the command beside them.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def precisions() -> list[str]:
    from superres.devices import cpu_has_native_bf16
    from superres.precision import cpu_has_native_fp16

    out = ["fp32"]
    if cpu_has_native_bf16():
        out.append("bf16")
    if cpu_has_native_fp16():
        out.append("fp16")
    return out


def measure_quality(doc: dict, data_root: Path, names: list[str]) -> None:
    from superres.evaluate import evaluate
    from superres.modelfile import read_metadata, split_strength, WEIGHTS_DIR

    for name in names:
        # NAME@S (a blend, superres.modelfile.load_model) has its model's scale
        scale = int(read_metadata(WEIGHTS_DIR / f"{split_strength(name)[0]}.safetensors")["scale"])
        entry = doc["models"].setdefault(name, {})
        psnr: dict[str, dict[str, float]] = {}
        for prec in precisions():
            for s in ("Set5", "Set14"):
                report = evaluate(name, data_root / s, scale=scale, precision=prec)
                psnr.setdefault(prec, {})[s] = round(float(report["psnr_y"]), 5)
                print(f"{name:<24} {prec} {s:<6} {report['psnr_y']:.5f}", flush=True)
        entry["scale"] = scale
        entry["psnr_y"] = psnr
        entry["delta_db"] = {
            prec: {s: round(psnr[prec][s] - psnr["fp32"][s], 5) for s in psnr[prec]} for prec in psnr if prec != "fp32"
        }


def measure_speed(doc: dict, names: list[str], repeats: int) -> None:
    from skimage import data as samples

    from superres.inference import upscale
    from superres.modelfile import load_model

    photo = samples.astronaut()[128:384, 128:384].astype(np.float32) / 255.0
    rows = []
    for name in names:
        net = load_model(name)
        image = photo if net.in_channels == 3 else photo.mean(axis=2)
        for prec in precisions():
            rows.append((name, prec, net, image))
    best = {(n, p): float("inf") for n, p, _, _ in rows}
    for rep in range(repeats + 1):
        for name, prec, net, image in rows:
            t = time.perf_counter()
            out = upscale(net, image, tile=0, precision=prec)
            dt = time.perf_counter() - t
            if rep:  # pass 0 is the warm-up
                best[(name, prec)] = min(best[(name, prec)], dt / (out.shape[0] * out.shape[1] / 1e6))
    for (name, prec), sec in best.items():
        doc["models"].setdefault(name, {}).setdefault("ms_per_mp", {})[prec] = round(sec * 1000.0, 1)
        print(f"{name:<24} {prec} {sec * 1000:.0f} ms/MP", flush=True)


def main() -> int:
    import torch

    from superres.devices import cpu_name
    from superres.modelfile import shipped_names
    from superres.precision import PROFILE_PATH, TOLERANCE_DB

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("quality", "speed", "all"), default="all")
    ap.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    ap.add_argument("--models", nargs="*", default=None, help="shipped names (default: all)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(PROFILE_PATH))
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.is_file() else {}
    doc.setdefault("models", {})
    names = args.models or shipped_names()
    stamp = {
        "cpu": cpu_name(),
        "threads": 1,
        "torch": torch.__version__,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "command": "PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/measure_inference_profile.py " + " ".join(sys.argv[1:]),
    }
    doc["tolerance_db"] = TOLERANCE_DB
    doc["cpu"] = cpu_name()
    doc["threads"] = 1
    # Where the figures come from: the whole file's stamp for a run over every shipped model; with
    # --models, a stamp in each named model's entry (the others keep theirs).
    for part, measure in (("quality", lambda: measure_quality(doc, Path(args.data_root), names)),
                          ("speed", lambda: measure_speed(doc, names, args.repeats))):
        if args.part in (part, "all"):
            measure()
            if args.models:
                for name in names:
                    doc["models"][name][f"{part}_measured"] = stamp
            else:
                doc[f"{part}_measured"] = stamp
    doc["models"] = dict(sorted(doc["models"].items()))
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
