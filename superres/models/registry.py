"""The registry of architectures: one explicit dict from name to builder.

The dict is written out by hand (no decorators, no import-time registration) so that the list of
models is readable in one place and importing a module never changes it. A builder is a model class
or a ``functools.partial`` of one (a preset, e.g. later ``"edsr-baseline": partial(EDSR, ...)``).
Every builder takes ``scale`` and ``in_channels`` plus its own typed keyword options, and returns a
plain ``nn.Module`` that satisfies the model contract (:mod:`superres.models.contract`: ``.scale``,
``.in_channels``, ``contract()``; its forward maps ``N x C x h x w`` in [0, 1] to
``N x C x (h*scale) x (w*scale)``). ``tests/test_contract.py`` checks every entry against it.

Option names: a model's depth is ``blocks`` and its feature width ``channels``. The older names
(``num_blocks``, ``num_convs``, ``features``, FSRCNN's ``d``/``m``) are still accepted by
:func:`build`, through :data:`OPTION_ALIASES`, so configs, model files and notebooks written with
them load unchanged.

:func:`build` is the single entry point used by the trainer and by :mod:`superres.modelfile`, which
stores ``(arch, args)`` and rebuilds the model with ``build(arch, **args)``.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable, Mapping

from torch import nn

from superres.errors import SuperresError
from superres.models.baseline import Baseline
from superres.models.contract import ModelContract, describe
from superres.models.discriminators import SRGANDiscriminator, UNetDiscriminator, VGGStyleDiscriminator
from superres.models.edsr import EDSR
from superres.models.enhanced import Enhanced
from superres.models.espcn import ESPCN
from superres.models.fsrcnn import FSRCNN
from superres.models.lumanet import LumaNet
from superres.models.rcan import RCAN
from superres.models.rrdbnet import RRDBNet
from superres.models.srresnet import SRResNet
from superres.models.srvgg import SRVGG

REGISTRY: dict[str, Callable[..., nn.Module]] = {
    # the two models the project started from
    "baseline": Baseline,
    "enhanced": Enhanced,
    # small and fast (Y-channel models in their papers: in_channels=1)
    "espcn": ESPCN,
    "fsrcnn": FSRCNN,
    "lumanet": LumaNet,  # RGB in/out, learns the luma only: the shipped compact model
    # classic residual networks and their presets
    "srresnet": SRResNet,
    "edsr-baseline": functools.partial(EDSR, blocks=16, channels=64, res_scale=1.0),
    "edsr": functools.partial(EDSR, blocks=32, channels=256, res_scale=0.1),
    "rcan": functools.partial(RCAN, groups=10, blocks=20, channels=64, reduction=16),
    "rcan-small": functools.partial(RCAN, groups=3, blocks=6, channels=32, reduction=16),
    # Real-ESRGAN's generators (community .pth weights and the ncnn peers load into these)
    "rrdbnet": RRDBNet,  # ESRGAN / Real-ESRGAN x4plus: 64 features, 23 RRDBs
    "srvgg": SRVGG,  # Real-ESRGAN compact (realesr-general-x4v3: 64 x 32; animevideov3: blocks=16)
}

#: Old option names still accepted by :func:`build`, per architecture class (so every preset of the
#: class takes them too): ``{class: {old name: current name}}``.
OPTION_ALIASES: dict[type, dict[str, str]] = {
    Baseline: {"num_blocks": "blocks"},
    Enhanced: {"num_blocks": "blocks"},
    ESPCN: {"features": "channels"},
    FSRCNN: {"d": "channels", "m": "blocks"},
    LumaNet: {"num_convs": "blocks"},
}

#: Discriminators for adversarial training (an HR-sized image to logits: one per sample, or per pixel for ``unet``).
DISCRIMINATORS: dict[str, Callable[..., nn.Module]] = {
    "srgan": SRGANDiscriminator,
    "vgg": VGGStyleDiscriminator,
    "unet": UNetDiscriminator,
}


def names() -> list[str]:
    """Registered architecture names, sorted."""
    return sorted(REGISTRY)


def options(name: str) -> dict[str, Any]:
    """The keyword options of ``name`` other than ``scale``/``in_channels``, with their defaults
    (``inspect.Parameter.empty`` where there is none). For presets, the preset's values are defaults."""
    builder = _builder(name)
    params = inspect.signature(builder).parameters
    return {k: p.default for k, p in params.items() if k not in ("scale", "in_channels", "self")}


def _builder(name: str) -> Callable[..., nn.Module]:
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise SuperresError(f"unknown model {name!r}; known models: {', '.join(names())}") from None


def _architecture(builder: Callable[..., nn.Module]) -> Any:
    """The class behind a builder (a preset's ``functools.partial`` unwrapped)."""
    while isinstance(builder, functools.partial):
        builder = builder.func
    return builder


def contract(name: str) -> ModelContract:
    """The architecture-level contract of ``name`` (scales, channel counts, test options ...; no
    scale or channels yet): its class's ``CONTRACT``."""
    return _architecture(_builder(name)).CONTRACT


def canonical_options(name: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with old option names (:data:`OPTION_ALIASES`) replaced by the current ones.

    Raises :class:`SuperresError` when an option is given under both names.
    """
    aliases = OPTION_ALIASES.get(_architecture(_builder(name)), {})
    out = dict(options)
    for old, new in aliases.items():
        if old in out:
            if new in out:
                raise SuperresError(
                    f"model {name!r}: options {old!r} and {new!r} are the same option ({old!r} is its old name); give only {new!r}"
                )
            out[new] = out.pop(old)
    return out


def build(name: str, *, scale: int, in_channels: int = 3, **options: Any) -> nn.Module:
    """Build the registered model ``name`` for ``scale`` and ``in_channels`` with keyword ``options``.

    Old option names are accepted (:func:`canonical_options`). Raises :class:`SuperresError` for an
    unknown name (listing the known ones), an option the model does not take (naming it and the
    model's options), an option given under its old and its current name, or a value the model
    rejects (scale, channels, upsampler ...), so a typo in a config file is one clear line instead of
    a ``TypeError`` traceback.
    """
    builder = _builder(name)
    options = canonical_options(name, options)
    accepted = inspect.signature(builder).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    if not takes_any:
        for key in options:
            if key not in accepted or key in ("scale", "in_channels"):
                allowed = ", ".join(k for k in accepted if k not in ("scale", "in_channels")) or "none"
                raise SuperresError(f"model {name!r} has no option {key!r}; its options: {allowed}")
    try:
        return builder(scale=scale, in_channels=in_channels, **options)
    except (ValueError, TypeError) as exc:
        raise SuperresError(f"model {name!r}: {exc}") from exc


def fold(model: nn.Module, args: Mapping[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """The inference form of ``model`` (built with ``args``) and the args that rebuild it.

    A model trained with training-only structure (``lumanet`` with ``expand > 0``) has a ``fold`` in
    its contract that returns the equivalent plain model; the contract's ``training_options``
    (``expand``) are then dropped from the args. Any other model is returned as it is.
    """
    described = describe(model)
    if described.fold is None:
        return model, dict(args)
    return described.fold(), {k: v for k, v in args.items() if k not in described.training_options}
