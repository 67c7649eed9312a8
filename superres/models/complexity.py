"""How big and how expensive a model is: parameters, FLOPs, wall-clock time.

FLOPs are counted by :class:`torch.utils.flop_counter.FlopCounterMode`, which counts a multiply-add
as 2 FLOPs (FLOPs = 2 x MACs, the convention of most SR papers' "Mult-Adds" x 2). It counts matrix
multiplications and convolutions (plain and transposed); element-wise work (ReLU, additions, bias,
PixelShuffle, interpolation) is not counted, which is a small share for convolutional SR models.

Timings depend on the machine and on ``torch.get_num_threads()``; the callers (docs/MODELS.md,
benchmarks) record both next to the numbers. They report the *fastest* of a few runs (as ``timeit``
advises): on a shared machine other processes only ever add time, so the minimum is the best estimate
of what the model itself costs, and the median would measure the neighbours.
"""

from __future__ import annotations

import time
from typing import Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements in ``model`` (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _example_input(model: nn.Module, input_shape: Sequence[int]) -> torch.Tensor:
    ref = next(iter(model.parameters()), None)
    device = ref.device if ref is not None else torch.device("cpu")
    dtype = ref.dtype if ref is not None and ref.is_floating_point() else torch.float32
    # 0.5 rather than zeros: a constant image in the middle of the value range, like real inputs.
    return torch.full(tuple(input_shape), 0.5, device=device, dtype=dtype)


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """FLOPs (2 x multiply-adds) of one forward pass of ``model`` on an input of ``input_shape``.

    ``input_shape`` is ``(N, C, h, w)``; e.g. ``(1, 3, 32, 32)`` for a 32x32 -> 128x128 pass at x4.
    """
    x = _example_input(model, input_shape)
    counter = FlopCounterMode(display=False)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(x)
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(model: nn.Module, input_shape: Sequence[int], *, repeats: int = 3, warmup: int = 1) -> float:
    """Fastest of ``repeats`` timed inference forward passes (eval mode, no grad) on ``input_shape``, in s."""
    x = _example_input(model, input_shape)
    was_training = model.training
    model.eval()
    times = []
    try:
        with torch.no_grad():
            for i in range(warmup + repeats):
                _sync(x.device)
                start = time.perf_counter()
                model(x)
                _sync(x.device)
                if i >= warmup:
                    times.append(time.perf_counter() - start)
    finally:
        model.train(was_training)
    return min(times)


def time_train_step(model: nn.Module, input_shape: Sequence[int], *, repeats: int = 3, warmup: int = 1) -> float:
    """Fastest of ``repeats`` timed forward + L1 loss + backward passes on ``input_shape`` (train mode; no
    optimizer step), in seconds.

    This is the cost of one training iteration minus the optimizer update, which is negligible for
    these model sizes; it is what decides how many iterations fit in a time budget.
    """
    x = _example_input(model, input_shape)
    was_training = model.training
    model.train()
    times = []
    try:
        for i in range(warmup + repeats):
            model.zero_grad(set_to_none=True)
            _sync(x.device)
            start = time.perf_counter()
            out = model(x)
            out.abs().mean().backward()
            _sync(x.device)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return min(times)
