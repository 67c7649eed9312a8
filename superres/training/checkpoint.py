"""Training checkpoints (``last.pt``): atomic save, safe load, random-number-generator states.

A checkpoint holds everything a run needs to continue exactly where it stopped: model, optimizer,
EMA and GradScaler state, the iteration, the elapsed training time, the best validation score, the
partial logging window, and the RNG states of Python, NumPy and torch (CPU and CUDA). The learning
rate schedule is a pure function of the iteration (:mod:`superres.training.optim`), so it needs no
state of its own, and so are the training batches (:mod:`superres.training.batches`); the RNG states
are saved anyway so that anything else drawing random numbers (a loss, a future augmentation)
resumes exactly too.

Files are written through :func:`superres.io.atomic_write` (temporary file in the same folder,
fsync, rename), so a run killed mid-save (even by SIGKILL) leaves the previous complete
``last.pt``. They are read with ``torch.load(weights_only=True)``: only tensors and plain containers
are in a checkpoint, so loading one never runs pickled code.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from superres.errors import SuperresError
from superres.io import atomic_write

#: Bumped when the layout of the checkpoint dict changes incompatibly.
FORMAT = 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (plus the format number) to ``path`` atomically."""
    with atomic_write(Path(path)) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise SuperresError(f"{path}: no checkpoint to resume from")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unpickling errors come in many types; all mean "not a valid checkpoint"
        raise SuperresError(f"{path}: cannot read the checkpoint ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SuperresError(f"{path}: not a superres training checkpoint of format {FORMAT}")
    return state


def capture_rng() -> dict[str, Any]:
    """The RNG states of Python, NumPy and torch as tensors/plain values (``weights_only``-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng`: set every generator back to the saved state."""
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        saved = [s.cpu() for s in state["cuda"]]
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved)


def _as_tuple(value: Any) -> Any:
    """``random.setstate`` wants tuples; a round trip through a checkpoint may give lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuple(v) for v in value)
    return value
