"""Choices made for the machine: the tile size (``--tile auto``) and the default model of ``upscale``.

``--tile auto`` (:func:`auto_tile`) takes the largest tile whose working memory fits a budget (on a
CPU at most :data:`CPU_TILE_CAP` for large images run by torch, where smaller tiles were measured
faster): a fraction of the memory free now (:data:`RAM_FRACTION` of ``MemAvailable`` for the CPU,
:data:`GPU_FRACTION` of the free GPU memory). A tile's working memory is estimated from one small
probe pass of the model (:func:`bytes_per_input_pixel`: the largest activation any layer writes,
times :data:`LIVE_FACTOR` for the tensors alive around it, plus the output tile and its weighted
copy). A tile at least as large as the image means one pass (tile 0).

Without ``--model``, ``upscale`` runs :func:`choose_default_model`: the best shipped x4 model
(highest recorded Set5 PSNR-Y) whose measured speed on this device class fits a budget
(:data:`CPU_BUDGET_MS_PER_MP` per output megapixel on a CPU, in the precision ``--precision auto``
picks for it there). Speeds come from ``superres/weights/inference_profile.json``
(``scripts/measure_inference_profile.py``, one thread, the CPU named in the file). On a GPU there is no
budget: the best model. ``purpose`` (``upscale --for``) says which shipped models are candidates:
``benchmark`` (the default) the models made for clean, bicubic-downscaled input, ranked by their
protocol PSNR; ``photo`` the models trained on real-world degradations (``purpose: photo`` in their
metadata), where a model with a ``strength_partner`` (a pair that ``--strength`` blends) comes
first, run at :data:`DEFAULT_PHOTO_STRENGTH` unless ``--strength`` says otherwise.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from superres.errors import SuperresError
from superres.precision import load_profile, resolve_precision

if TYPE_CHECKING:
    import torch

__all__ = [
    "RAM_FRACTION", "GPU_FRACTION", "LIVE_FACTOR", "MIN_AUTO_TILE", "CPU_BUDGET_MS_PER_MP",
    "PURPOSES", "DEFAULT_PHOTO_STRENGTH",
    "MAX_TILE_BATCH", "available_memory", "bytes_per_input_pixel", "auto_tile", "tile_batch", "choose_default_model",
    "model_for",
]

#: Share of the currently available RAM (CPU) or free GPU memory one tile may use.
RAM_FRACTION = 0.25
GPU_FRACTION = 0.5
#: Tensors alive around the largest activation (its input, itself, a residual/skip copy).
LIVE_FACTOR = 3
#: ``--tile auto`` never goes below this core size (smaller tiles cost more in context than they save).
MIN_AUTO_TILE = 64
#: On a CPU, images of more pixels than a square of 1.5x this side (:data:`CPU_WHOLE_PIXELS`) run in
#: cores of at most this size: one whole pass over a 768x768 input was 15-20% slower than 256-384
#: tiles for enhanced-x4, lumanet-x4-deep and edsr-baseline-x4 in bf16 (AMD EPYC, 1 thread;
#: activations of a whole image leave the caches).
#: Torch modules only: through onnxruntime a whole pass was the fastest (19-38% less time than 384 tiles
#: for the lumanet models on a 1000x1000 input, docs/BENCHMARKS.md).
CPU_TILE_CAP = 384
#: Images of at most this many pixels stay whole on a CPU whatever their longest side: the caches
#: care about the activations' size, not the shape. A 360x640 frame (230k pixels) ran as fast or
#: up to 28% faster whole than in 384 tiles, 480x854 (410k) 4-33% faster in tiles (lumanet-x4,
#: lumanet-x4-deep, enhanced-x4, bf16, 1 thread, docs/BENCHMARKS.md "Tile size on the CPU").
CPU_WHOLE_PIXELS = int(1.5 * CPU_TILE_CAP) ** 2
#: Most tiles per model call on a GPU (:func:`tile_batch`): a few tiles already keep it busy; more only
#: hold more memory.
MAX_TILE_BATCH = 8
#: The default model's speed budget on a CPU, ms per output megapixel (one thread, as measured).
CPU_BUDGET_MS_PER_MP = 1000.0
#: What ``upscale --for`` accepts (see the module docstring).
PURPOSES = ("benchmark", "photo")
#: ``--for photo`` without ``--strength``: the blend of a photo pair (0: fidelity model, 1: GAN model).
DEFAULT_PHOTO_STRENGTH = 0.5
_PROBE = 24


def available_memory(device: "torch.device") -> int:
    """Bytes free now: ``MemAvailable`` of /proc/meminfo for the CPU, ``cudaMemGetInfo`` on CUDA."""
    if device.type == "cuda":
        import torch

        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        import os

        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def bytes_per_input_pixel(model: Any, in_channels: int) -> float:
    """Estimated working memory of one forward pass per input pixel, from a probe pass (float32)."""
    import torch
    from torch import nn

    if not isinstance(model, nn.Module):  # an onnxruntime graph: no hooks; assume a compact network
        scale = int(getattr(model, "scale", 4))
        return 4.0 * (LIVE_FACTOR * 64 + 3 * in_channels * scale * scale)
    largest = 0
    hooks = []

    def record(_module: Any, _inputs: Any, output: Any) -> None:
        nonlocal largest
        if isinstance(output, torch.Tensor):
            largest = max(largest, output.numel())

    for module in model.modules():
        if not list(module.children()):
            hooks.append(module.register_forward_hook(record))
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.inference_mode():
            out = model(torch.zeros(1, in_channels, _PROBE, _PROBE, device=device))
    finally:
        for h in hooks:
            h.remove()
    pixels = _PROBE * _PROBE
    return 4.0 * (LIVE_FACTOR * largest + 3 * out.numel()) / pixels


def auto_tile(
    model: Any,
    height: int,
    width: int,
    in_channels: int,
    device: "torch.device",
    *,
    tile_overlap: int = 16,
    free: int | None = None,
    per_pixel: float | None = None,
) -> int:
    """The core size for ``--tile auto``: 0 (one pass) when the whole image fits the memory budget,
    else the largest core whose tile (core plus ``2 * tile_overlap``) fits, at least :data:`MIN_AUTO_TILE`.
    On a CPU, a torch module on an image of more than :data:`CPU_WHOLE_PIXELS` pixels uses cores of
    at most :data:`CPU_TILE_CAP`; an onnxruntime graph (:class:`superres.export.OnnxModel`) is not capped:
    there a whole pass was the fastest (docs/BENCHMARKS.md, "Tile size on the CPU").

    ``free`` (bytes) and ``per_pixel`` (bytes per input pixel) default to :func:`available_memory`
    and :func:`bytes_per_input_pixel`; tests pass them.
    """
    budget, per_pixel = _tile_budget(model, in_channels, device, free, per_pixel)
    from torch import nn

    capped = device.type == "cpu" and isinstance(model, nn.Module)
    cap = CPU_TILE_CAP if capped and height * width > CPU_WHOLE_PIXELS else None
    if height * width * per_pixel <= budget and cap is None:
        return 0
    side = int(math.isqrt(max(0, int(budget / per_pixel))))
    tile = max(MIN_AUTO_TILE, side - 2 * tile_overlap)
    return tile if cap is None else min(tile, cap)


def tile_batch(
    model: Any,
    tile: int,
    in_channels: int,
    device: "torch.device",
    *,
    tile_overlap: int = 16,
    free: int | None = None,
    per_pixel: float | None = None,
) -> int:
    """Tiles per model call for cores of ``tile`` pixels (``batch`` of
    :func:`superres.inference.upscale_tensor`).

    1 on a CPU, where one tile at a time keeps the activations in the caches (four 720p frames per
    call were 3-17% slower per frame than one, docs/BENCHMARKS.md), and for ``tile`` 0 (one pass).
    On CUDA, as many tiles (core plus ``2 * tile_overlap`` a side) as fit :data:`GPU_FRACTION` of the
    free GPU memory, 1 to :data:`MAX_TILE_BATCH`: with ``--tile auto`` one tile already fills that
    budget (batch 1), so batches come with an explicit smaller ``--tile``. ``free`` and ``per_pixel``
    as for :func:`auto_tile`.
    """
    if device.type != "cuda" or tile <= 0:
        return 1
    budget, per_pixel = _tile_budget(model, in_channels, device, free, per_pixel)
    return max(1, min(MAX_TILE_BATCH, int(budget // ((tile + 2 * tile_overlap) ** 2 * per_pixel))))


def _tile_budget(model: Any, in_channels: int, device: "torch.device", free: int | None,
                 per_pixel: float | None) -> tuple[float, float]:
    """``(bytes the tiles of one model call may take, working bytes per input pixel)`` on ``device``."""
    free = available_memory(device) if free is None else int(free)
    per_pixel = bytes_per_input_pixel(model, in_channels) if per_pixel is None else float(per_pixel)
    return free * (GPU_FRACTION if device.type == "cuda" else RAM_FRACTION), per_pixel


def choose_default_model(
    device: "torch.device",
    *,
    scale: int = 4,
    budget_ms: float | None = None,
    entries: list[dict[str, Any]] | None = None,
    profile: dict[str, Any] | None = None,
    precision_for: Callable[[str], str] | None = None,
    purpose: str = "benchmark",
) -> tuple[str, str]:
    """``(model name, one-line reason)`` for ``upscale`` without ``--model`` (module docstring).

    A model fits when its measured ms per output MP is at most ``budget_ms`` (default
    :data:`CPU_BUDGET_MS_PER_MP` on a CPU, no budget elsewhere). Among the fitting models the highest
    recorded PSNR-Y wins; models without a measured speed do not fit; when none fits, the fastest
    measured one is taken. ``precision_for(name)`` is the precision ``auto`` runs the model in here
    (default: :func:`superres.precision.resolve_precision`). ``purpose`` picks the candidates (module
    docstring); for ``photo`` a model with a ``strength_partner`` outranks one without.
    """
    import superres.modelfile

    if purpose not in PURPOSES:
        raise SuperresError(f"--for {purpose}: use one of {', '.join(PURPOSES)}")
    if entries is None:
        entries = superres.modelfile.list_models()
    shipped = [e for e in entries if e.get("shipped") and e.get("scale") == scale
               and e.get("purpose", "benchmark") == purpose]
    if not shipped:
        if purpose == "photo":
            raise SuperresError(f"--for photo: no x{scale} model for photos is shipped; pass --model")
        raise SuperresError("no pretrained model is shipped yet; pass --model PATH")
    profile = load_profile() if profile is None else profile

    def psnr(e: dict[str, Any]) -> float:
        v = e.get("psnr_y")
        return float(v) if isinstance(v, (int, float)) else float("-inf")

    def rank(e: dict[str, Any]) -> tuple[bool, float]:
        # For photos the tunable pair (a model with a strength partner) comes first.
        return (purpose == "photo" and bool(e.get("strength_partner")), psnr(e))

    if device.type != "cpu" and budget_ms is None:
        best = max(shipped, key=rank)
        return str(best["name"]), f"model: {best['name']} (the best shipped x{scale} {_kind(purpose)}model; no speed budget on {device.type}; --model chooses another)"
    budget = CPU_BUDGET_MS_PER_MP if budget_ms is None else float(budget_ms)
    if precision_for is None:
        def precision_for(name: str) -> str:
            return resolve_precision("auto", device, name, profile=profile)[0]

    models = profile.get("models") or {}
    speeds: dict[str, tuple[float, str]] = {}
    for e in shipped:
        # A photo model with a strength partner runs blended (at DEFAULT_PHOTO_STRENGTH unless --strength
        # says otherwise): its speed is that of the blend, whose precision may differ from the model's own.
        run = str(e["name"])
        if purpose == "photo" and e.get("strength_partner"):
            blend = superres.modelfile.with_strength(run, DEFAULT_PHOTO_STRENGTH)
            run = blend if blend in models else run
        prec = precision_for(run)
        ms = ((models.get(run) or {}).get("ms_per_mp") or {}).get(prec)
        if isinstance(ms, (int, float)):
            speeds[str(e["name"])] = (float(ms), prec if run == e["name"] else f"{prec} at strength {DEFAULT_PHOTO_STRENGTH:g}")
    where = f"{profile.get('cpu', 'a CPU')}, {profile.get('threads', 1)} thread"
    fitting = [e for e in shipped if e["name"] in speeds and speeds[e["name"]][0] <= budget]
    if fitting:
        best = max(fitting, key=rank)
        ms, prec = speeds[best["name"]]
        better = [e for e in shipped if rank(e) > rank(best)]
        skipped = ""
        if better and purpose == "benchmark":
            top = max(better, key=rank)
            top_ms = speeds.get(top["name"], (float("nan"), ""))[0]
            skipped = f"; {top['name']} scores {psnr(top) - psnr(best):+.2f} dB on Set5 at {top_ms:.0f} ms/MP"
        return str(best["name"]), (
            f"model: {best['name']} (best shipped x{scale} {_kind(purpose)}model within {budget:.0f} ms per output MP: "
            f"{ms:.0f} ms/MP in {prec} measured on {where}{skipped}; --model chooses another)"
        )
    if speeds:
        name = min(speeds, key=lambda n: speeds[n][0])
        return name, f"model: {name} (no shipped x{scale} {_kind(purpose)}model fits {budget:.0f} ms/MP here; the fastest measured; --model chooses another)"
    best = max(shipped, key=rank)
    return str(best["name"]), f"model: {best['name']} (no measured speeds; the best shipped x{scale} {_kind(purpose)}model; --model chooses another)"


def _kind(purpose: str) -> str:
    return "photo " if purpose == "photo" else ""


def model_for(
    model: str | None, device: "torch.device", *, purpose: str | None = None, strength: float | None = None,
    entries: list[dict[str, Any]] | None = None, profile: dict[str, Any] | None = None,
) -> tuple[str | None, list[str]]:
    """The model spec ``upscale`` runs for ``--model``/``--for``/``--strength``, and the lines saying why.

    ``model`` None and ``purpose`` None or ``benchmark`` without ``strength``: ``(None, [])``, i.e. the
    caller's default choice. ``--for`` with ``--model`` is refused (``--for`` chooses the model). With
    ``purpose="photo"`` the model comes from :func:`choose_default_model`; a model with a strength partner
    then runs at :data:`DEFAULT_PHOTO_STRENGTH` unless ``strength`` is given. ``strength`` needs a
    model that names a ``strength_partner`` and gives ``NAME@S`` (:func:`superres.modelfile.load_model`).
    """
    import superres.modelfile

    purpose = purpose or "benchmark"
    if purpose not in PURPOSES:
        raise SuperresError(f"--for {purpose}: use one of {', '.join(PURPOSES)}")
    if model is not None and purpose != "benchmark":
        raise SuperresError(f"--for {purpose} chooses the model; drop --for or --model {model}")
    notes: list[str] = []
    if model is None:
        if purpose == "benchmark" and strength is None:
            return None, notes
        model, why = choose_default_model(device, purpose=purpose, entries=entries, profile=profile)
        notes.append(why)
        if strength is None and purpose == "photo" and superres.modelfile.strength_partner(model):
            strength = DEFAULT_PHOTO_STRENGTH
    if strength is not None:
        partner = superres.modelfile.strength_partner(model)
        if partner is None:
            raise SuperresError(
                f"--strength: {model} has no partner model to blend with; use --for photo or a model that has "
                "one (superres models lists them)"
            )
        spec = superres.modelfile.with_strength(model, strength)
        notes.append(f"strength: {strength:g} (0: {partner}, faithful; 1: {model}, sharper; --strength sets it)")
        model = spec
    return model, notes
