"""Optimizer and learning-rate schedule.

The schedule is a pure function of the step (:func:`learning_rate`) that the trainer applies to the
optimizer's parameter groups before every step, instead of a stateful ``torch.optim.lr_scheduler``:
there is no scheduler state to save or to get out of step on resume, and the value at any step can
be computed (and tested) on its own.

Step ``t`` is 0-based (the ``t``-th optimizer step, iteration ``t + 1`` in logs and checkpoints):

* warm-up: ``lr * (t + 1) / warmup`` for ``t < warmup`` (never 0, so the first step moves);
* ``cosine``: from ``lr`` at the first step after warm-up to ``min_lr`` at the last step,
  ``min_lr + (lr - min_lr) * (1 + cos(pi * p)) / 2`` with ``p = (t - warmup) / (iterations - 1 - warmup)``;
* ``multistep``: ``lr * gamma ** k`` where ``k`` counts the milestones ``m`` with ``t >= m`` (as
  ``torch.optim.lr_scheduler.MultiStepLR``: the first ``m`` steps use the undecayed rate);
* ``constant``: ``lr``.

Warm-up multiplies the scheduled value, so a milestone inside the warm-up still applies.

Time budgets. With ``train.max_seconds`` a run may stop long before ``iterations``; a schedule
that followed the step alone would then stop at a high learning rate, which costs PSNR. So the
schedule (not the warm-up) follows the *effective* step
``max(t, time_fraction * (iterations - 1))``, with ``time_fraction = elapsed / max_seconds``. The
cosine then reaches ``min_lr`` when the time runs out, or at the last iteration if that comes first.
Without ``max_seconds`` the time fraction is 0 and the schedule depends on the step alone. Exact
reproducibility and resume rely on that.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch

from superres.config import OptimConfig, ScheduleConfig


def learning_rate(
    optim: OptimConfig, schedule: ScheduleConfig, step: int, iterations: int, time_fraction: float = 0.0
) -> float:
    """The learning rate of 0-based ``step`` in a run of ``iterations`` steps (module docstring).

    ``time_fraction`` (elapsed / max_seconds, 0 without a time budget) moves the schedule forward
    when the time budget runs out before the iterations do.
    """
    base = optim.lr
    warm = 1.0
    if step < schedule.warmup:
        warm = (step + 1) / schedule.warmup
    effective = max(float(step), time_fraction * (iterations - 1))
    if schedule.name == "cosine":
        span = iterations - 1 - schedule.warmup
        p = 0.0 if span <= 0 else min(max((effective - schedule.warmup) / span, 0.0), 1.0)
        value = schedule.min_lr + (base - schedule.min_lr) * 0.5 * (1.0 + math.cos(math.pi * p))
    elif schedule.name == "multistep":
        value = base * schedule.gamma ** sum(1 for m in schedule.milestones if effective >= m)
    else:
        value = base
    return value * warm


def build_optimizer(
    optim: OptimConfig, params: Iterable[torch.nn.Parameter], device: torch.device, *, capturable: bool = False
) -> torch.optim.Optimizer:
    """Adam or AdamW over ``params``. ``fused: auto`` picks the fused kernel on CUDA (one launch for
    all parameters instead of several per tensor) and torch's default elsewhere.

    ``capturable=True`` (CUDA only; for a step captured in a CUDA graph, ``train.cuda_graph``): the
    optimizer keeps its step counts on the device and takes the learning rate from a one-element
    device tensor, which :func:`set_learning_rate` fills in place, so a replayed step reads the
    current rate instead of the one the capture saw."""
    fused: bool | None
    if optim.fused == "auto":
        fused = True if device.type == "cuda" else None
    else:
        fused = bool(optim.fused)
    cls = torch.optim.Adam if optim.name == "adam" else torch.optim.AdamW
    lr: float | torch.Tensor = optim.lr
    if capturable:
        if device.type != "cuda":
            raise ValueError(f"a capturable optimizer needs CUDA, not {device}")
        lr = torch.tensor(float(optim.lr), dtype=torch.float32, device=device)
    return cls(
        params,
        lr=lr,
        betas=(float(optim.betas[0]), float(optim.betas[1])),
        weight_decay=optim.weight_decay,
        fused=fused,
        capturable=capturable,
    )


def set_learning_rate(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Apply ``lr`` to every parameter group (in place where the group's rate is a device tensor:
    queued on the GPU like the step that reads it, no host synchronisation)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], torch.Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """``optimizer.load_state_dict(state)``, keeping this optimizer's own kind of learning rate (a
    float, or the device tensor of a capturable one) and its ``capturable`` flag, which the saved
    groups would otherwise replace: a checkpoint taken with or without ``train.cuda_graph`` resumes
    either way."""
    own = [(group["lr"], group.get("capturable", False)) for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, (lr, capturable) in zip(optimizer.param_groups, own):
        saved = group["lr"]
        value = float(saved.item()) if isinstance(saved, torch.Tensor) else float(saved)
        if isinstance(lr, torch.Tensor):
            lr.fill_(value)
            group["lr"] = lr
        else:
            group["lr"] = value
        group["capturable"] = capturable
