"""Typed configs: strict keys with suggestions, type errors, overrides, YAML round trip, presets.

Expected messages and values are written out by hand from the schema in superres/config.py (key
names, defaults) and from what the YAML text in each test says.
"""

from __future__ import annotations

import re

from pathlib import Path

import pytest
import yaml

from superres.config import (
    Config,
    apply_overrides,
    config_from_dict,
    dump_config,
    load_config,
    parse_override,
    resolve_paths,
    save_config,
)
from superres.errors import SuperresError

REPO = Path(__file__).resolve().parent.parent
PRESETS = sorted((REPO / "configs").glob("*.yaml"))

MINIMAL = """\
model: {name: baseline, scale: 2, options: {channels: 8}}
data: {train: [some/folder], patch_size: 16}
train: {iterations: 10}
"""


def _write(tmp_path: Path, text: str, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- strict keys
@pytest.mark.parametrize(
    "text, key, suggestion",
    [
        (MINIMAL + "modle: {}\n", "modle", "model"),
        (MINIMAL.replace("iterations: 10", "iteratons: 10"), "train.iteratons", "train.iterations"),
        (MINIMAL.replace("patch_size: 16", "patch_size: 16, batchsize: 4"), "data.batchsize", "data.batch_size"),
        (MINIMAL + "schedule: {name: cosine, warmpu: 5}\n", "schedule.warmpu", "schedule.warmup"),
    ],
)
def test_unknown_key_names_dotted_key_file_and_suggestion(tmp_path, text, key, suggestion):
    path = _write(tmp_path, text)
    with pytest.raises(SuperresError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message
    assert f"unknown key '{key}'" in message
    assert f"did you mean '{suggestion}'" in message


def test_unknown_key_without_close_match_lists_valid_keys(tmp_path):
    path = _write(tmp_path, MINIMAL.replace("iterations: 10", "zzzzzz: 10"))
    with pytest.raises(SuperresError, match=r"unknown key 'train\.zzzzzz' \(valid keys: train\.iterations, "):
        load_config(path)


def test_free_form_sections_accept_any_key(tmp_path):
    # model.options belongs to the architecture, loss terms to superres.losses: not checked here
    path = _write(tmp_path, MINIMAL + "loss: [{type: perceptual, weight: 0.01, layers: {conv5_4: 1.0}}]\n")
    config = load_config(path)
    assert config.model.options == {"channels": 8}
    assert config.loss == [{"type": "perceptual", "weight": 0.01, "layers": {"conv5_4": 1.0}}]


# --------------------------------------------------------------------------- types and values
@pytest.mark.parametrize(
    "replace, message",
    [
        (("iterations: 10", "iterations: ten"), "'train.iterations' must be an integer, got 'ten' (str)"),
        (("iterations: 10", "iterations: 10.5"), "'train.iterations' must be an integer, got 10.5 (float)"),
        (("iterations: 10", "iterations: true"), "'train.iterations' must be an integer, got True (bool)"),
        (("iterations: 10", "iterations: 10, amp: fp32"), "'train.amp' must be one of 'none', 'bf16', 'fp16', got 'fp32'"),
        (("iterations: 10", "iterations: 10, compile: 1"), "'train.compile' must be true/false or one of 'default', 'reduce-overhead', 'max-autotune', "
         "'max-autotune-no-cudagraphs', got 1 (int)"),
        (("iterations: 10", "iterations: 10, ema: fast"), "'train.ema' must be a number or null, got 'fast' (str)"),
        (("[some/folder]", "[a, 3]"), "'data.train.1' must be a string, got 3 (int)"),
        (("options: {channels: 8}", "options: [8]"), "'model.options' must be a mapping, got [8] (list)"),
    ],
)
def test_type_errors_name_key_type_and_value(tmp_path, replace, message):
    text = MINIMAL.replace(*replace)
    with pytest.raises(SuperresError) as err:
        load_config(_write(tmp_path, text))
    assert message in str(err.value)


def test_float_fields_accept_ints_and_yaml_exponent_strings(tmp_path):
    # PyYAML reads "1e-3" (no dot) as a string; float fields take it as the number it spells
    config = load_config(_write(tmp_path, MINIMAL + "optim: {lr: 1e-3, weight_decay: 0}\n"))
    assert config.optim.lr == 0.001 and isinstance(config.optim.lr, float)
    assert config.optim.weight_decay == 0.0 and isinstance(config.optim.weight_decay, float)


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.patch_size=15", "'data.patch_size' must be a positive multiple of model.scale=2, got 15"),
        ("data.train=[]", "'data.train' is missing"),
        ("optim.betas=[0.9]", "'optim.betas' must be two numbers in [0, 1)"),
        ("train.ema=1.5", "'train.ema' must be a decay in (0, 1)"),
        ("model.scale=5", "'model.scale' must be one of 2, 3, 4, 8, got 5"),
        ("schedule.milestones=[20, 10]", "'schedule.milestones' must be increasing"),
        ("train.device=gpu", "'train.device' must be auto, cpu, cuda, cuda:N or mps"),
        ("loss=[{weight: 1}]", "'loss.0' needs a 'type'"),
    ],
)
def test_value_checks(tmp_path, override, message):
    with pytest.raises(SuperresError) as err:
        load_config(_write(tmp_path, MINIMAL), [override])
    assert message in str(err.value)


