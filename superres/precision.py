"""Inference precision: ``--precision {auto,fp32,bf16,fp16}`` for ``upscale``, ``eval`` and ``benchmark``.

The network runs under ``torch.autocast`` in the chosen precision (weights stay float32, the model is
not modified; convolutions and matrix products run in bf16/fp16 with float32 accumulation, the output
is returned as float32). ``fp32`` runs without autocast, exactly as before.

Where each precision runs:

* ``bf16`` on a CPU that computes it natively (AVX512-BF16 or AMX, :func:`~superres.devices.cpu_has_native_bf16`);
  on other CPUs oneDNN emulates it, slower than fp32, so ``auto`` never picks it there (one-line note)
  and an explicit ``bf16`` runs with a note. On CUDA where the GPU supports bf16.
* ``fp16`` on CUDA, and on a CPU only where oneDNN has native fp16 kernels (AMX-FP16 / AVX512-FP16,
  :func:`cpu_has_native_fp16`); elsewhere on a CPU it is refused.
* The ``onnx`` backend runs float32 only (onnxruntime's CPU provider has no bf16 convolutions).

``auto`` picks the fastest precision whose scores stay within :data:`TOLERANCE_DB` of fp32 on *both*
Set5 and Set14 (PSNR-Y, the paper protocol). Those changes are measured once per shipped model by
``scripts/measure_inference_profile.py`` and stored in ``superres/weights/inference_profile.json``
(:func:`load_profile`); a model without a measurement there (any file of your own) runs fp32 under
``auto``.
"""

from __future__ import annotations

import functools
import json
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, ContextManager

from superres import devices
from superres.errors import SuperresError
from superres.modelfile import WEIGHTS_DIR

if TYPE_CHECKING:
    import torch

__all__ = [
    "PRECISIONS", "TOLERANCE_DB", "PROFILE_PATH", "load_profile", "cpu_has_native_fp16",
    "model_key", "resolve_precision", "autocast_for",
]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: Largest PSNR-Y change (dB, on Set5 and on Set14) against fp32 that ``auto`` accepts.
TOLERANCE_DB = 0.01
#: Per shipped model: measured PSNR-Y per precision and CPU speed (scripts/measure_inference_profile.py).
PROFILE_PATH = Path(__file__).resolve().parent / "weights" / "inference_profile.json"


@functools.lru_cache(maxsize=None)
def _read_profile(path: str) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def load_profile(path: Path | None = None) -> dict[str, Any]:
    """The measured inference profile (``{}`` when the file is missing or unreadable)."""
    return _read_profile(str(path or PROFILE_PATH))


def cpu_has_native_fp16() -> bool:
    """True when oneDNN runs fp16 convolutions natively on this CPU (AMX-FP16 / AVX512-FP16)."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_fp16_supported())
    except (AttributeError, RuntimeError):
        return False


def model_key(model: Any) -> str | None:
    """The shipped-model name a model (a name, a path to a shipped file, or a loaded model) is profiled
    under, or None for anything else."""
    if isinstance(model, (str, Path)):
        text = str(model)
        stem = Path(text).name.removesuffix(".safetensors")
        if "/" not in text and "\\" not in text and not text.endswith(".safetensors"):
            return text

        try:
            if Path(text).resolve() == (WEIGHTS_DIR / f"{stem}.safetensors").resolve():
                return stem
        except OSError:
            return None
        return None
    meta = getattr(model, "superres_meta", None) or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    return str(name) if name else None


def _within_tolerance(entry: dict[str, Any], precision: str, tolerance: float) -> tuple[bool, str]:
    deltas = (entry.get("delta_db") or {}).get(precision) or {}
    needed = ("Set5", "Set14")
    if not all(isinstance(deltas.get(s), (int, float)) for s in needed):
        return False, f"{precision} not measured for this model"
    worst = max(abs(float(deltas[s])) for s in needed)
    text = ", ".join(f"{s} {float(deltas[s]):+.4f} dB" for s in needed)
    return worst <= tolerance, f"{precision} vs fp32 PSNR-Y: {text} (tolerance {tolerance:g} dB)"


def resolve_precision(
    precision: str,
    device: "torch.device",
    model: Any = None,
    *,
    backend: str = "torch",
    profile: dict[str, Any] | None = None,
    tolerance: float = TOLERANCE_DB,
) -> tuple[str, str | None]:
    """``(precision to run, one-line note or None)`` for a requested ``precision`` on ``device``.

    ``model`` (a name, a path or a loaded model, see :func:`model_key`) selects the measured profile
    entry ``auto`` reads. Explicit choices that cannot run raise :class:`SuperresError`.
    """
    if precision not in PRECISIONS:
        raise SuperresError(f"--precision {precision}: unknown; use one of {', '.join(PRECISIONS)}")
    kind = getattr(device, "type", str(device))
    if backend == "onnx":
        if precision in ("bf16", "fp16"):
            raise SuperresError(f"--precision {precision}: the onnx backend runs fp32; use --backend torch or --precision fp32")
        return "fp32", None
    if precision == "fp32":
        return "fp32", None
    if kind == "mps":
        if precision == "auto":
            return "fp32", None
        raise SuperresError(f"--precision {precision}: not offered on MPS; use fp32")
    if kind == "cuda":
        import torch

        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise SuperresError("--precision bf16: this GPU has no bf16; use fp16 or fp32")
        if precision != "auto":
            return precision, None
    else:  # cpu
        if precision == "fp16":
            if not cpu_has_native_fp16():
                raise SuperresError("--precision fp16: this CPU has no native fp16 (AMX-FP16/AVX512-FP16); use bf16 or fp32")
            return "fp16", None
        if precision == "bf16":
            note = None if devices.cpu_has_native_bf16() else "bf16: this CPU emulates bf16 (no AVX512-BF16/AMX), slower than fp32"
            return "bf16", note
    # auto: bf16 where it runs natively and the measured scores stay within the tolerance
    if kind == "cpu" and not devices.cpu_has_native_bf16():
        return "fp32", "precision auto: fp32 (this CPU has no native bf16: no AVX512-BF16/AMX)"
    if kind == "cuda":
        import torch

        if not torch.cuda.is_bf16_supported():
            return "fp32", "precision auto: fp32 (this GPU has no bf16)"
    key = model_key(model)
    entry = ((profile if profile is not None else load_profile()).get("models") or {}).get(key or "")
    if not entry:
        return "fp32", f"precision auto: fp32 ({key or 'this model'} has no measured bf16 profile)"
    ok, why = _within_tolerance(entry, "bf16", tolerance)
    return ("bf16" if ok else "fp32"), f"precision auto: {'bf16' if ok else 'fp32'} ({why})"


def autocast_for(device: "torch.device", precision: str) -> ContextManager[Any]:
    """The autocast context that runs a model in ``precision`` (``fp32``: none) on ``device``."""
    import torch

    if precision == "fp32":
        return nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    if dtype is None:
        raise SuperresError(f"--precision {precision}: resolve 'auto' before running (resolve_precision)")
    return torch.autocast(device_type=device.type, dtype=dtype)
