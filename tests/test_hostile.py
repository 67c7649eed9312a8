"""Hostile and unlucky input at the command line (issue 20): one clear line on stderr and exit 2
(exit 1 and a report hint for a bug), no traceback, nothing half-written, bounded memory.

Each test drives ``superres.cli.main`` as a user would (a subprocess where a real second process or
a fresh memory measurement is needed). Images and models are tiny, so the whole file runs in
seconds on one CPU thread (the slow host-memory test is marked ``slow``).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest

from superres.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- the catch-all
def test_unexpected_exception_is_one_line_exit_1(capsys, monkeypatch):
    import superres.modelfile as modelfile

    def broken():
        raise ZeroDivisionError("a bug deep inside")

    monkeypatch.setattr(modelfile, "list_models", broken)
    code, _, err = _run(capsys, ["models"])
    assert code == 1
    line = _one_error_line(err)
    assert "ZeroDivisionError: a bug deep inside" in line and "report" in line and "--debug" in line


@pytest.mark.parametrize("how", ["option-before", "option-after", "env"])
def test_debug_shows_the_traceback(capsys, monkeypatch, how):
    import superres.modelfile as modelfile

    def broken():
        raise ZeroDivisionError("a bug deep inside")

    monkeypatch.setattr(modelfile, "list_models", broken)
    argv = {"option-before": ["--debug", "models"], "option-after": ["models", "--debug"], "env": ["models"]}[how]
    if how == "env":
        monkeypatch.setenv("SUPERRES_DEBUG", "1")
    code, _, err = _run(capsys, argv)
    assert code == 1
    assert "Traceback (most recent call last)" in err and "in broken" in err
    assert "ZeroDivisionError: a bug deep inside" in err.strip().splitlines()[-1]


# --------------------------------------------------------------------------- configs
def _billion_laughs(path: Path) -> None:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    lines.append("model: {options: {x: *a9}}")
    path.write_text("\n".join(lines) + "\n")


def test_yaml_alias_bomb_is_refused_before_expansion(tmp_path, capsys):
    import time

    config = tmp_path / "laughs.yaml"
    _billion_laughs(config)
    assert config.stat().st_size < 1024
    started = time.monotonic()
    code, _, err = _run(capsys, ["train", "--config", str(config), "train.iterations=2"])
    assert time.monotonic() - started < 5
    assert code == 2
    line = _one_error_line(err)
    assert str(config) in line and "aliases" in line


def test_config_that_is_not_utf8(tmp_path, capsys):
    config = tmp_path / "latin1.yaml"
    config.write_bytes("name: caf\xe9\n".encode("latin-1"))
    code, _, err = _run(capsys, ["train", "--config", str(config)])
    assert code == 2
    line = _one_error_line(err)
    assert str(config) in line and "UTF-8" in line


@pytest.mark.parametrize(
    "override, key",
    [
        ("optim.weight_decay=.nan", "optim.weight_decay"),
        ("optim.lr=.inf", "optim.lr"),
        ("optim.lr=.nan", "optim.lr"),
        ("schedule.min_lr=.nan", "schedule.min_lr"),
        ("schedule.gamma=.inf", "schedule.gamma"),
        ("train.grad_clip=.inf", "train.grad_clip"),
        ("train.max_seconds=.nan", "train.max_seconds"),
    ],
)
def test_non_finite_numbers_in_the_config_are_refused(tmp_path, capsys, override, key):
    config = tmp_path / "c.yaml"
    config.write_text(f"data: {{train: [{tmp_path}], patch_size: 8}}\nmodel: {{name: baseline, scale: 2}}\n")
    code, _, err = _run(capsys, ["train", "--config", str(config), override])
    assert code == 2
    line = _one_error_line(err)
    assert f"'{key}'" in line and "finite" in line