def test_defaults_and_name_from_file_stem(tmp_path):
    config = load_config(_write(tmp_path, MINIMAL, name="my_run.yaml"))
    assert config.name == "my_run"
    assert config.loss == [{"type": "l1", "weight": 1.0}]
    assert config.optim.betas == [0.9, 0.999]
    assert config.train.ema is None and config.train.max_seconds is None
    assert config.data.val is None and config.out is None


# --------------------------------------------------------------------------- overrides
@pytest.mark.parametrize(
    "text, parts, value",
    [
        ("train.iterations=2000", ["train", "iterations"], 2000),
        ("optim.betas=[0.8, 0.99]", ["optim", "betas"], [0.8, 0.99]),
        ("data.val=null", ["data", "val"], None),
        ("data.val=", ["data", "val"], None),
        ("model.name=enhanced", ["model", "name"], "enhanced"),
        ("train.amp=bf16", ["train", "amp"], "bf16"),
        ("train.compile=true", ["train", "compile"], True),
        ("train.compile=reduce-overhead", ["train", "compile"], "reduce-overhead"),
        ("optim.lr=2.5e-4", ["optim", "lr"], 2.5e-4),
        ("name=a=b", ["name"], "a=b"),  # only the first '=' splits
    ],
)
def test_parse_override(text, parts, value):
    assert parse_override(text) == (parts, value)


@pytest.mark.parametrize("text", ["train.iterations", "=5", "train..iterations=5"])
def test_parse_override_rejects_malformed(text):
    with pytest.raises(SuperresError, match="override"):
        parse_override(text)


def test_overrides_apply_before_validation(tmp_path):
    path = _write(tmp_path, MINIMAL)
    config = load_config(
        path,
        [
            "train.iterations=77",
            "train.max_seconds=60",  # not in the file: set on top of the default
            "optim.lr=1e-4",  # string "1e-4" from YAML, accepted by the float field
            "model.options.num_blocks=2",  # free-form section
            "loss.0.weight=0.5",  # list item of the default loss
            "data.train=[x, y]",
        ],
    )
    assert config.train.iterations == 77
    assert config.train.max_seconds == 60.0
    assert config.optim.lr == 1e-4
    assert config.model.options == {"channels": 8, "num_blocks": 2}
    assert config.loss == [{"type": "l1", "weight": 0.5}]
    assert config.data.train == ["x", "y"]


