"""benchmarks/serve_load.py, small: a real `superres serve` (uvicorn on 127.0.0.1) under a few
concurrent clients, with 429s forced by a queue of depth 1, bad uploads mixed in; every answer must
be correct or a clean 429, and no temporary file may be left behind."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the [serve] extra (fastapi) is not installed")
pytest.importorskip("httpx", reason="httpx is not installed")

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "serve_load.py"
pytestmark = pytest.mark.slow


def test_serve_load_small(tmp_path):
    spec = importlib.util.spec_from_file_location("serve_load", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "load.json"
    rc = module.main([
        "--requests", "16", "--concurrency", "5", "--workers", "1", "--queue-depth", "1", "--sizes", "24x32,40x40",
        "--bad-every", "4", "--tile", "32", "--max-rss-mb", "1500", "--time-limit", "240", "--out", str(out),
    ])
    report = json.loads(out.read_text())
    assert rc == 0, report
    answers = report["answers"]
    assert answers["200 result equal to upscale()"] == 12
    assert sum(v for k, v in answers.items() if "(expected)" in k) == 4
    assert answers.get("429 queue full (clean)", 0) > 0  # 5 clients against 1 worker + 1 waiting
    assert not report["problems"] and not report["temp_files_left"] and report["health_after"]["status"] == "ok"
