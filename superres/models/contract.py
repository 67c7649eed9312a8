"""The model contract: what every super-resolution model in :data:`superres.models.REGISTRY` promises.

A typed description of a model, after spandrel's ``ImageModelDescriptor``: its scale and channels,
what the architecture supports (scales, channel counts, half/bfloat16, input sizes), and the optional
extras some models have (a fold to an inference form, an int8 plan). The rest of the package reads
these fields instead of probing models with ``getattr``/``hasattr``:

==========================  ===================================================================
field                       read by
==========================  ===================================================================
scale, in_channels          inference (tiling, channel matching), evaluate (the scale check),
                            export (the graph's metadata), modelfile.save_model (the args)
fold, training_options      registry.fold (and so export and scripts/ship_model.py)
int8_plan                   export (the convs written as ``QLinearConv``)
warm_start_optional         modelfile.load_initial_weights (buffers a warm start may lack)
metadata                    export (the model file's metadata copied into the ONNX file)
scales, channel_counts,     tests/test_contract.py (every registered model is built and checked
out_channels, supports_*,   against them); they are the documented promise for callers
size_multiple, min_size,
test_options
==========================  ===================================================================

Each model class states the architecture-level part once as a class attribute ``CONTRACT`` (scale and
channels left ``None``) and its ``contract()`` method binds it to the instance::

    class ESPCN(nn.Module):
        CONTRACT = ModelContract(scales=SCALES, test_options={"channels": 8, "hidden": 4})

        def contract(self) -> ModelContract:
            return self.CONTRACT.bind(self.scale, self.in_channels)

:func:`describe` is the one function callers use: it returns ``model.contract()`` for a model that
follows the :class:`SRModel` protocol, and for anything else (an :class:`~superres.export.OnnxModel`
follows it too; a user's own callable may not) only what its ``scale``/``in_channels`` attributes
declare.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, runtime_checkable

from superres.scales import SCALES

__all__ = ["ModelContract", "SRModel", "describe"]


@dataclass(frozen=True)
class ModelContract:
    """What a model (or, with ``scale``/``in_channels`` left ``None``, its architecture) promises.

    Attributes:
        scale: the upscaling factor of this model (``None``: the architecture, or not declared).
        in_channels: channels of the input ``N x C x h x w`` in [0, 1].
        out_channels: channels of the output ``N x C' x (h*scale) x (w*scale)`` (not clamped).
        scales: the scales the architecture can be built for.
        channel_counts: the ``in_channels`` values it takes; ``None``: any count >= 1.
        supports_half: float16 weights and inputs give a usable result.
        supports_bfloat16: bfloat16 weights and inputs give a usable result.
        size_multiple: input height and width must be multiples of this.
        min_size: the smallest input height and width.
        fold: returns the inference form of a model trained with training-only structure
            (``None``: the model is already in its inference form).
        training_options: options that only the training form takes, with a small value that turns
            it on; :func:`superres.models.fold` drops them from the args of the folded model.
        int8_plan: returns the convs that run in int8 (:class:`superres.models.quant.Int8Conv`);
            ``None``: no int8 convs.
        warm_start_optional: buffers a warm start from a model file may lack (they are then
            initialised afresh, e.g. int8 activation scales observed while training).
        test_options: small option values that build a tiny model of the architecture for tests.
        metadata: the model file's metadata (``superres_meta``), filled in by :func:`describe`.
    """

    scale: int | None = None
    in_channels: int | None = None
    out_channels: int | None = None
    scales: tuple[int, ...] = SCALES
    channel_counts: tuple[int, ...] | None = None
    supports_half: bool = True
    supports_bfloat16: bool = True
    size_multiple: int = 1
    min_size: int = 1
    fold: Callable[[], Any] | None = None
    training_options: Mapping[str, Any] = field(default_factory=dict)
    int8_plan: Callable[[], list[Any]] | None = None
    warm_start_optional: tuple[str, ...] = ()
    test_options: Mapping[str, Any] = field(default_factory=dict)
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def bind(self, scale: int, in_channels: int, out_channels: int | None = None, **extra: Any) -> "ModelContract":
        """This architecture's contract for one model: its scale and channels (``out_channels``
        defaults to ``in_channels``), plus per-instance fields (``fold``, ``int8_plan`` ...)."""
        out = in_channels if out_channels is None else out_channels
        return dataclasses.replace(self, scale=int(scale), in_channels=int(in_channels), out_channels=int(out), **extra)

    def takes_channels(self, channels: int) -> bool:
        """Whether the architecture takes ``channels`` input channels."""
        return channels >= 1 if self.channel_counts is None else channels in self.channel_counts


@runtime_checkable
class SRModel(Protocol):
    """A model that satisfies the contract: ``model(x)`` maps ``N x in_channels x h x w`` in [0, 1]
    to ``N x out_channels x (h*scale) x (w*scale)``, and ``contract()`` says so.

    A registered architecture also states its architecture-level contract as the class attribute
    ``CONTRACT`` (read by :func:`superres.models.registry.contract`); an exported model
    (:class:`~superres.export.OnnxModel`) has only the instance's.
    """

    scale: int
    in_channels: int

    def contract(self) -> ModelContract: ...

    def __call__(self, x: Any) -> Any: ...


def describe(model: object) -> ModelContract:
    """The contract of ``model``, with its file metadata (``superres_meta``) attached.

    A model that follows :class:`SRModel` answers itself. Any other object (a user's module or a
    test double handed to :func:`superres.inference.upscale_tensor`) is described by what its
    ``scale`` and ``in_channels`` attributes declare (``None`` where absent) and nothing more: no
    fold, no int8 plan. This is the only place that looks at a model's attributes.
    """
    if isinstance(model, SRModel):
        contract = model.contract()
        if not isinstance(contract, ModelContract):
            raise TypeError(f"{type(model).__name__}.contract() returned {type(contract).__name__}, not a ModelContract")
    else:
        scale, channels = getattr(model, "scale", None), getattr(model, "in_channels", None)
        contract = ModelContract(scale=scale, in_channels=channels, out_channels=channels)
    meta = getattr(model, "superres_meta", None)
    return dataclasses.replace(contract, metadata=dict(meta)) if meta else contract