def test_override_errors_are_as_strict_as_the_file(tmp_path):
    path = _write(tmp_path, MINIMAL)
    with pytest.raises(SuperresError) as err:
        load_config(path, ["train.iteratons=5"])
    assert "override 'train.iteratons=5'" in str(err.value)
    assert "did you mean 'train.iterations'" in str(err.value)
    with pytest.raises(SuperresError, match="'train.iterations' must be an integer, got 'many'"):
        load_config(path, ["train.iterations=many"])
    with pytest.raises(SuperresError, match="'loss' is a list; address an item by index"):
        load_config(path, ["loss.weight=2"])
    with pytest.raises(SuperresError, match="past the end of a list of 1"):
        load_config(path, ["loss.3.weight=2"])


def test_apply_overrides_does_not_modify_its_input():
    raw = {"train": {"iterations": 5}}
    out = apply_overrides(raw, ["train.iterations=6"])
    assert raw == {"train": {"iterations": 5}} and out == {"train": {"iterations": 6}}


# --------------------------------------------------------------------------- round trip and paths
def test_round_trip_through_yaml(tmp_path):
    config = load_config(
        _write(tmp_path, MINIMAL),
        ["train.ema=0.999", "optim.fused=false", "schedule.name=multistep", "schedule.milestones=[3, 6]", "out=runs/x"],
    )
    assert config_from_dict(yaml.safe_load(dump_config(config))) == config
    save_config(config, tmp_path / "saved" / "config.yaml")
    again = load_config(tmp_path / "saved" / "config.yaml")
    assert again == config
    # the saved file is plain YAML in schema order
    assert list(yaml.safe_load((tmp_path / "saved" / "config.yaml").read_text())) == [
        "name", "model", "data", "loss", "optim", "schedule", "train", "discriminator", "out"
    ]


def test_resolve_paths_against_base(tmp_path):
    config = load_config(_write(tmp_path, MINIMAL), ["data.val=bench/Set5", f"out={tmp_path / 'abs'}"])
    resolved = resolve_paths(config, base=tmp_path / "cwd")
    assert resolved.data.train == [str(tmp_path / "cwd" / "some" / "folder")]
    assert resolved.data.val == str(tmp_path / "cwd" / "bench" / "Set5")
    assert resolved.out == str(tmp_path / "abs")
    assert config.data.train == ["some/folder"]  # the original is untouched


def test_missing_or_broken_file(tmp_path):
    with pytest.raises(SuperresError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(SuperresError, match="not valid YAML"):
        load_config(_write(tmp_path, "model: {name: [\n"))
    with pytest.raises(SuperresError, match="top level must be a mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))


# --------------------------------------------------------------------------- presets
def test_presets_exist():
    assert {p.name for p in PRESETS} >= {"baseline_x4.yaml", "enhanced_x4.yaml", "enhanced_x4_perceptual.yaml"}


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_presets_load_round_trip_and_build(preset):
    from superres.models import build

    config = load_config(preset)
    assert isinstance(config, Config)
    assert config_from_dict(yaml.safe_load(dump_config(config))) == config
    named = re.search(r"_x(\d)", preset.stem)
    assert named, f"{preset.name}: preset names say their scale (<model>_x<scale>...)"
    assert config.model.scale == int(named.group(1))
    assert config.data.patch_size % config.model.scale == 0
    model = build(config.model.name, scale=config.model.scale, in_channels=config.model.in_channels, **config.model.options)
    assert model.scale == config.model.scale
    for path in config.data.train + [config.data.val, *config.data.val_extra]:
        assert path.startswith("../shared/data/"), "presets name the shared data relative to the repository root"


def test_enhanced_preset_is_the_30_minute_psnr_run():
    config = load_config(REPO / "configs" / "enhanced_x4.yaml")
    assert config.train.max_seconds == 1800
    assert config.loss == [{"type": "l1", "weight": 1.0}]
    assert config.data.val == "../shared/data/Set5"


def test_perceptual_preset_adds_a_small_perceptual_term():
    config = load_config(REPO / "configs" / "enhanced_x4_perceptual.yaml")
    types = {term["type"]: term for term in config.loss}
    assert types["l1"]["weight"] == 1.0
    assert types["perceptual"]["weight"] == 0.01
    assert "weights_path" in types["perceptual"]
