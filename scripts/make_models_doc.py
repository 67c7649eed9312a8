#!/usr/bin/env python
"""Write docs/MODELS.md from the model registry: layers, parameters, FLOPs and measured CPU times.

Every architecture in ``superres.models.REGISTRY`` gets a row in the summary table and a section
with its module docstring (the layer list), so a new model appears by registering it and re-running::

    python scripts/make_models_doc.py            # writes docs/MODELS.md
    python scripts/make_models_doc.py --threads 2 --out /tmp/MODELS.md

Costs are for x4 on 3 channels. FLOPs (2 x multiply-adds, convs only) are exact and machine
independent; times are the fastest of a few runs on this machine with ``--threads`` torch threads,
recorded in the document with the CPU model, so compare only numbers from one generated file.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import inspect
import os
import sys
from functools import partial
from pathlib import Path

import torch

from superres.devices import cpu_name
from superres.io import atomic_write
from superres.models import REGISTRY, build, names, options
from superres.models.complexity import count_flops, count_parameters, time_forward, time_train_step

REPO = Path(__file__).resolve().parent.parent
SCALE, CHANNELS = 4, 3
SMALL_LR = (1, CHANNELS, 32, 32)     # 32x32 -> 128x128, the figure quoted in the docstrings
LARGE_LR = (1, CHANNELS, 128, 128)   # 128x128 -> 512x512, a typical photo tile
TRAIN_BATCH = (16, CHANNELS, 32, 32)  # one training iteration with 16 LR patches of 32x32


def _target(name: str) -> tuple[object, dict]:
    builder = REGISTRY[name]
    if isinstance(builder, partial):
        return builder.func, dict(builder.keywords)
    return builder, {}


#: Parameter counts published with each architecture (x4), the channel count they are quoted for,
#: and where the figure comes from. Our count for that channel count stands beside it in the table.
REFERENCES: dict[str, tuple[str, int, str]] = {
    "espcn": ("about 25k", 1, "Shi et al. 2016: 5x5/64, 3x3/32, 3x3 -> 16 (x4), Y channel"),
    "fsrcnn": ("12.46k weights (about 12.8k with biases and PReLU)", 1, "Dong et al. 2016, d=56 s=12 m=4, Y channel"),
    "srresnet": ("about 1.55M", 3, "Ledig et al. 2017"),
    "edsr-baseline": ("about 1.52M", 3, "Lim et al. 2017"),
    "edsr": ("about 43M", 3, "Lim et al. 2017"),
    "rcan": ("about 15.6M", 3, "Zhang et al. 2018"),
    "rrdbnet": ("16,697,987", 3, "Real-ESRGAN RealESRGAN_x4plus.pth (Wang et al. 2021; ESRGAN 2018 layout)"),
}


def _reference_rows() -> list[str]:
    """One row per architecture with a published parameter count: ours (built for the paper's
    channel count) next to the paper's."""
    rows = ["| model | channels | our parameters | published | source |", "|---|---:|---:|---|---|"]
    for name, (published, channels, source) in REFERENCES.items():
        with torch.device("meta"):  # counting needs shapes only: no memory, no initialisation
            model = build(name, scale=SCALE, in_channels=channels)
        rows.append(f"| `{name}` | {channels} | {count_parameters(model):,} | {published} | {source} |")
    return rows


def _configs() -> list[tuple[str, str | None]]:
    """(name, upsampler) pairs to measure: every model with its defaults (upsampler None), plus each
    other upsampler kind for models that take an ``upsampler`` option."""
    from superres.models.blocks import UPSAMPLER_KINDS

    out: list[tuple[str, str | None]] = []
    for name in names():
        out.append((name, None))
        default = options(name).get("upsampler")
        if isinstance(default, str):
            out += [(name, kind) for kind in UPSAMPLER_KINDS if kind != default]
    return out


def _measure_all(repeats: int) -> dict[tuple[str, str | None], dict[str, float]]:
    """Costs of every configuration. Timings run round-robin (one run of each configuration per round,
    the fastest round kept), so a burst of load from other processes hits all rows alike instead of
    spoiling the few measured during it."""
    models = {}
    results: dict[tuple[str, str | None], dict[str, float]] = {}
    for key in _configs():
        name, kind = key
        torch.manual_seed(0)
        model = build(name, scale=SCALE, in_channels=CHANNELS, **({"upsampler": kind} if kind else {}))
        models[key] = model
        results[key] = {
            "params": count_parameters(model),
            "gflops": count_flops(model, SMALL_LR) / 1e9,
            "gflops_large": count_flops(model, LARGE_LR) / 1e9,
        }
        time_forward(model, LARGE_LR, repeats=1)  # warm-up: allocator, one-off kernel selection
        time_train_step(model, TRAIN_BATCH, repeats=1)
    timers = {
        "fwd_small_ms": lambda m: time_forward(m, SMALL_LR, repeats=1, warmup=0),
        "fwd_large_ms": lambda m: time_forward(m, LARGE_LR, repeats=1, warmup=0),
        "train_ms": lambda m: time_train_step(m, TRAIN_BATCH, repeats=1, warmup=0),
    }
    for _ in range(repeats):
        for key, model in models.items():
            for field, timer in timers.items():
                ms = 1e3 * timer(model)
                results[key][field] = min(ms, results[key].get(field, float("inf")))
    return results


