"""The README's Python code runs as written, on a photo the test puts where the README expects it."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent


def python_blocks() -> list[str]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.S | re.M)


def test_the_readme_has_python_code() -> None:
    assert python_blocks(), "README.md has no ```python block"


@pytest.mark.parametrize("index", range(len(python_blocks())))
def test_readme_python_block_runs(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    from skimage.data import astronaut

    photo = astronaut()[100:202, 150:255]  # 105 px wide: not a multiple of 4, so modcrop matters
    Image.fromarray(photo).save(tmp_path / "photo.png")
    monkeypatch.chdir(tmp_path)
    exec(compile(python_blocks()[index], f"README.md python block {index + 1}", "exec"), {"__name__": "__readme__"})
    out = capsys.readouterr().out
    if "photo_x4.png" in python_blocks()[index]:
        written = np.asarray(Image.open(tmp_path / "photo_x4.png"))
        assert written.shape == (photo.shape[0] * 4, photo.shape[1] * 4, 3) and written.dtype == np.uint8
    if "metrics.score" in python_blocks()[index]:
        scores = eval(out.strip().splitlines()[-1])  # the printed dict
        assert set(scores) == {"psnr_y", "ssim_y"} and 20 < scores["psnr_y"] < 60
