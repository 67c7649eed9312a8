"""Where computations run: one device parser for every command, and what the CPU can do.

``resolve_device`` is the single place a device option (``--device``, ``train.device``) is parsed
and checked, so every command accepts the same values (``auto``, ``cpu``, ``cuda``, ``cuda:N``,
``mps``) and refuses an absent device with the same one-line message before any work is done.
"""

from __future__ import annotations

import platform
from pathlib import Path

import torch

from superres.errors import SuperresError

__all__ = ["resolve_device", "auto_device", "cpu_name", "cpu_has_native_bf16"]


def _mps_available() -> bool:
    return bool(hasattr(torch.backends, "mps") and torch.backends.mps.is_available())


def auto_device() -> torch.device:
    """The best device present: CUDA, then Apple MPS, then the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if _mps_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: "str | torch.device", *, option: str = "--device") -> torch.device:
    """Parse and validate a device option, with a message the user can act on.

    ``auto`` is :func:`auto_device`. ``torch.device("cuda")`` is accepted by torch even on machines
    without CUDA and only fails at the first allocation with a long traceback, so availability and
    the device index are checked here. Errors are :class:`SuperresError` naming ``option`` (e.g.
    ``--device`` or ``train.device``) and the value.
    """
    if isinstance(device, str) and device == "auto":
        return auto_device()
    label = f"{option} {device}" if option.startswith("-") else f"{option}={device}"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise SuperresError(f"{label}: not a torch device ({exc})") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise SuperresError(f"{label}: CUDA is not available on this machine (use cpu or auto)")
        count = torch.cuda.device_count()
        if dev.index is not None and dev.index >= count:
            raise SuperresError(f"{label}: only {count} CUDA device(s) present (cuda:0..cuda:{count - 1})")
    elif dev.type == "mps":
        if not _mps_available():
            raise SuperresError(f"{label}: the MPS backend is not available on this machine (use cpu or auto)")
    elif dev.type != "cpu":
        raise SuperresError(f"{label}: unsupported device type {dev.type!r}; use auto, cpu, cuda or mps")
    return dev


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows: for the machine
    context of benchmark tables, generated docs and model files."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX), where bf16 autocast
    speeds up convolutions; on other CPUs it emulates bf16 and is slower than fp32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False