def _row(label: str, m: dict[str, float]) -> str:
    return (f"| {label} | {m['params']:,} | {m['gflops']:.3f} | {m['gflops_large']:.2f} | {m['fwd_small_ms']:.1f} | "
            f"{m['fwd_large_ms']:.0f} | {m['train_ms']:.0f} |")


HEADER = ("| model | parameters | GFLOPs 32x32->128x128 | GFLOPs 128x128->512x512 | CPU forward 32x32 (ms) "
          "| CPU forward 128x128 -> 512x512 (ms) | CPU train step, 16 x 32x32 (ms) |\n|---|---:|---:|---:|---:|---:|---:|")


def _load() -> str:
    """System load while measuring: other processes inflate the times, so the document says how busy it was."""
    try:
        before = os.getloadavg()[0]
    except OSError:
        return "load unknown"
    return f"1-min load average {before:.1f} on {os.cpu_count()} CPUs"


def make_document(threads: int, repeats: int) -> str:
    torch.set_num_threads(threads)
    load_before = _load()
    measured = _measure_all(repeats)
    lines = [
        "# Models",
        "",
        "<!-- Generated by scripts/make_models_doc.py from superres.models.REGISTRY; do not edit by hand. -->",
        "",
        f"All figures are for x{SCALE} on {CHANNELS}-channel images with each model's default options.",
        "FLOPs are 2 x multiply-adds of convolutions and matrix products (torch.utils.flop_counter), for one pass.",
        f"Times: fastest of {repeats} rounds (all rows measured round-robin), torch {torch.__version__}, {threads} thread(s), {cpu_name()}, "
        f"generated {_dt.date.today().isoformat()} ({load_before} at the start; a load above the thread count "
        "means the times include waiting for other processes). A training step is forward + L1 + backward on a batch of "
        "16 LR patches of 32x32 (no optimizer update); 1800 s divided by it bounds the iterations that fit in "
        "30 minutes.",
        "",
        HEADER,
    ]
    lines += [_row(f"`{name}`", measured[(name, None)]) for name in names()]
    lines += ["", "Train with `superres train --config ... model.name=NAME`; list them with `superres models`.", ""]
    lines += ["## Parameter counts against the papers", "",
              "Each model built at x4 for the channel count its paper quotes (ESPCN and FSRCNN work on the Y",
              "channel in their papers; with 3 channels their counts are in the table above).", ""]
    lines += _reference_rows() + [""]

    documented: set[str] = set()
    for name in names():
        target, preset = _target(name)
        module_name = getattr(target, "__module__", "")
        qualname = f"{module_name}.{getattr(target, '__qualname__', repr(target))}"
        lines += [f"## `{name}`", "", f"Builder: `{qualname}`" + (f", preset {preset}" if preset else "") + ".", ""]
        opts = options(name)
        sig = ", ".join(f"{k}={v!r}" for k, v in opts.items() if v is not inspect.Parameter.empty)
        lines += [f"Options (defaults): `{sig}`.", ""]
        if module_name in documented:
            lines += [f"Layers: see the `{module_name}` section above.", ""]
        else:
            documented.add(module_name)
            doc = inspect.cleandoc(importlib.import_module(module_name).__doc__ or "(no module docstring)")
            lines += [doc, ""]
        kinds = opts.get("upsampler")
        if isinstance(kinds, str):
            from superres.models.blocks import UPSAMPLER_KINDS

            lines += ["Upsampler variants:", "", HEADER]
            for kind in UPSAMPLER_KINDS:
                m = measured[(name, None if kind == kinds else kind)]
                lines.append(_row(f"`upsampler={kind}`" + (" (default)" if kind == kinds else ""), m))
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "MODELS.md")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads for the timings (default 2)")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per figure; the fastest is reported")
    args = parser.parse_args(argv)
    text = make_document(args.threads, args.repeats)
    with atomic_write(args.out) as tmp:
        tmp.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
