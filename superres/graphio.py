"""ONNX graphs with 8-bit image input and output: the conversions around the network inside the graph.

``superres export MODEL --out FILE.onnx --io uint8`` writes a graph that takes the LR image as
stored (``lr_u8``: ``N x h x w x C`` uint8, channels last) and returns the SR image as it is written
(``sr_u8``: ``N x H x W x C`` uint8): the float conversion, the layout changes, the clamp to [0, 1]
and the round-half-to-even to 8 bits run in onnxruntime next to the network, so a consumer calls one
graph on the decoded pixels. (A model's bicubic base, e.g. ``lumanet``'s, is already inside every
exported graph as a fixed conv + DepthToSpace.) Only models whose channels are the image's (RGB
models for RGB photos) are offered; a 1-channel Y model's colour conversion is not in the graph.

The float graph is exported and verified first (:func:`superres.export.export_onnx`), then wrapped
(:func:`superres.export.add_uint8_io`): ``Transpose -> Cast -> Div(255)`` before ``lr``, the float
pipeline's own conversion, and ``Mul(255) -> QuantizeLinear(step 1) -> Transpose`` after ``sr``
(QuantizeLinear rounds half to even and saturates to [0, 255] in one pass). The wrapped file is
checked against the float graph followed by :func:`superres.io.to_integer` on a random image and a
photo: the same samples, bit for bit, or nothing is written.

``superres upscale --backend onnx`` runs the same wrapping in memory for 8-bit RGB images that fit
in one pass (:meth:`superres.export.OnnxModel.run_uint8`); the speed of the in-graph conversions is
in docs/BENCHMARKS.md ("Inference at the hardware limit").
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from superres.errors import SuperresError
from superres.export import (
    DEFAULT_OPSET,
    INPUT_NAME,
    OUTPUT_NAME,
    UINT8_INPUT,
    UINT8_OUTPUT,
    _ort,
    _session,
    add_uint8_io,
    check_image_input,
    export_onnx,
)
from superres.io import atomic_write, to_integer

__all__ = ["export_uint8_onnx"]


def _reference(session: Any, lr_u8: np.ndarray) -> np.ndarray:
    """The float graph + :func:`superres.io.to_integer`: what the wrapped graph must reproduce."""

    x = np.ascontiguousarray(lr_u8.transpose(0, 3, 1, 2), dtype=np.float32) / np.float32(255.0)
    sr = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    return np.stack([to_integer(np.clip(s.transpose(1, 2, 0), 0.0, 1.0), 8) for s in sr])


def export_uint8_onnx(model: str | os.PathLike[str], out: str | os.PathLike[str], *, opset: int | None = None,
                      progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Export ``model`` (a shipped name or model file with as many channels as its images) as a uint8
    in/out ONNX file ``out``, verified (module docstring). Returns a summary dict. ``progress`` gets
    one line as each step starts (:func:`superres.export.export_onnx`'s, then the uint8 graph's)."""
    import onnx

    out = Path(out)
    ort = _ort()
    with tempfile.TemporaryDirectory(prefix="superres-u8-") as tmp:
        float_path = Path(tmp) / "float.onnx"
        result = export_onnx(model, float_path, opset=opset or DEFAULT_OPSET, progress=progress)
        if result.in_channels != 3:
            raise SuperresError(
                f"--io uint8: {result.arch} takes {result.in_channels} channel(s); the uint8 graph is offered for RGB models "
                "(a Y model's colour conversion is not in the graph)"
            )
        if progress is not None:
            progress("adding the uint8 input/output and checking it against the float graph + rounding")
        float_session = _session(ort, float_path, threads=None)
        proto = add_uint8_io(onnx.load(str(float_path)))
        onnx.checker.check_model(proto)
        with atomic_write(out) as path:
            onnx.save(proto, str(path))
            session = _session(ort, path, threads=None)
            rng = np.random.default_rng(0)
            photo, _ = check_image_input(3)
            inputs = [
                rng.integers(0, 256, (2, 37, 29, 3), dtype=np.uint8),
                np.clip(np.rint(photo.transpose(0, 2, 3, 1) * 255.0), 0, 255).astype(np.uint8),
            ]
            worst = 0
            for lr in inputs:
                got = session.run([UINT8_OUTPUT], {UINT8_INPUT: lr})[0]
                want = _reference(float_session, lr)
                if got.shape != want.shape or got.dtype != np.uint8:
                    raise SuperresError(f"{out}: the uint8 graph returns {got.shape} {got.dtype}, expected {want.shape} uint8")
                worst = max(worst, int(np.abs(got.astype(np.int16) - want.astype(np.int16)).max()))
            if worst:
                raise SuperresError(f"{out}: the uint8 graph differs from the float graph + rounding by {worst} levels; nothing written")
    return {"path": str(out), "arch": result.arch, "scale": result.scale, "max_level_diff": worst}
