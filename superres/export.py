"""ONNX export of superres models (``superres export``) and running the exported files (``OnnxModel``).

Exporter
--------
torch 2.13 offers two exporters. ``torch.onnx.export(..., dynamo=True)`` (the default since 2.9)
traces with ``torch.export`` and needs the ``onnxscript`` package, which is not a dependency of
superres (and not installed with the ``onnx`` extra). The TorchScript-based exporter
(``dynamo=False``) is still shipped, needs only ``onnx`` to post-process the file, and handles every
registry model (convolutions, transposed convolutions, PixelShuffle -> DepthToSpace, bicubic
``F.interpolate`` -> Resize, channel attention -> GlobalAveragePool) with dynamic batch, height and
width. We use it and silence its deprecation notice; the check below catches any numerical
difference, so a future exporter change cannot ship a wrong file unnoticed.

What the file contains
----------------------
One input ``lr`` (``N x C x h x w`` float32 in [0, 1]) and one output ``sr``
(``N x C x (h*s) x (w*s)`` float32, not clamped), with the batch and spatial axes dynamic. The model
file's metadata is copied into the ONNX ``metadata_props``: ``arch``, ``scale``, ``in_channels``,
``value_range`` (JSON ``[0, 1]``), ``args`` (JSON) and ``superres`` (the whole JSON metadata), so
:class:`OnnxModel` (and any other ONNX consumer) knows how to feed it without the safetensors file.

Int8 models
-----------
A model with int8 convs (``lumanet`` with ``int8``; it has an ``int8_plan()`` and an ``int8``
switch) is traced as its float twin, then :func:`quantize_graph` replaces each planned conv with a
``QLinearConv`` (uint8 activations, per-channel int8 weights, int32 bias) using the model's own
observed scales, with ``QuantizeLinear``/``DequantizeLinear`` where float ops meet the int8 chain.
The ``int8`` metadata entry lists the quantized convs.

Verification
------------
Every export is checked before the file is put in place: the file is written to a temporary name,
loaded with onnxruntime and run on (1) a random input of a size different from the one traced, with
batch 2, and (2) a real photo (``--check-image`` or scikit-image's bundled "astronaut" sample,
downscaled to an LR of 96x80 pixels with MATLAB bicubic, Y of BT.601 for 1-channel models). The
largest absolute difference from PyTorch on each must be below ``tolerance`` (1e-4 by default;
measured values are around 1e-6, int8 models included: in eval mode they compute what the integer
kernels compute); otherwise nothing is written and a :class:`SuperresError` reports the figure.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import numpy as np

from superres.color import rgb_to_ycbcr
from superres.errors import SuperresError
from superres.io import atomic_write, read_image
from superres.modelfile import load_model
from superres.models import describe, fold, quant
from superres.models.contract import ModelContract
from superres.resize import imresize
from superres.threads import OtherLoad, current_threads, idle_cpus, session_options

if TYPE_CHECKING:
    import torch
    from torch import nn

    from superres.models.contract import ModelContract
    from superres.models.quant import Int8Conv

__all__ = [
    "DEFAULT_OPSET", "TOLERANCE", "UINT8_INPUT", "UINT8_OUTPUT", "ExportResult", "quantize_graph", "export_onnx",
    "add_uint8_io", "OnnxModel", "load_onnx", "check_image_input",
]

#: ONNX opset written by default: 17 is read by onnxruntime >= 1.14 and has every op the models use.
DEFAULT_OPSET = 17
#: Largest accepted absolute difference between onnxruntime and PyTorch outputs (values in [0, 1]).
TOLERANCE = 1e-4
INPUT_NAME = "lr"
OUTPUT_NAME = "sr"
#: Input and output of a graph with 8-bit image input and output (:func:`add_uint8_io`).
UINT8_INPUT = "lr_u8"
UINT8_OUTPUT = "sr_u8"
#: Size the model is traced at; the check runs at other sizes to prove the axes are really dynamic.
_TRACE_SIZE = (24, 28)


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and how closely onnxruntime reproduces PyTorch."""

    path: Path
    arch: str
    scale: int
    in_channels: int
    opset: int
    max_abs_diff_random: float
    max_abs_diff_image: float
    check_image: str
    metadata: dict[str, Any] = field(default_factory=dict)
    #: the quantized convs of an int8 model (written as QLinearConv)
    int8: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"wrote {self.path} ({self.arch}, x{self.scale}, {self.in_channels} channel(s), opset {self.opset}); "
            f"onnxruntime vs PyTorch max |diff|: {self.max_abs_diff_random:.2e} on a random 2x{self.in_channels}x37x29 "
            f"input, {self.max_abs_diff_image:.2e} on {self.check_image} (tolerance {TOLERANCE:g})"
            + (f"; int8 convs as QLinearConv: {', '.join(self.int8)}" if self.int8 else "")
        )


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise SuperresError("the onnx backend needs onnxruntime: pip install 'superres[onnx]'") from None
    return onnxruntime


