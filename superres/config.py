"""Typed training configs: strict YAML loading, ``key=value`` overrides, YAML round trip.

A config is a tree of dataclasses (:class:`Config` at the root). It is read from YAML, overridden
from the command line, validated, and written back to the run folder as ``config.yaml``, which
loads again to an equal object. Strictness is the point: a typo such as ``train.iteratons`` would
otherwise silently train with the default, so every unknown key anywhere is an error that names the
full dotted key, the file, and the closest valid key; a value of the wrong type names the key, the
expected type and the value.

Some sub-trees are free-form on purpose, because their keys belong to other modules that validate
them: ``model.options`` (keyword arguments of the architecture's builder, checked by
:func:`superres.models.build`), ``discriminator.options`` (checked when the discriminator is built)
and the ``loss`` list (terms checked by :func:`superres.losses.build_loss` and
:func:`superres.losses.split_adversarial`). The optional ``discriminator`` section is validated as
strictly as the rest when present.

Paths (``data.train``, ``data.val``, ``out``) are kept as written; relative paths are resolved
against the current working directory when training starts (:func:`resolve_paths`), so the presets
in ``configs/`` are meant to be run from the repository root.

One YAML gotcha is handled here: PyYAML reads ``1e-3`` (no dot) as a *string*; fields typed
``float`` accept such strings when they spell a number.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, Union

import yaml

from superres.errors import SuperresError
from superres.io import atomic_write
from superres.scales import SCALES



# --------------------------------------------------------------------------- schema
@dataclass
class ModelConfig:
    """Which architecture to build: ``superres.models.build(name, scale=, in_channels=, **options)``.

    ``init_from`` names a model file (``.safetensors``, e.g. ``runs/srresnet_x4/model.safetensors``)
    whose weights start the run instead of a random init: a warm start, as SRGAN/ESRGAN start their
    GAN training from a PSNR-oriented model. It must hold the same architecture (keys and shapes
    match exactly). It is read only when a run starts, not on ``--resume``.
    """

    name: str = "enhanced"
    scale: int = 4
    in_channels: int = 3
    options: dict[str, Any] = field(default_factory=dict)
    init_from: Union[str, None] = None


@dataclass
class DegradationStageConfig:
    """One stage of the ``realworld`` degradation (:mod:`superres.degrade`); null means the preset's value.

    Probabilities are in ``[0, 1]``; ``[lo, hi]`` pairs are ranges drawn uniformly. ``kernel_prob``
    weighs the six kernels iso, aniso, generalized_iso, generalized_aniso, plateau_iso,
    plateau_aniso; ``resize_prob`` weighs up, down, keep. ``noise_range`` is the Gaussian sigma in
    8-bit levels; ``jpeg_range`` the JPEG quality.
    """

    blur_prob: Union[float, None] = None
    kernel_size: Union[list[int], None] = None
    kernel_prob: Union[list[float], None] = None
    sinc_prob: Union[float, None] = None
    blur_sigma: Union[list[float], None] = None
    betag_range: Union[list[float], None] = None
    betap_range: Union[list[float], None] = None
    resize_prob: Union[list[float], None] = None
    resize_range: Union[list[float], None] = None
    noise_prob: Union[float, None] = None
    gaussian_noise_prob: Union[float, None] = None
    noise_range: Union[list[float], None] = None
    poisson_scale_range: Union[list[float], None] = None
    gray_noise_prob: Union[float, None] = None
    jpeg_prob: Union[float, None] = None
    jpeg_range: Union[list[int], None] = None


@dataclass
class DegradationConfig:
    """How the training LR is made from the HR crop (``data.degradation``).

    ``kind: bicubic`` (the default): MATLAB-exact bicubic, the batches are unchanged. ``kind:
    realworld``: Real-ESRGAN's second-order degradation (:mod:`superres.degrade`, docs/DEGRADATIONS.md)
    with the parameters of ``preset`` (``realesrgan``: the published settings; ``light``, ``medium``,
    ``heavy``), each of which ``first``, ``second``, ``final_sinc_prob`` and ``sharpen_target``
    (unsharp mask on the HR target, which the LR is then made from) may override.
    """

    kind: Literal["bicubic", "realworld"] = "bicubic"
    preset: Literal["realesrgan", "light", "medium", "heavy"] = "realesrgan"
    first: DegradationStageConfig = field(default_factory=DegradationStageConfig)
    second: DegradationStageConfig = field(default_factory=DegradationStageConfig)
    final_sinc_prob: Union[float, None] = None
    sharpen_target: Union[bool, None] = None


@dataclass
class DataConfig:
    """Training and validation data.

    ``train`` lists image files/folders (random HR crops, LR made on the fly with MATLAB bicubic)
    or names exactly one ``.npz`` patch file (``superres data patches``). ``train_pairs`` instead names
    one folder of your own pairs, ``HR/`` + ``LR/`` (or ``LR_bicubic/X{s}/``), LR made any way
    (:mod:`superres.data.pairs`: aligned crops); give ``train`` or ``train_pairs``, not both. ``val`` is a benchmark
    folder (``HR/`` + ``LR_bicubic/X{s}/``) scored under the paper protocol during training; it picks
    ``best.safetensors``. ``val_extra`` lists more benchmark folders scored at the same validations
    and logged beside it as ``val_<folder name>_psnr_y`` / ``_ssim_y`` (e.g. Set14 next to Set5).

    ``degradation`` says how the LR is made from each HR crop (:class:`DegradationConfig`).

    ``device_resident`` keeps 8-bit training images on the training device and cuts each batch there
    (:mod:`superres.training.device_data`; the same batches as the DataLoader path): ``auto`` does so
    on CUDA when the images take under half the free GPU memory, ``true`` on any device, ``false``
    never (``workers`` applies to the DataLoader path only).
    """

    train: list[str] = field(default_factory=list)
    train_pairs: Union[str, None] = None
    patch_size: int = 128
    batch_size: int = 16
    augment: bool = True
    in_memory: bool = True
    val: Union[str, None] = None
    val_extra: list[str] = field(default_factory=list)
    val_limit: Union[int, None] = None
    workers: int = 0
    device_resident: Union[Literal["auto"], bool] = "auto"
    degradation: DegradationConfig = field(default_factory=DegradationConfig)


@dataclass
class OptimConfig:
    """Adam or AdamW. ``fused: auto`` uses the fused kernel on CUDA and the default elsewhere."""

    name: Literal["adam", "adamw"] = "adam"
    lr: float = 1.0e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    fused: Union[Literal["auto"], bool] = "auto"


@dataclass
class ScheduleConfig:
    """Learning rate as a pure function of the iteration: linear warm-up, then cosine/multistep/constant.

    ``cosine`` decays from ``optim.lr`` to ``min_lr`` at the last iteration; ``multistep``
    multiplies by ``gamma`` at each iteration in ``milestones``.
    """

    name: Literal["cosine", "multistep", "constant"] = "cosine"
    warmup: int = 0
    min_lr: float = 1.0e-6
    milestones: list[int] = field(default_factory=list)
    gamma: float = 0.5


@dataclass
class TrainConfig:
    """The loop: length, precision, devices, and how often to validate, save and log.

    ``max_seconds`` stops by wall time (accumulated across resumes), then validates, saves and
    exports like a normal end; the schedule then follows whichever of iterations and time runs out
    first (:mod:`superres.training.optim`). ``ema`` is the EMA decay (e.g. 0.999) or null. ``amp``:
    ``bf16``/``fp16`` autocast on CUDA; on the CPU ``bf16`` applies where the CPU computes bf16
    natively (AVX512-BF16 or AMX, about 2x faster convolutions) and is ignored with a note elsewhere.
    ``channels_last``: ``auto`` uses it on CUDA and with CPU bf16, ``true`` everywhere.
    ``deterministic`` asks torch for deterministic kernels; on the CPU a seeded run is
    bit-reproducible either way. ``compile`` is
    false, true (``torch.compile`` in its default mode) or a ``torch.compile`` mode name;
    ``reduce-overhead`` and ``max-autotune`` replay the forward and backward passes from CUDA graphs
    on CUDA, which takes the per-kernel launch cost off the host. ``cuda_graph: true`` goes further:
    after a few eager steps it captures the whole step (the device-resident batch, forward, loss,
    backward, clipping, optimizer) in one CUDA graph and replays it (:mod:`superres.training.graph_step`);
    on the CPU the same step function runs without a graph. It excludes ``compile``, fp16 autocast,
    a discriminator and multi-process training. ``val_perceptual`` adds the ``effdist`` perceptual
    distance to every validation (``val_effdist`` in metrics.csv; needs ``superres[perceptual]``).
    """

    iterations: int = 10000
    max_seconds: Union[float, None] = None
    grad_clip: Union[float, None] = None
    ema: Union[float, None] = None
    amp: Literal["none", "bf16", "fp16"] = "none"
    channels_last: Union[Literal["auto"], bool] = "auto"
    compile: Union[bool, Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]] = False
    cuda_graph: bool = False
    seed: int = 0
    device: str = "auto"
    val_every: int = 500
    val_perceptual: bool = False
    save_every: int = 500
    log_every: int = 20
    deterministic: bool = True


@dataclass
class DiscriminatorConfig:
    """Adversarial training: the discriminator and its own optimizer (see :mod:`superres.training.gan`).

    ``name``/``options``: ``superres.models.DISCRIMINATORS[name](in_channels=model.in_channels, **options)``
    (``srgan`` needs ``options.input_size`` = ``data.patch_size``; ``vgg`` takes any size).
    ``optim``/``schedule``: null means the generator's ``optim``/``schedule`` (ESRGAN trains both
    networks with the same settings). The generator's adversarial term applies from iteration
    ``start_iteration + 1`` on, and the discriminator is trained from the first iteration, so that
    it is already a useful critic when the term is switched on. ``updates_per_step`` discriminator
    steps follow each generator step, on the same batch.
    """

    name: str = "vgg"
    options: dict[str, Any] = field(default_factory=dict)
    optim: Union[OptimConfig, None] = None
    schedule: Union[ScheduleConfig, None] = None
    start_iteration: int = 0
    updates_per_step: int = 1


@dataclass
class Config:
    """A whole training run. ``out`` is the run folder (default ``runs/<name>``); ``name`` defaults to
    the config file's stem (``run`` for configs made in Python). ``discriminator`` (null by default)
    turns on adversarial training; it goes with one ``{type: adversarial}`` term in ``loss``."""

    name: str = "run"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: list[dict[str, Any]] = field(default_factory=lambda: [{"type": "l1", "weight": 1.0}])
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    discriminator: Union[DiscriminatorConfig, None] = None
    out: Union[str, None] = None


# --------------------------------------------------------------------------- public API
def load_config(path: str | Path, overrides: Sequence[str] = ()) -> Config:
    """Read a YAML config, apply ``key=value`` overrides, validate, and return a :class:`Config`.

    A missing ``name`` defaults to the file's stem (``configs/enhanced_x4.yaml`` -> ``enhanced_x4``).
    """
    path = Path(path)
    if not path.is_file():
        raise SuperresError(f"{path}: config file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SuperresError(f"{path}: not a UTF-8 text file (invalid byte at offset {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise SuperresError(f"{path}: cannot read the config ({exc.strerror or exc})") from None
    try:
        raw = _load_yaml(text)
    except yaml.YAMLError as exc:
        raise SuperresError(f"{path}: not valid YAML ({_one_line(exc)})") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SuperresError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides, source=str(path))
    raw.setdefault("name", path.stem)
    return config_from_dict(raw, source=str(path))


def config_from_dict(raw: Mapping[str, Any], *, source: str = "config") -> Config:
    """Validate a plain mapping (as read from YAML) into a :class:`Config`; errors name ``source``."""
    if not isinstance(raw, Mapping):
        raise SuperresError(f"{source}: the top level must be a mapping of keys, got {type(raw).__name__}")
    config = _build(Config, raw, "", source)
    _check_values(config, source)
    return config


def config_to_dict(config: Config) -> dict[str, Any]:
    """The config as plain dicts/lists/scalars (what ``config.yaml`` and model metadata hold)."""
    return dataclasses.asdict(config)


def dump_config(config: Config) -> str:
    """The config as YAML text, in schema order; :func:`config_from_dict` of it gives ``config`` back."""
    return yaml.safe_dump(config_to_dict(config), sort_keys=False, default_flow_style=False, width=100)


def save_config(config: Config, path: str | Path) -> None:
    """Write ``dump_config(config)`` to ``path`` atomically."""
    with atomic_write(Path(path)) as tmp:
        Path(tmp).write_text(dump_config(config), encoding="utf-8")


def resolve_paths(config: Config, base: str | Path | None = None) -> Config:
    """A copy with ``data.train``, ``data.val``, ``data.val_extra``, ``model.init_from`` and ``out`` made absolute against
    ``base`` (default: cwd).

    The run folder's ``config.yaml`` stores resolved paths so that it can be reused from anywhere.
    """
    base_path = Path.cwd() if base is None else Path(base)

    def absolute(p: str) -> str:
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base_path / q).resolve())

    data = dataclasses.replace(
        config.data,
        train=[absolute(p) for p in config.data.train],
        train_pairs=None if config.data.train_pairs is None else absolute(config.data.train_pairs),
        val=None if config.data.val is None else absolute(config.data.val),
        val_extra=[absolute(p) for p in config.data.val_extra],
    )
    model = dataclasses.replace(
        config.model, init_from=None if config.model.init_from is None else absolute(config.model.init_from)
    )
    out = None if config.out is None else absolute(config.out)
    return dataclasses.replace(config, model=model, data=data, out=out)


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into its key path and the value parsed as a YAML scalar or list."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise SuperresError(f"override {text!r}: expected key=value (e.g. train.iterations=2000)")
    parts = key.split(".")
    if any(not p for p in parts):
        raise SuperresError(f"override {text!r}: empty part in key {key!r}")
    try:
        parsed = _load_yaml(value) if value.strip() else None
    except yaml.YAMLError as exc:
        raise SuperresError(f"override {text!r}: value is not valid YAML ({_one_line(exc)})") from None
    return parts, parsed


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[str], *, source: str = "config") -> dict[str, Any]:
    """Return a deep copy of ``raw`` with each ``key=value`` override applied, in order.

    Keys are checked against the schema here (not only against ``raw``): an override may set a key
    that the file leaves at its default, but an unknown key is an error naming the override. Inside
    the free-form ``model.options`` any key may be set; inside ``loss`` an item is addressed by its
    index (``loss.0.weight=0.5``).
    """
    result = _deep_copy(raw)
    for text in overrides:
        parts, value = parse_override(text)
        _check_override_path(parts, text, source)
        node: Any = result
        for depth, part in enumerate(parts[:-1]):
            nxt = _get_child(node, part, text, parts[: depth + 1])
            if nxt is None:
                nxt = _default_at(parts[: depth + 1])
                _set_child(node, part, nxt, text, parts[: depth + 1])
            node = nxt
        _set_child(node, parts[-1], value, text, parts)
    return result


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing anchors' aliases (``*name``) when it meets them.

    Aliases are what a "billion laughs" document is made of: a kilobyte of nested aliases expands
    to gigabytes once anything walks the tree (the overrides copy it). No config needs them, so
    they are refused while composing, before any node is shared or expanded.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(
                f"YAML aliases ('*{event.anchor}') are not allowed in superres configs "
                f"(line {event.start_mark.line + 1}); write the values out"
            )
        return super().compose_node(parent, index)


def _load_yaml(text: str) -> Any:
    """``yaml.safe_load`` without aliases (see :class:`_NoAliasLoader`)."""
    return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass


# --------------------------------------------------------------------------- building and type checks
def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is Any:
        return "any value"
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return f"a list of {_type_name(item)}"
    if origin is dict:
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(tp, str(tp))


_FLOAT_TEXT = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _convert(tp: Any, value: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (lists/dicts copied, ints widened)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return _deep_copy(value)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping):
            raise _type_error(key, tp, value, source)
        return _build(tp, value, key, source)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        section = _optional_dataclass(tp)
        if section is not None and isinstance(value, Mapping):
            return _build(section, value, key, source)  # keep the section's own key errors
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key, source)
            except SuperresError:
                continue
        raise _type_error(key, tp, value, source)
    if origin is Literal:
        for choice in typing.get_args(tp):
            if value == choice and type(value) is type(choice):
                return value
        raise _type_error(key, tp, value, source)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str) and item_tp is str:
            value = [value]  # `train: some/folder` means a list of one
        if not isinstance(value, list):
            raise _type_error(key, tp, value, source)
        return [_convert(item_tp, v, f"{key}.{i}", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise _type_error(key, tp, value, source)
        return _deep_copy(dict(value))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(key, tp, value, source)
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(key, tp, value, source)
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_TEXT.match(value.strip()):
            return float(value)
        raise _type_error(key, tp, value, source)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _type_error(key, tp, value, source)
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # a schema bug, not a user error


def _optional_dataclass(tp: Any) -> Any:
    """The dataclass ``X`` of an ``X | None`` annotation (an optional config section), else None."""
    if typing.get_origin(tp) not in (Union, types.UnionType):
        return None
    sections = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
    return sections[0] if len(sections) == 1 else None


def _type_error(key: str, tp: Any, value: Any, source: str) -> SuperresError:
    return SuperresError(
        f"{source}: '{key}' must be {_type_name(tp)}, got {value!r} ({type(value).__name__})"
    )


def _build(cls: type, raw: Mapping[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if not isinstance(key, str) or key not in hints:
            full = f"{prefix}.{key}" if prefix else str(key)
            raise SuperresError(f"{source}: unknown key '{full}'{_suggest(prefix, str(key), names)}")
    kwargs = {}
    for name in names:
        if name in raw:
            full = f"{prefix}.{name}" if prefix else name
            kwargs[name] = _convert(hints[name], raw[name], full, source)
    return cls(**kwargs)


def _suggest(prefix: str, key: str, siblings: Sequence[str]) -> str:
    """' (did you mean 'a.b'?)' for the closest sibling key, else the list of valid keys there.

    Only the last part is compared: on full dotted keys the shared prefix would make anything look close.
    """
    full = [f"{prefix}.{n}" if prefix else n for n in siblings]
    close = difflib.get_close_matches(key, list(siblings), n=1, cutoff=0.6)
    if close:
        return f" (did you mean '{full[list(siblings).index(close[0])]}'?)"
    return " (valid keys: " + ", ".join(full) + ")"


def _check_override_path(parts: list[str], text: str, source: str) -> None:
    """Walk the schema along ``parts``; free-form sub-trees (dict/Any/list items) accept anything."""
    tp: Any = Config
    for i, part in enumerate(parts):
        so_far = ".".join(parts[: i + 1])
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            if part not in hints:
                suggestion = _suggest(".".join(parts[:i]), part, [f.name for f in dataclasses.fields(tp)])
                raise SuperresError(f"{source}: override {text!r}: unknown key '{so_far}'{suggestion}")
            tp = hints[part]
        elif typing.get_origin(tp) is list:
            if not part.isdigit():
                raise SuperresError(f"{source}: override {text!r}: '{'.'.join(parts[:i])}' is a list; "
                                    f"address an item by index (e.g. {'.'.join(parts[:i])}.0)")
            (tp,) = typing.get_args(tp)
        elif _optional_dataclass(tp) is not None:
            tp = _optional_dataclass(tp)  # an optional section (discriminator): walk into its schema
            hints = typing.get_type_hints(tp)
            if part not in hints:
                suggestion = _suggest(".".join(parts[:i]), part, [f.name for f in dataclasses.fields(tp)])
                raise SuperresError(f"{source}: override {text!r}: unknown key '{so_far}'{suggestion}")
            tp = hints[part]
        else:
            return  # inside a free-form mapping: the owning module validates its keys


def _default_at(parts: list[str]) -> Any:
    """The schema default at a key path as plain data (so ``loss.0.weight=2`` edits the default loss)."""
    node: Any = config_to_dict(Config())
    for part in parts:
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return {}
    return _deep_copy(node) if isinstance(node, (dict, list)) else {}


def _get_child(node: Any, part: str, text: str, path: list[str]) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list):
        index = int(part)
        if index >= len(node):
            raise SuperresError(f"override {text!r}: '{'.'.join(path)}' is past the end of a list of {len(node)}")
        return node[index]
    raise SuperresError(f"override {text!r}: '{'.'.join(path[:-1])}' is not a mapping")


def _set_child(node: Any, part: str, value: Any, text: str, path: list[str]) -> None:
    if isinstance(node, dict):
        node[part] = value
    elif isinstance(node, list):
        index = int(part)
        if index > len(node):
            raise SuperresError(f"override {text!r}: '{'.'.join(path)}' is past the end of a list of {len(node)}")
        if index == len(node):
            node.append(value)
        else:
            node[index] = value
    else:
        raise SuperresError(f"override {text!r}: '{'.'.join(path[:-1])}' is not a mapping")


def _deep_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_deep_copy(v) for v in value]
    return value


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


# --------------------------------------------------------------------------- value checks
def val_set_name(path: str) -> str:
    """The name a validation folder goes by in logs, metrics columns and metadata: its folder name,
    with anything but letters, digits, ``-`` and ``_`` made ``_`` (``../data/Set14`` -> ``Set14``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", Path(path).name) or "val"


def _check_values(c: Config, source: str) -> None:
    """Range and consistency checks that types alone cannot express; each names its key."""

    def bad(key: str, problem: str) -> None:
        raise SuperresError(f"{source}: '{key}' {problem}")

    if not c.name:
        bad("name", "must not be empty")
    if c.model.scale not in SCALES:
        bad("model.scale", f"must be one of {', '.join(map(str, SCALES))}, got {c.model.scale}")
    if c.model.in_channels < 1:
        bad("model.in_channels", f"must be >= 1, got {c.model.in_channels}")
    if not c.data.train and c.data.train_pairs is None:
        bad("data.train", "is missing: list the training image folders/files or one .npz patch file "
            "(or set data.train_pairs: a folder of your own HR/ + LR/ pairs)")
    if c.data.train and c.data.train_pairs is not None:
        bad("data.train_pairs", "and data.train are both set: train on one of them (set the other to [] / null)")
    if c.data.patch_size < c.model.scale or c.data.patch_size % c.model.scale:
        bad("data.patch_size", f"must be a positive multiple of model.scale={c.model.scale}, got {c.data.patch_size}")
    if c.data.batch_size < 1:
        bad("data.batch_size", f"must be >= 1, got {c.data.batch_size}")
    if c.data.val_limit is not None and c.data.val_limit < 1:
        bad("data.val_limit", f"must be >= 1 or null, got {c.data.val_limit}")
    if c.data.val_extra and c.data.val is None:
        bad("data.val_extra", "needs data.val (the set that picks best.safetensors)")
    names = [val_set_name(p) for p in ([c.data.val] if c.data.val else []) + list(c.data.val_extra)]
    if len(set(names)) != len(names):
        bad("data.val_extra", f"needs folders with distinct names (they name the metrics columns), got {names}")
    if c.data.workers < 0:
        bad("data.workers", f"must be >= 0, got {c.data.workers}")
    if not c.loss:
        bad("loss", "must list at least one term, e.g. [{type: l1, weight: 1.0}]")
    for i, term in enumerate(c.loss):
        if not isinstance(term.get("type"), str):
            bad(f"loss.{i}", f"needs a 'type' (l1, mse, charbonnier, perceptual, ...), got {term!r}")
    _check_optim(c.optim, "optim", bad)
    _check_schedule(c.schedule, "schedule", bad)
    t = c.train
    if t.iterations < 1:
        bad("train.iterations", f"must be >= 1, got {t.iterations}")
    if t.max_seconds is not None and not (t.max_seconds > 0 and math.isfinite(t.max_seconds)):
        bad("train.max_seconds", f"must be > 0 (a finite number) or null, got {t.max_seconds}")
    if t.grad_clip is not None and not (t.grad_clip > 0 and math.isfinite(t.grad_clip)):
        bad("train.grad_clip", f"must be > 0 (a finite number) or null, got {t.grad_clip}")
    if t.ema is not None and not 0 < t.ema < 1:
        bad("train.ema", f"must be a decay in (0, 1) (e.g. 0.999) or null, got {t.ema}")
    for key in ("val_every", "save_every", "log_every"):
        if getattr(t, key) < 1:
            bad(f"train.{key}", f"must be >= 1, got {getattr(t, key)}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", t.device):
        bad("train.device", f"must be auto, cpu, cuda, cuda:N or mps, got {t.device!r}")
    _check_gan(c, bad)
    check_degradation(c.data.degradation, "data.degradation", bad)
    if c.data.degradation.kind == "realworld":
        if c.model.in_channels not in (1, 3):
            bad("data.degradation.kind", f"realworld needs model.in_channels 1 or 3 (JPEG), got {c.model.in_channels}")
        if t.cuda_graph:
            bad("data.degradation.kind", "realworld does not work with train.cuda_graph: true (the JPEG runs on the host)")


def _check_optim(o: OptimConfig, prefix: str, bad: Any) -> None:
    """Ranges of an optimizer section (``optim`` or ``discriminator.optim``)."""
    if not (o.lr > 0 and math.isfinite(o.lr)):
        bad(f"{prefix}.lr", f"must be > 0 (a finite number), got {o.lr}")
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        bad(f"{prefix}.betas", f"must be two numbers in [0, 1), got {o.betas}")
    if not (o.weight_decay >= 0 and math.isfinite(o.weight_decay)):
        bad(f"{prefix}.weight_decay", f"must be >= 0 (a finite number), got {o.weight_decay}")


def _check_schedule(s: ScheduleConfig, prefix: str, bad: Any) -> None:
    """Ranges of a schedule section (``schedule`` or ``discriminator.schedule``)."""
    if s.warmup < 0:
        bad(f"{prefix}.warmup", f"must be >= 0, got {s.warmup}")
    if not (s.min_lr >= 0 and math.isfinite(s.min_lr)):
        bad(f"{prefix}.min_lr", f"must be >= 0 (a finite number), got {s.min_lr}")
    if s.milestones != sorted(s.milestones) or any(m < 1 for m in s.milestones):
        bad(f"{prefix}.milestones", f"must be increasing iterations >= 1, got {s.milestones}")
    if not (s.gamma > 0 and math.isfinite(s.gamma)):
        bad(f"{prefix}.gamma", f"must be > 0 (a finite number), got {s.gamma}")


def _check_gan(c: Config, bad: Any) -> None:
    """The adversarial loss term and the ``discriminator`` section come together or not at all.

    Catching this at load time means that a config with a term but no discriminator fails before any
    data is read, and so does one with a discriminator that no loss term would ever use.
    """
    adversarial = [i for i, term in enumerate(c.loss) if term.get("type") == "adversarial"]
    d = c.discriminator
    if adversarial and d is None:
        bad(f"loss.{adversarial[0]}", "is an adversarial term, which needs a discriminator: "
            "set the 'discriminator' section (e.g. discriminator: {name: vgg})")
    if d is None:
        return
    if not adversarial:
        bad("discriminator", "is set but no loss term uses it: add {type: adversarial, weight: 5.0e-3, kind: ragan} "
            "to 'loss', or set discriminator: null")
    if not d.name:
        bad("discriminator.name", "must not be empty")
    if d.start_iteration < 0:
        bad("discriminator.start_iteration", f"must be >= 0, got {d.start_iteration}")
    if d.updates_per_step < 1:
        bad("discriminator.updates_per_step", f"must be >= 1, got {d.updates_per_step}")
    if d.optim is not None:
        _check_optim(d.optim, "discriminator.optim", bad)
    if d.schedule is not None:
        _check_schedule(d.schedule, "discriminator.schedule", bad)


# --------------------------------------------------------------------------- degradation values
#: Largest blur kernel side (Real-ESRGAN's 21); kernels are built on this grid.
MAX_KERNEL_SIZE = 21

#: ``[lo, hi]`` bounds of each range field of a degradation stage: (smallest lo, largest hi).
_DEGRADATION_RANGES = {
    "blur_sigma": (0.0, 10.0),
    "betag_range": (0.0, 8.0),
    "betap_range": (0.0, 8.0),
    "resize_range": (0.0, 4.0),
    "noise_range": (0.0, 255.0),
    "poisson_scale_range": (0.0, 10.0),
}


def check_degradation(d: DegradationConfig, prefix: str, bad: Any) -> None:
    """Ranges of a ``data.degradation`` section; each error names its key. Unset (null) values are the
    preset's, which are valid by construction (``tests/test_degrade.py`` checks them here too)."""
    if d.final_sinc_prob is not None and not 0 <= d.final_sinc_prob <= 1:
        bad(f"{prefix}.final_sinc_prob", f"must be a probability in [0, 1], got {d.final_sinc_prob}")
    for stage_name in ("first", "second"):
        stage = getattr(d, stage_name)
        for f in dataclasses.fields(stage):
            value = getattr(stage, f.name)
            if value is None:
                continue
            key = f"{prefix}.{stage_name}.{f.name}"
            if f.name.endswith("_prob") and not isinstance(value, list):
                if not 0 <= value <= 1:
                    bad(key, f"must be a probability in [0, 1], got {value}")
            elif f.name in ("kernel_prob", "resize_prob"):
                n = 6 if f.name == "kernel_prob" else 3
                if len(value) != n or any(v < 0 for v in value) or abs(sum(value) - 1) > 1e-6:
                    bad(key, f"must be {n} probabilities >= 0 that sum to 1, got {value}")
            elif f.name == "kernel_size":
                if (len(value) != 2 or any(v % 2 == 0 for v in value) or not 3 <= value[0] <= value[1] <= MAX_KERNEL_SIZE):
                    bad(key, f"must be [min, max], odd sizes with 3 <= min <= max <= {MAX_KERNEL_SIZE}, got {value}")
            elif f.name == "jpeg_range":
                if len(value) != 2 or not 1 <= value[0] <= value[1] <= 100:
                    bad(key, f"must be [min, max] JPEG qualities with 1 <= min <= max <= 100, got {value}")
            else:
                lo_bound, hi_bound = _DEGRADATION_RANGES[f.name]
                if len(value) != 2 or not lo_bound <= value[0] <= value[1] <= hi_bound:
                    bad(key, f"must be [min, max] with {lo_bound:g} <= min <= max <= {hi_bound:g}, got {value}")
                if f.name in ("blur_sigma", "betag_range", "betap_range") and not value[0] > 0:
                    bad(key, f"must have min > 0, got {value}")
                if f.name == "resize_range" and not 0 < value[0] <= 1 <= value[1]:
                    bad(key, f"must be [min, max] with 0 < min <= 1 <= max (down- and up-scaling), got {value}")


def degradation_config(raw: Mapping[str, Any], source: str) -> DegradationConfig:
    """A :class:`DegradationConfig` from plain data (the ``data degrade`` command), type- and range-checked
    like ``data.degradation`` in a config file; errors name ``data.degradation.<key>`` and ``source``."""

    def bad(key: str, problem: str) -> None:
        raise SuperresError(f"{source}: '{key}' {problem}")

    d = _build(DegradationConfig, raw, "data.degradation", source)
    check_degradation(d, "data.degradation", bad)
    return d
