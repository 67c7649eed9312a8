"""Batched tiles for accelerators: the tiles of one image that have the same shape run as one batch.

:func:`superres.inference.upscale_tensor` calls the model once per tile, which keeps device memory
at one tile and suits a CPU. A GPU is better fed with a few tiles at a time: one kernel launch
sequence serves ``batch`` tiles. :func:`upscale_tensor_batched` gives the same result as
``upscale_tensor`` (the same tile grid, context and partition-of-unity weights, docs/INFERENCE.md;
equal within float rounding, tested on the CPU) and differs only in grouping: tiles whose input
spans have equal height and width (all interior tiles of an evenly split grid, most edge tiles) are
concatenated along the batch axis, up to ``batch`` tiles per call. On CUDA the tiles go in as
channels_last, the layout cuDNN's bf16/fp16 convolutions prefer. Device memory is bounded by
``batch`` tiles instead of one.

Not measured yet: no GPU was available when this was written (issue 21, item 6);
``benchmarks/gpu_tiles.py`` times it against the per-tile loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from superres.errors import SuperresError
from superres.inference import _model_scale, _tile_call, axis_weights, tile_grid

if TYPE_CHECKING:
    import torch

    from superres.inference import Model

__all__ = ["upscale_tensor_batched"]


def upscale_tensor_batched(
    model: "Model",
    x: "torch.Tensor",
    *,
    tile: int,
    tile_overlap: int = 16,
    batch: int = 8,
    precision: str = "fp32",
) -> "torch.Tensor":
    """:func:`~superres.inference.upscale_tensor` with up to ``batch`` equal-shaped tiles per model call.

    ``precision`` is a resolved precision (``fp32``, ``bf16``, ``fp16``; :mod:`superres.precision`).
    Returns the float32 result on ``x``'s device, not clamped.
    """
    import torch

    if x.ndim != 4:
        raise ValueError(f"upscale_tensor_batched expects an N x C x H x W tensor, got shape {tuple(x.shape)}")
    if tile < 0 or tile_overlap < 0 or batch < 1:
        raise SuperresError(f"--tile {tile} / --tile-overlap {tile_overlap} / batch {batch}: tile and overlap >= 0, batch >= 1")
    call = _tile_call(model, x.device, False, precision)
    n, _, height, width = x.shape
    ys, xs = tile_grid(height, tile), tile_grid(width, tile)
    half_width = tile_overlap // 2
    groups: dict[tuple[int, int], list[tuple[int, int, int, int, int, int]]] = {}
    for i in range(len(ys) - 1):
        for j in range(len(xs) - 1):
            y0, y1 = max(0, ys[i] - tile_overlap), min(height, ys[i + 1] + tile_overlap)
            x0, x1 = max(0, xs[j] - tile_overlap), min(width, xs[j + 1] + tile_overlap)
            groups.setdefault((y1 - y0, x1 - x0), []).append((i, j, y0, y1, x0, x1))

    def run(part: "torch.Tensor") -> "torch.Tensor":
        if part.device.type == "cuda":
            part = part.contiguous(memory_format=torch.channels_last)
        return call(part)

    canvas: torch.Tensor | None = None
    scale = 0
    with torch.inference_mode():
        for (h, w), members in groups.items():
            for k in range(0, len(members), batch):
                chunk = members[k : k + batch]
                out = run(torch.cat([x[:, :, y0:y1, x0:x1] for _, _, y0, y1, x0, x1 in chunk]))
                if canvas is None:
                    scale = _model_scale(model, (h, w), out.shape)
                    canvas = torch.zeros((n, out.shape[1], height * scale, width * scale), dtype=torch.float32, device=x.device)
                elif out.shape[-2:] != (h * scale, w * scale):
                    raise SuperresError(f"the model's output size changed between tiles: {tuple(out.shape)}")
                for index, (i, j, y0, y1, x0, x1) in enumerate(chunk):
                    wy = axis_weights(ys, scale, half_width, i, y0, y1)
                    wx = axis_weights(xs, scale, half_width, j, x0, x1)
                    ry, rx = np.nonzero(wy)[0], np.nonzero(wx)[0]
                    ya, yb, xa, xb = int(ry[0]), int(ry[-1]) + 1, int(rx[0]), int(rx[-1]) + 1
                    weight = torch.from_numpy(np.outer(wy[ya:yb], wx[xa:xb]).astype(np.float32)).to(out.device)
                    part = out[index * n : (index + 1) * n, :, ya:yb, xa:xb] * weight
                    canvas[:, :, y0 * scale + ya : y0 * scale + yb, x0 * scale + xa : x0 * scale + xb] += part.to(x.device)
                del out
    assert canvas is not None
    return canvas