def _onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise SuperresError("ONNX export needs the onnx package: pip install 'superres[onnx]'") from None
    return onnx


# --------------------------------------------------------------------------- check input
def check_image_input(in_channels: int, path: Path | None = None) -> tuple[np.ndarray, str]:
    """A real photo as a ``1 x C x h x w`` float32 LR array for the export check, and its description.

    ``path`` is any image file (used as the LR as is); without it scikit-image's bundled "astronaut"
    photo is downscaled to 96x80 with MATLAB bicubic. 1-channel models get Y of BT.601 (what they
    are run on), 3-channel models RGB; other channel counts repeat/trim the RGB channels.
    """
    if path is not None:
        data = np.asarray(read_image(Path(path)).data, dtype=np.float32)
        what = str(path)
    else:
        from skimage import data as samples

        data = np.asarray(imresize(samples.astronaut(), size=(80, 96)), dtype=np.float32) / 255.0
        what = "the astronaut sample photo (96x80 LR)"
    if data.ndim == 2:
        data = data[:, :, None]
    if in_channels == 1 and data.shape[2] >= 3:
        data = rgb_to_ycbcr(data[:, :, :3])[:, :, :1].astype(np.float32)
    elif data.shape[2] != in_channels:
        reps = -(-in_channels // data.shape[2])
        data = np.tile(data, (1, 1, reps))[:, :, :in_channels]
    return np.ascontiguousarray(data.transpose(2, 0, 1)[None], dtype=np.float32), what


# --------------------------------------------------------------------------- int8
def quantize_graph(proto: Any, plan: "list[Int8Conv]") -> Any:
    """Rewrite the float graph ``proto`` so that the convs in ``plan`` run as ``QLinearConv``.

    Each planned conv is found by its weight initializer (``MODULE.weight``). Its float input is
    quantized (``QuantizeLinear``, uint8) unless it is already the uint8 output of a planned conv;
    its weights become int8 per output channel and its bias int32, as the model's integer pass
    rounds them (:func:`~superres.models.quant.int8_weight`, :func:`~superres.models.quant.int32_bias`);
    a ReLU after it is absorbed by the
    output's zero point of 0. Where a float consumer (or the graph output) reads the result, a
    ``DequantizeLinear`` restores the float tensor under its old name. Returns ``proto``, changed.
    """
    import torch
    from onnx import helper, numpy_helper

    graph = proto.graph
    inits = {t.name: t for t in graph.initializer}
    nodes = list(graph.node)
    by_weight = {n.input[1]: n for n in nodes if n.op_type == "Conv" and len(n.input) > 1}
    consumers: dict[str, list[Any]] = {}
    for n in nodes:
        for name in n.input:
            consumers.setdefault(name, []).append(n)
    graph_outputs = {o.name for o in graph.output}

    def const(name: str, array: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    replaced: dict[int, list[Any]] = {}  # id(conv node) -> the nodes that take its place
    dropped: set[int] = set()
    quantized: dict[str, tuple[str, float, int]] = {}  # float tensor -> (uint8 tensor, scale, zero point)
    plan_outputs: list[tuple[Any, str, list[Any]]] = []  # (QLinearConv, float tensor it stands for, its nodes)
    for item in plan:
        conv = by_weight.get(f"{item.module}.weight")
        if conv is None:
            raise SuperresError(f"int8 export: no Conv node reads {item.module}.weight in the traced graph")
        weight = torch.from_numpy(numpy_helper.to_array(inits[conv.input[1]]).copy()).float()
        bias = torch.from_numpy(numpy_helper.to_array(inits[conv.input[2]]).copy()).float() if len(conv.input) > 2 else None
        w_q, w_scale = quant.int8_weight(weight)
        prefix = f"int8/{item.module}"
        x_scale = const(f"{prefix}/x_scale", np.float32(item.in_scale))
        x_zp = const(f"{prefix}/x_zp", np.uint8(0))
        new: list[Any] = []
        source = conv.input[0]
        if source in quantized:  # the uint8 output of the previous planned conv
            x_q, previous_scale, previous_zp = quantized[source]
            if not (np.isclose(previous_scale, item.in_scale, rtol=1e-6) and previous_zp == 0):
                raise SuperresError(
                    f"int8 export: {item.module} expects input scale {item.in_scale}, the previous conv writes {previous_scale}"
                )
        else:
            x_q = f"{prefix}/x_q"
            new.append(helper.make_node("QuantizeLinear", [source, x_scale, x_zp], [x_q], name=f"{prefix}/QuantizeLinear"))
        inputs = [
            x_q, x_scale, x_zp,
            const(f"{prefix}/w", w_q.to(torch.int8).numpy()), const(f"{prefix}/w_scale", w_scale.numpy()),
            const(f"{prefix}/w_zp", np.zeros(w_scale.shape, np.int8)),
            const(f"{prefix}/y_scale", np.float32(item.out_scale)), const(f"{prefix}/y_zp", np.uint8(item.out_zero_point)),
        ]
        if bias is not None:
            b_q = quant.int32_bias(bias, torch.tensor(item.in_scale, dtype=torch.float32), w_scale)
            inputs.append(const(f"{prefix}/b", b_q.to(torch.int32).numpy()))
        out_float = conv.output[0]
        if item.relu:
            relus = [n for n in consumers.get(out_float, []) if n.op_type == "Relu"]
            if len(relus) != 1 or len(consumers[out_float]) != 1:
                raise SuperresError(f"int8 export: {item.module} should feed exactly one Relu")
            dropped.add(id(relus[0]))
            out_float = relus[0].output[0]
        y_q = f"{prefix}/y_q"
        attrs = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
        qconv = helper.make_node("QLinearConv", inputs, [y_q], name=f"{prefix}/QLinearConv", **attrs)
        new.append(qconv)
        quantized[out_float] = (y_q, item.out_scale, item.out_zero_point)
        plan_outputs.append((qconv, out_float, new))
        replaced[id(conv)] = new

    for qconv, out_float, new in plan_outputs:
        readers = [n for n in consumers.get(out_float, []) if id(n) not in dropped and id(n) not in replaced]
        if readers or out_float in graph_outputs:
            name = qconv.name.rsplit("/", 1)[0]
            dq = helper.make_node("DequantizeLinear", [qconv.output[0], qconv.input[6], qconv.input[7]], [out_float],
                                  name=f"{name}/DequantizeLinear")
            new.append(dq)
    order: list[Any] = []
    for n in nodes:
        if id(n) in dropped:
            continue
        order.extend(replaced.get(id(n), [n]))
    del graph.node[:]
    graph.node.extend(order)
    used = {name for n in graph.node for name in n.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return proto


@contextmanager
def _float_twin(net: "nn.Module", on: bool) -> Iterator[None]:
    """While active (``on``), an int8 model computes in plain float (its ``int8`` switch off)."""
    if not on:
        yield
        return
    net.int8 = False
    try:
        yield
    finally:
        net.int8 = True


# --------------------------------------------------------------------------- export
def _resolve_model(model: "nn.Module | str | os.PathLike[str]") -> tuple["nn.Module", dict[str, Any]]:
    from torch import nn

    if isinstance(model, nn.Module):
        meta = dict(describe(model).metadata)
        meta.setdefault("arch", type(model).__name__.lower())
        return model.eval(), meta

    net = load_model(str(model), device="cpu")
    return net, dict(net.superres_meta)


def _max_diff(session: Any, net: "nn.Module", x: np.ndarray) -> float:
    """Max |onnxruntime - PyTorch| on input ``x``."""
    import torch

    with torch.inference_mode():
        want = net(torch.from_numpy(x)).numpy()
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    if got.shape != want.shape:
        raise SuperresError(f"the exported model returns {got.shape}, PyTorch {want.shape}")
    return float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))


def export_onnx(
    model: "nn.Module | str | os.PathLike[str]",
    out: str | os.PathLike[str],
    *,
    opset: int = DEFAULT_OPSET,
    check_image: str | os.PathLike[str] | None = None,
    tolerance: float = TOLERANCE,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export ``model`` (a module with ``scale``/``in_channels``, a shipped model name or a model file)
    to the ONNX file ``out``, verified against PyTorch with onnxruntime (module docstring).

    ``progress`` gets one line as each step starts (export, then the onnxruntime check).
    The file is written atomically and only if both checks pass. Raises :class:`SuperresError` for
    an unknown model, an opset the exporter refuses, or a check above ``tolerance``.
    """
    import torch

    onnx = _onnx()
    ort = _ort()
    if opset < 11:
        raise SuperresError(f"--opset {opset}: too old (Resize and DepthToSpace need opset >= 11)")
    out = Path(out)
    net, meta = _resolve_model(model)

    # Training-only structure (lumanet's expand) is multiplied out: the graph is the plain model's.
    net, folded_args = fold(net, meta.get("args", {}))
    if "args" in meta:
        meta["args"] = folded_args
    net = net.to("cpu").eval()
    contract = describe(net)
    scale, channels = contract.scale, contract.in_channels
    if scale is None or channels is None:
        raise SuperresError(f"the model ({type(net).__name__}) has no scale/in_channels attribute")
    scale, channels = int(scale), int(channels)

    props = {
        "arch": str(meta.get("arch")),
        "scale": str(scale),
        "in_channels": str(channels),
        "value_range": json.dumps(meta.get("value_range", [0, 1])),
        "args": json.dumps(meta.get("args", {})),
        "superres": json.dumps({**meta, "scale": scale, "in_channels": channels}, default=str),
        "input": f"{INPUT_NAME}: N x C x h x w float32 in [0, 1]",
        "output": f"{OUTPUT_NAME}: N x C x (h*scale) x (w*scale) float32, not clamped",
    }
    # int8 models (lumanet int8) are traced as their float twin (fake quantization off), then the
    # planned convs are rewritten as QLinearConv with the model's own scales (quantize_graph).
    plan = list(contract.int8_plan()) if contract.int8_plan is not None else []
    if plan:
        props["int8"] = json.dumps([item.module for item in plan])
    dummy = torch.rand(1, channels, *_TRACE_SIZE, generator=torch.Generator().manual_seed(0))

    say = progress or (lambda line: None)
    say(f"exporting {props['arch']} x{scale} to ONNX (opset {opset}{', int8' if plan else ''})")
    with atomic_write(out) as tmp:
        with warnings.catch_warnings():
            # The TorchScript exporter announces its deprecation on every call (see module docstring).
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            warnings.simplefilter("ignore", category=UserWarning)
            try:
                with torch.inference_mode(False), torch.no_grad(), _float_twin(net, bool(plan)):
                    torch.onnx.export(
                        net,
                        (dummy,),
                        str(tmp),
                        dynamo=False,
                        opset_version=opset,
                        input_names=[INPUT_NAME],
                        output_names=[OUTPUT_NAME],
                        dynamic_axes={
                            INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                            OUTPUT_NAME: {0: "batch", 2: "out_height", 3: "out_width"},
                        },
                        do_constant_folding=True,
                    )
            except Exception as exc:  # exporter errors are long; keep the first line
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise SuperresError(f"{out}: ONNX export of {props['arch']} failed at opset {opset} ({first})") from exc
        proto = onnx.load(str(tmp))
        if plan:
            quantize_graph(proto, plan)
        onnx.helper.set_model_props(proto, props)
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))

        session = _session(ort, tmp, threads=None)
        rng = np.random.default_rng(0)
        x_random = rng.random((2, channels, 37, 29), dtype=np.float32)
        x_image, image_what = check_image_input(channels, None if check_image is None else Path(check_image))
        say(f"checking the graph with onnxruntime against PyTorch (a random input, {image_what})")
        diff_random = _max_diff(session, net, x_random)
        diff_image = _max_diff(session, net, x_image)
        if not (diff_random < tolerance and diff_image < tolerance):
            raise SuperresError(
                f"{out}: onnxruntime disagrees with PyTorch (max |diff| {diff_random:.2e} on a random input, "
                f"{diff_image:.2e} on {image_what}; tolerance {tolerance:g}); nothing written"
            )
    return ExportResult(
        path=out,
        arch=props["arch"],
        scale=scale,
        in_channels=channels,
        opset=opset,
        max_abs_diff_random=diff_random,
        max_abs_diff_image=diff_image,
        check_image=image_what,
        metadata=props,
        int8=[item.module for item in plan],
    )


def add_uint8_io(proto: Any) -> Any:
    """Wrap the float graph ``proto`` (input ``lr``, output ``sr``, NCHW float in [0, 1]) with uint8
    NHWC input :data:`UINT8_INPUT` and output :data:`UINT8_OUTPUT`. Returns ``proto``, changed.

    The conversions are the float pipeline's own, op for op, so the wrapped graph gives the samples
    of the float graph followed by :func:`superres.io.to_integer`, bit for bit: ``Cast`` and ``Div``
    by 255 before the network (:func:`superres.io.to_float`), and after it ``Mul`` by 255 and
    ``QuantizeLinear`` with step 1, which rounds half to even and saturates to [0, 255] in one pass
    (NaN becomes 0, as ``to_integer`` makes it).
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    old_in = next(i for i in graph.input if i.name == INPUT_NAME)
    old_out = next(o for o in graph.output if o.name == OUTPUT_NAME)
    dims_in = [d.dim_param or d.dim_value for d in old_in.type.tensor_type.shape.dim]  # N, C, h, w
    dims_out = [d.dim_param or d.dim_value for d in old_out.type.tensor_type.shape.dim]
    new_in = helper.make_tensor_value_info(UINT8_INPUT, TensorProto.UINT8, [dims_in[0], dims_in[2], dims_in[3], dims_in[1]])
    new_out = helper.make_tensor_value_info(UINT8_OUTPUT, TensorProto.UINT8, [dims_out[0], dims_out[2], dims_out[3], dims_out[1]])
    graph.initializer.extend([
        numpy_helper.from_array(np.array(255.0, np.float32), "io/levels"),
        numpy_helper.from_array(np.array(1.0, np.float32), "io/step"),
        numpy_helper.from_array(np.array(0, np.uint8), "io/zero_point"),
    ])
    pre = [
        helper.make_node("Transpose", [UINT8_INPUT], ["io/lr_nchw"], perm=[0, 3, 1, 2], name="io/Transpose_in"),
        helper.make_node("Cast", ["io/lr_nchw"], ["io/lr_float"], to=TensorProto.FLOAT, name="io/Cast"),
        helper.make_node("Div", ["io/lr_float", "io/levels"], [INPUT_NAME], name="io/Div"),
    ]
    post = [
        helper.make_node("Mul", [OUTPUT_NAME, "io/levels"], ["io/sr_levels"], name="io/Mul"),
        helper.make_node("QuantizeLinear", ["io/sr_levels", "io/step", "io/zero_point"], ["io/sr_nchw"], name="io/Quantize"),
        helper.make_node("Transpose", ["io/sr_nchw"], [UINT8_OUTPUT], perm=[0, 2, 3, 1], name="io/Transpose_out"),
    ]
    nodes = pre + list(graph.node) + post
    del graph.node[:]
    graph.node.extend(nodes)
    graph.input.remove(old_in)
    graph.input.insert(0, new_in)
    graph.output.remove(old_out)
    graph.output.insert(0, new_out)
    return proto


# --------------------------------------------------------------------------- running
def _session(ort: Any, path: Path, threads: int | None, graph: bytes | None = None) -> Any:
    """An onnxruntime CPU session for the file ``path`` (or for the serialized ``graph``, made from
    it) with ``threads`` intra-op threads (None: the count of :func:`superres.threads.apply_threads`,
    else torch's) and no spinning workers.

    Following torch's count (itself set by ``--threads``, ``OMP_NUM_THREADS`` or ``torch.set_num_threads``)
    keeps the two backends comparable and stops onnxruntime from taking every core on a shared machine.
    """
    options = session_options(ort, threads)
    try:
        return ort.InferenceSession(str(path) if graph is None else graph, sess_options=options,
                                    providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise SuperresError(f"{path}: onnxruntime cannot load the file ({str(exc).strip().splitlines()[0]})") from None


#: Operators a band-split run (:class:`OnnxModel`) may meet: per-pixel arithmetic, shape plumbing
#: and the stride-1 convolutions whose reach :func:`receptive_radius` adds up. Anything else (pools,
#: resizes, transposed convolutions ...) keeps the model on one intra-op pool.
_BAND_SAFE_OPS = frozenset({
    "Add", "Sub", "Mul", "Div", "Relu", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "Clip", "Round", "Floor", "Max", "Min",
    "Cast", "Constant", "ConstantOfShape", "Identity", "Concat", "Split", "Slice", "Reshape", "Transpose", "Tile",
    "Expand", "Shape", "Gather", "Unsqueeze", "Squeeze", "ReduceSum", "DepthToSpace", "Pad",
    "QuantizeLinear", "DequantizeLinear", "Conv", "QLinearConv", "ConvInteger",
})
_CONV_OPS = ("Conv", "QLinearConv", "ConvInteger")

#: Largest receptive radius (input pixels) worth splitting into bands: each band recomputes this
#: many rows on each inner side.
MAX_BAND_HALO = 16
#: A band holds at least this many rows of its own (besides the halo), so the halo costs at most
#: about a quarter more work.
MIN_BAND_ROWS = 64
#: Seconds of calls over which :class:`OnnxModel` measures the other processes' load before it
#: changes the number of bands (``/proc/stat`` counts in 10 ms ticks).
LOAD_WINDOW = 0.1


def receptive_radius(graph: Any) -> int | None:
    """Input pixels on each side that can reach an output pixel of ``graph`` (an ``onnx.GraphProto``),
    bounded from above by adding up the reach of every stride-1 convolution; ``None`` when the graph
    holds an operator outside :data:`_BAND_SAFE_OPS`, a strided convolution, or a subgraph."""
    import onnx

    radius = 0
    for node in graph.node:
        if node.op_type not in _BAND_SAFE_OPS:
            return None
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            return None
        if node.op_type in _CONV_OPS:
            kernel = attrs.get("kernel_shape")
            if kernel is None or any(s != 1 for s in attrs.get("strides", [1])):
                return None
            dilations = attrs.get("dilations", [1] * len(kernel))
            radius += max(d * (k - 1) // 2 + (k - 1) % 2 for k, d in zip(kernel, dilations))
    return radius


class OnnxModel:
    """An exported ``.onnx`` file run by onnxruntime, usable wherever a model is:
    :func:`superres.inference.upscale_tensor`, :func:`~superres.inference.upscale` and
    ``superres eval``/``upscale --backend onnx``.

    It is a plain callable (``N x C x h x w`` float tensor -> float32 tensor on the CPU) that
    satisfies the model contract (:mod:`superres.models.contract`): ``scale``, ``in_channels``,
    ``contract()`` and ``superres_meta``, taken from the file's ``metadata_props`` (written by
    :func:`export_onnx`). It runs float32 only (no half, no bfloat16).

    **Threads.** With ``threads`` above 1, a compact graph (only the operators of
    :data:`_BAND_SAFE_OPS`, receptive radius at most :data:`MAX_BAND_HALO`) runs as horizontal bands
    of the input, one per thread, each on a one-thread session call with ``radius`` extra rows on its
    inner sides that are cut from the output: the layers of such a model are too small to split well
    inside onnxruntime's own pool, while whole bands scale with the cores. Before it is used, the
    split is checked on a probe input against one whole run (equal within 1e-5, else the model keeps
    onnxruntime's pool); ``banded`` says which way it runs. An input runs in as many bands of at
    least :data:`MIN_BAND_ROWS` rows as it holds, up to the bands in use; one with fewer than twice
    that many rows runs whole.

    **Other processes.** A band on a core that another process keeps busy finishes last and holds up
    the call (two bands beside one busy process ran slower than one thread). So the bands in use,
    :attr:`active_threads`, follow the cores left free by other processes: sampled for 50 ms when the
    model is made, then measured (:class:`superres.threads.OtherLoad`) over the model's own calls,
    at least :data:`LOAD_WINDOW` seconds at a time, and one band means a whole one-thread run.
    """

    def __init__(self, path: str | os.PathLike[str], *, threads: int | None = None) -> None:
        ort = _ort()
        self.path = Path(path)
        if not self.path.is_file():
            raise SuperresError(f"{self.path}: ONNX file not found")
        self.threads = int(threads if threads is not None else current_threads())
        # The file is read once: its sessions are made from these bytes, which :meth:`run_uint8` wraps
        # later (the file of an on-the-fly export, :func:`load_onnx`, is gone by then).
        self._graph = self.path.read_bytes()
        # A graph that may run in bands gets a one-thread session; any other one onnxruntime's pool.
        radius = None
        if self.threads > 1:
            import onnx

            try:
                radius = receptive_radius(onnx.load_from_string(self._graph).graph)
            except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and kin: a damaged file
                reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
                raise SuperresError(f"{self.path}: not a readable ONNX file ({reason})") from None
            radius = radius if radius is not None and radius <= MAX_BAND_HALO else None
        self.session = _session(ort, self.path, self.threads if radius is None else 1, graph=self._graph)
        self._uint8_session: Any = None
        self.halo: int | None = None
        self.bands_per_thread = 1
        self.active_threads = self.threads
        self._pool: Any = None
        self._load: OtherLoad | None = None
        props: Mapping[str, str] = self.session.get_modelmeta().custom_metadata_map
        try:
            self.scale = int(props["scale"])
            self.in_channels = int(props["in_channels"])
        except (KeyError, ValueError):
            raise SuperresError(
                f"{self.path}: not a superres ONNX export (no scale/in_channels in its metadata); "
                "export models with `superres export`"
            ) from None
        self.arch = props.get("arch", "?")
        try:
            self.superres_meta: dict[str, Any] = json.loads(props.get("superres", "{}"))
        except json.JSONDecodeError:
            self.superres_meta = {}
        names = [i.name for i in self.session.get_inputs()]
        if names != [INPUT_NAME]:
            raise SuperresError(f"{self.path}: expected one input named {INPUT_NAME!r}, found {names}")
        if radius is not None and not self._try_bands(radius):
            self.session = _session(ort, self.path, self.threads, graph=self._graph)  # the probe disagreed: onnxruntime's own pool

    @property
    def banded(self) -> bool:
        """True when calls are split into bands run on :attr:`threads` threads (class docstring)."""
        return self._pool is not None

    def _try_bands(self, radius: int) -> bool:
        """Set up the band split with ``radius`` rows of context when a probe run agrees with a whole run."""
        from concurrent.futures import ThreadPoolExecutor

        self.halo = radius
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="superres-onnx-band")
        rows = self.threads * (MIN_BAND_ROWS + 2 * radius)
        probe = np.random.default_rng(0).random((1, self.in_channels, rows, 24), dtype=np.float32)
        whole = self._run(probe)
        if whole.shape[-2] % rows or np.abs(self._run_bands(probe, self.threads) - whole).max() > 1e-5:
            self._pool.shutdown()
            self._pool, self.halo = None, None
            return False
        idle = idle_cpus(0.05)
        if idle is not None:
            self.active_threads = self._fit(idle)
        self._load = OtherLoad(LOAD_WINDOW)
        return True

    def _fit(self, free_cpus: float) -> int:
        """The bands to run with ``free_cpus`` CPUs left by other processes: 1 to :attr:`threads`."""
        return max(1, min(self.threads, int(free_cpus + 0.5)))

    def _bands_now(self) -> int:
        """:attr:`active_threads`, updated when a load window has closed (class docstring)."""
        others = self._load.poll() if self._load is not None else None
        if others is not None:
            self.active_threads = self._fit((os.cpu_count() or 1) - others)
        return self.active_threads

    def _run(self, array: np.ndarray) -> np.ndarray:
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: array})[0]

    def _run_uint8(self, array: np.ndarray) -> np.ndarray:
        return self._uint8_session.run([UINT8_OUTPUT], {UINT8_INPUT: array})[0]

    def _bands_for(self, rows: int) -> int:
        """Bands for an input of ``rows`` rows: the bands in use now, each of at least
        :data:`MIN_BAND_ROWS` rows; 1 (a whole run) when not banded or too short."""
        if self._pool is None or rows < 2 * MIN_BAND_ROWS:
            return 1
        return min(self._bands_now(), rows // MIN_BAND_ROWS)

    def run_uint8(self, pixels: np.ndarray) -> np.ndarray:
        """``h x w x C`` uint8 samples (``C`` = :attr:`in_channels`) -> the ``H x W x C`` uint8 samples
        of the upscaled image, through the graph wrapped with the 8-bit conversions
        (:func:`add_uint8_io`, made the first time): the samples that ``superres.io.to_integer`` makes
        of this model's clipped float output for ``superres.io.to_float(pixels)``, bit for bit, with
        the conversions inside onnxruntime. Runs in bands like :meth:`__call__`.
        """
        if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != self.in_channels:
            raise ValueError(f"run_uint8 expects h x w x {self.in_channels} uint8 samples, got {pixels.shape} {pixels.dtype}")
        if self._uint8_session is None:
            import onnx

            graph = add_uint8_io(onnx.load_from_string(self._graph)).SerializeToString()
            # the threads of the float session: one per band when banded, else onnxruntime's pool
            self._uint8_session = _session(_ort(), self.path, 1 if self.banded else self.threads, graph=graph)
        array = np.ascontiguousarray(pixels)[None]
        threads = self._bands_for(array.shape[1])
        if threads > 1:
            return self._run_bands(array, threads, uint8=True)[0]
        return self._run_uint8(array)[0]

    def _run_bands(self, array: np.ndarray, threads: int, *, uint8: bool = False) -> np.ndarray:
        """``array`` in horizontal bands, each with :attr:`halo` rows of context, run on ``threads`` threads.

        Up to :attr:`bands_per_thread` bands a thread, each of at least :data:`MIN_BAND_ROWS` rows of
        its own: more bands than threads let a thread whose core is shared with another process fall
        behind without holding up the rest, at the price of more halo rows computed twice.

        The result is ``N x C x H x W`` laid out as ``N x H x W x C`` (channels_last): each band copies
        its rows into that layout on its own thread, so the ``H x W x C`` image the caller makes next
        (:func:`superres.inference.upscale`) is a view rather than one more copy on one thread.

        ``uint8``: ``array`` is the ``N x h x w x C`` uint8 input of :meth:`run_uint8`, and the result
        ``N x H x W x C`` uint8.
        """
        assert self.halo is not None
        axis = 1 if uint8 else 2  # the rows
        run = self._run_uint8 if uint8 else self._run
        height, halo = array.shape[axis], self.halo
        bands = max(threads, min(threads * self.bands_per_thread, height // MIN_BAND_ROWS))
        cuts = [round(height * k / bands) for k in range(bands + 1)]

        whole: list[np.ndarray] = []  # the output, made by the first band to finish; each band copies its rows in
        lock = threading.Lock()

        def band(k: int) -> None:
            top, bottom = max(0, cuts[k] - halo), min(height, cuts[k + 1] + halo)
            out = run(np.ascontiguousarray(array[:, top:bottom] if uint8 else array[:, :, top:bottom]))
            if not uint8:
                out = out.transpose(0, 2, 3, 1)  # N x H x W x C: the layout of the result's memory
            scale = out.shape[1] // (bottom - top)
            with lock:
                if not whole:
                    whole.append(np.empty((out.shape[0], height * scale) + out.shape[2:], out.dtype))
            whole[0][:, cuts[k] * scale:cuts[k + 1] * scale] = out[:, (cuts[k] - top) * scale:(cuts[k + 1] - top) * scale]

        list(self._pool.map(band, range(bands)))  # waits for every band; raises the first band's error
        return whole[0] if uint8 else whole[0].transpose(0, 3, 1, 2)  # float: an N x C x H x W view

    def contract(self) -> "ModelContract":
        """The exported model's contract: its scale and channels, float32 only."""
        return ModelContract(supports_half=False, supports_bfloat16=False).bind(self.scale, self.in_channels)

    def __call__(self, x: "torch.Tensor") -> "torch.Tensor":
        import torch

        array = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        threads = self._bands_for(array.shape[-2])
        if threads > 1:
            return torch.from_numpy(self._run_bands(array, threads))
        return torch.from_numpy(self._run(array))

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, arch={self.arch!r}, scale={self.scale}, in_channels={self.in_channels})"


def load_onnx(model: str | os.PathLike[str], *, threads: int | None = None) -> OnnxModel:
    """An :class:`OnnxModel` for an ``.onnx`` file, or for a shipped model name / ``.safetensors`` file,
    which is exported on the fly (verified as by :func:`export_onnx`) to a temporary file.

    The on-the-fly route lets ``--backend onnx`` take the same ``--model`` values as the torch backend;
    the session holds the graph in memory, so the temporary file is deleted right away.
    """
    text = str(model)
    if text.lower().endswith(".onnx"):
        return OnnxModel(text, threads=threads)
    with tempfile.TemporaryDirectory(prefix="superres-onnx-") as tmp:
        path = Path(tmp) / "model.onnx"
        export_onnx(text, path)
        return OnnxModel(path, threads=threads)
