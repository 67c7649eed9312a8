"""`superres data stats`: figures checked against plain numpy on the concatenated pixels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from superres.cli import main
from superres.data.stats import compute_stats, format_stats, plot_stats
from superres.io import Image, write_image

RNG = np.random.default_rng(7)


def _make_set(root: Path) -> dict[str, list[np.ndarray]]:
    """A small mixed folder; returns each group's images as float64 arrays in [0, 1] (the truth)."""
    groups: dict[str, list[np.ndarray]] = {"1": [], "3": []}

    def add(relative: str, samples: np.ndarray, alpha: np.ndarray | None = None) -> None:
        maxval = 255 if samples.dtype == np.uint8 else 65535
        write_image(root / relative, Image.from_array(samples, alpha))
        groups[str(samples.shape[2])].append(samples.astype(np.float64) / maxval)

    add("a.png", RNG.integers(0, 256, (12, 20, 3), dtype=np.uint8))
    add("b.bmp", RNG.integers(0, 256, (30, 9, 3), dtype=np.uint8))
    add("deep/c.png", RNG.integers(0, 65536, (7, 11, 3), dtype=np.uint16))  # mixes 16-bit into the RGB group
    add("deep/d.png", RNG.integers(0, 256, (5, 5, 3), dtype=np.uint8), RNG.integers(0, 256, (5, 5, 1), dtype=np.uint8))
    add("g1.png", RNG.integers(0, 256, (16, 16, 1), dtype=np.uint8))
    add("g2.tif", RNG.integers(0, 65536, (8, 24, 1), dtype=np.uint16))
    extreme = np.zeros((4, 6, 3), dtype=np.uint8)
    extreme[:, 3:] = 255  # exact 0 and 1 land in the first and the last bin
    add("e.png", extreme)
    (root / "readme.txt").write_text("not an image")
    return groups


def test_compute_stats_matches_numpy(tmp_path: Path) -> None:
    truth = _make_set(tmp_path)
    stats = compute_stats([tmp_path])
    assert json.loads(json.dumps(stats)) == stats  # JSON-serialisable as is

    assert stats["count"] == 7
    assert stats["channels"] == {"1": 2, "3": 5}
    assert stats["bit_depths"] == {"16": 2, "8": 5}
    assert stats["alpha"] == 1
    assert stats["formats"] == {".bmp": 1, ".png": 5, ".tif": 1}
    sizes = {Path(f).name: tuple(s) for f, s in zip(stats["files"], stats["sizes"])}
    assert sizes == {"a.png": (20, 12), "b.bmp": (9, 30), "c.png": (11, 7), "d.png": (5, 5),
                     "e.png": (6, 4), "g1.png": (16, 16), "g2.tif": (24, 8)}
    widths = [20, 9, 11, 5, 6, 16, 24]
    heights = [12, 30, 7, 5, 4, 16, 8]
    assert stats["width"] == {"min": 5, "max": 24, "mean": pytest.approx(np.mean(widths), abs=1e-12)}
    assert stats["height"] == {"min": 4, "max": 30, "mean": pytest.approx(np.mean(heights), abs=1e-12)}
    assert stats["pixels"] == sum(w * h for w, h in zip(widths, heights))

    for key, images in truth.items():
        channels = int(key)
        values = np.concatenate([im.reshape(-1, channels) for im in images])
        group = stats["per_channel"][key]
        assert group["images"] == len(images) and group["pixels"] == values.shape[0]
        np.testing.assert_allclose(group["mean"], values.mean(axis=0), rtol=0, atol=1e-12)
        np.testing.assert_allclose(group["std"], values.std(axis=0), rtol=0, atol=1e-12)
        for c in range(channels):
            expected, _ = np.histogram(values[:, c], bins=64, range=(0.0, 1.0))
            assert group["histogram"][c] == expected.tolist()
    assert stats["histogram_bins"] == 64

    text = format_stats(stats)
    assert "images      7" in text and "3-channel images: 5" in text
    gray_mean = np.concatenate([g.ravel() for g in truth["1"]]).mean()
    assert f"gray      {gray_mean:>9.4f}" in text


def test_chunked_folding_gives_the_same_figures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Large images are folded in row blocks to bound memory; blocks of a few rows change nothing."""
    import superres.data.stats as stats_module

    _make_set(tmp_path)
    whole = compute_stats([tmp_path])
    monkeypatch.setattr(stats_module, "_BLOCK_VALUES", 40)  # 1-2 rows per block here
    assert compute_stats([tmp_path]) == whole


def test_stats_of_a_constant_image_are_exact(tmp_path: Path) -> None:
    """A hand-computed case: 16-bit value 1000 everywhere -> mean 1000/65535, std exactly 0."""
    write_image(tmp_path / "c.png", Image.from_array(np.full((3, 5, 1), 1000, dtype=np.uint16)))
    group = compute_stats([tmp_path / "c.png"])["per_channel"]["1"]
    assert group["mean"] == [1000 / 65535] and group["std"] == [0.0]
    assert group["histogram"][0][1000 * 64 // 65535] == 15 and sum(group["histogram"][0]) == 15


def test_cli_json_and_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    _make_set(data)
    plot = tmp_path / "plots" / "stats.png"
    assert main(["data", "stats", str(data), "--json", "--plot", str(plot)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == compute_stats([data])
    with PILImage.open(plot) as im:
        assert im.format == "PNG" and im.width > 300 and im.height > 200
    assert sorted(p.name for p in plot.parent.iterdir()) == ["stats.png"]  # no temporary left behind

    assert main(["data", "stats", str(data)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("images      7") and "R " in out and "gray" in out


def test_cli_shows_a_bar_over_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import superres.progress

    for i in range(3):
        write_image(tmp_path / f"{i}.png", Image(np.full((4, 5, 3), 0.5, dtype=np.float32)))
    monkeypatch.setattr(superres.progress, "DELAY_S", 0)
    assert main(["data", "stats", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["count"] == 3
    assert "stats: 100%" in captured.err and "3/3" in captured.err


def test_cli_empty_folder_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["data", "stats", str(empty)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"superres: error: {empty}: no images")


def test_plot_rejects_unknown_format(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", Image(np.zeros((2, 2, 3), dtype=np.float32)))
    from superres.errors import SuperresError

    with pytest.raises(SuperresError, match=r"plot\.xyz: unsupported plot format"):
        plot_stats(compute_stats([tmp_path]), tmp_path / "plot.xyz")


def test_set5_through_shared_data(shared_data: Path) -> None:
    stats = compute_stats([shared_data / "Set5" / "HR"])
    assert stats["count"] == 5
    # SOURCES.md: W x H of baby, bird, butterfly, head, woman
    assert [Path(f).stem for f in stats["files"]] == ["baby", "bird", "butterfly", "head", "woman"]
    assert stats["sizes"] == [[512, 512], [288, 288], [256, 256], [280, 280], [228, 344]]
    assert stats["width"]["min"] == 228 and stats["width"]["max"] == 512
    assert stats["height"]["min"] == 256 and stats["height"]["max"] == 512
    assert stats["channels"] == {"3": 5} and stats["bit_depths"] == {"8": 5} and stats["alpha"] == 0
    means = np.asarray(stats["per_channel"]["3"]["mean"])
    assert np.all((means > 0.2) & (means < 0.8))
