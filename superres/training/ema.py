"""Exponential moving average (EMA) of a model's weights.

Averaging the weights of the last few thousand steps smooths out the noise of the final SGD steps
and usually adds a little PSNR for free; when ``train.ema`` is set, the EMA copy is the one that is
validated and exported. The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` after ``n``
updates, so the average is not dominated by the random initial weights early in (short) runs.
Buffers (e.g. batch-norm statistics, none in the shipped models) are copied, not averaged.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn


class EMA:
    """A frozen copy of ``model`` whose floating-point parameters track an EMA of ``model``'s."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.updates = 0
        self.module = copy.deepcopy(model).eval()
        self.module.requires_grad_(False)

    def current_decay(self) -> float:
        """The decay the next update uses (the warm-up rule of the module docstring)."""
        n = self.updates + 1
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Move the average towards ``model``'s current weights (call after each optimizer step)."""
        d = self.current_decay()
        self.updates += 1
        ema_params = [p for p in self.module.parameters() if p.is_floating_point()]
        new_params = [p.detach() for p in model.parameters() if p.is_floating_point()]
        if len(ema_params) != len(new_params):
            raise RuntimeError("EMA: the model's parameters changed since the EMA copy was made")
        torch._foreach_lerp_(ema_params, new_params, 1.0 - d)
        for ema_b, b in zip(self.module.buffers(), model.buffers()):
            ema_b.copy_(b)

    def state_dict(self) -> dict[str, Any]:
        """Tensors and plain numbers only (loadable with ``torch.load(weights_only=True)``)."""
        return {"decay": self.decay, "updates": self.updates, "weights": self.module.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay = float(state["decay"])
        self.updates = int(state["updates"])
        self.module.load_state_dict(state["weights"])
