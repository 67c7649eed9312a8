"""The device-resident data path (``superres.training.device_data``): the same batches as the
DataLoader path, LR bit-exact with the numpy reference, uniform crops, path selection, and whole
runs (identical weights on both paths, exact resume after SIGKILL).

References are independent of the code under test: the batches of ``HRFolderDataset`` through
``IterationItems`` (the DataLoader path), numpy slicing plus ``superres.data.patches.dihedral`` and
the numpy ``imresize`` for each crop, counts of crop positions worked out by hand, and an
uninterrupted run for the resumed one. Tiny images and a tiny model on one CPU thread.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from support import assert_same_weights, model_weights, train_until_killed
import torch
from PIL import Image

from superres.config import Config, config_from_dict, load_config, save_config
from superres.data import HRFolderDataset
from superres.data.patches import dihedral
from superres.errors import SuperresError
from superres.resize import imresize
from superres.training import train
from superres.training.batches import IterationItems
from superres.training.device_data import DEVICE_PATH, LOADER_PATH, DeviceBatches, select_device_batches

SIZES = [(24, 28), (30, 26), (16, 16), (19, 40)]  # (16, 16): exactly one crop position at patch 16


pytestmark = pytest.mark.usefixtures("one_thread")


def _write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array if array.shape[2] == 3 else array[:, :, 0]).save(path)


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    """Noise images (every crop differs from every other) of the sizes in SIZES."""
    rng = np.random.default_rng(0)
    for i, (h, w) in enumerate(SIZES):
        _write_png(tmp_path / "train" / f"t{i}.png", rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return tmp_path / "train"


def _dataset(folder: Path, *, patch: int = 16, scale: int = 4, augment: bool = True, seed: int = 3,
             batch: int = 6) -> HRFolderDataset:
    return HRFolderDataset(folder, patch_size=patch, scale=scale, augment=augment, length=batch, seed=seed)


# --------------------------------------------------------------------------- batches
@pytest.mark.parametrize("augment, scale", [(True, 4), (False, 2), (True, 3)])
def test_batches_equal_the_dataloader_path(folder, augment, scale):
    patch = 12 if scale == 3 else 16
    ds = _dataset(folder, patch=patch, scale=scale, augment=augment, batch=6)
    items = IterationItems(ds, batch_size=6, seed=3)
    device = DeviceBatches(ds, seed=3, device="cpu")
    for iteration, slots in ((1, range(6)), (17, range(6)), (123456, [2, 3]), (5, [5])):  # [2, 3]: a DDP shard
        lr, hr = device.batch(iteration, slots)
        want = [items[iteration * 6 + s] for s in slots]
        assert lr.dtype == hr.dtype == torch.float32
        assert hr.shape == (len(slots), 3, patch, patch) and lr.shape == (len(slots), 3, patch // scale, patch // scale)
        assert torch.equal(lr, torch.stack([w[0] for w in want]))
        assert torch.equal(hr, torch.stack([w[1] for w in want]))


def test_crops_and_lr_match_numpy_references(folder):
    """Each crop is the numpy slice of its image under ``dihedral``; its LR is the numpy imresize."""
    ds = _dataset(folder, batch=8)
    device = DeviceBatches(ds, seed=3, device="cpu")
    images = ds.images
    draws = device.draws(9, range(8))
    hr_u8 = device.crops(draws)
    assert hr_u8.dtype == torch.uint8
    lr, hr = device.batch(9, range(8))
    codes = set()
    for n, (k, y, x, code) in enumerate(draws.tolist()):
        codes.add(code)
        crop = np.ascontiguousarray(dihedral(images[k][y : y + 16, x : x + 16], code))
        assert np.array_equal(hr_u8[n].permute(1, 2, 0).numpy(), crop)
        assert torch.equal(hr[n], torch.from_numpy(crop).permute(2, 0, 1).float() / 255)
        ref_lr = imresize(crop, 0.25)  # the numpy uint8 reference, MATLAB rounding per pass
        assert torch.equal(lr[n], torch.from_numpy(ref_lr).permute(2, 0, 1).float() / 255)
    assert len(codes) > 1  # the dihedral transforms are exercised, not only the identity


def test_crops_are_uniform_over_all_positions(folder):
    """Every (image, y, x) is equally likely: counts agree with a uniform law (chi-square), and the
    dihedral codes are uniform too."""
    ds = _dataset(folder, batch=1)
    device = DeviceBatches(ds, seed=11, device="cpu")
    positions = {(k, y, x) for k, (h, w) in enumerate(SIZES) for y in range(h - 15) for x in range(w - 15)}
    # hand count: (9*13) + (15*11) + (1*1) + (4*25) = 117 + 165 + 1 + 100 = 383 positions
    assert len(positions) == 383
    n = 383 * 12
    draws = np.concatenate([device.draws(i, [0]) for i in range(n)])
    counts: dict[tuple[int, int, int], int] = {}
    for k, y, x, _ in draws.tolist():
        counts[(k, y, x)] = counts.get((k, y, x), 0) + 1
    assert set(counts) <= positions
    expected = n / len(positions)
    chi2 = sum((counts.get(p, 0) - expected) ** 2 / expected for p in positions)
    # 382 degrees of freedom: mean 382, sd ~27.6; 382 + 5 sd is far beyond any honest sample
    assert chi2 < 382 + 5 * 27.6, chi2
    per_code = np.bincount(draws[:, 3], minlength=8)
    chi2_codes = ((per_code - n / 8) ** 2 / (n / 8)).sum()
    assert chi2_codes < 7 + 5 * 3.75, per_code  # 7 degrees of freedom


# --------------------------------------------------------------------------- selection
def _data_config(train: list[str], setting: Any, workers: int = 0):
    raw = {"model": {"name": "baseline", "scale": 4},
           "data": {"train": train, "patch_size": 16, "device_resident": setting, "workers": workers}}
    return config_from_dict(raw, source="test").data


def test_selection_follows_the_setting(folder, tmp_path):
    ds = _dataset(folder)
    cpu = torch.device("cpu")
    chosen, note = select_device_batches(_data_config([str(folder)], True), ds, seed=3, device=cpu)
    assert isinstance(chosen, DeviceBatches) and note.startswith(f"data path: {DEVICE_PATH}")
    assert chosen.nbytes == sum(h * w * 3 for h, w in SIZES)
    chosen, note = select_device_batches(_data_config([str(folder)], "auto", workers=2), ds, seed=3, device=cpu)
    assert chosen is None and note.startswith(f"data path: {LOADER_PATH} (data.workers=2")
    chosen, note = select_device_batches(_data_config([str(folder)], False), ds, seed=3, device=cpu)
    assert chosen is None and "device_resident: false" in note

    # 16-bit images: auto falls back, true is an error naming the key
    rng = np.random.default_rng(1)
    import tifffile

    (tmp_path / "t16").mkdir()
    tifffile.imwrite(tmp_path / "t16" / "a.tif", rng.integers(0, 65535, (20, 20, 3), dtype=np.uint16),
                     photometric="rgb")
    ds16 = HRFolderDataset(tmp_path / "t16", patch_size=16, scale=4, length=2, seed=0)
    chosen, note = select_device_batches(_data_config([str(tmp_path / "t16")], "auto"), ds16, seed=0, device=cpu)
    assert chosen is None and "16-bit" in note
    with pytest.raises(SuperresError, match="data.device_resident: true, but the training images are 16-bit"):
        select_device_batches(_data_config([str(tmp_path / "t16")], True), ds16, seed=0, device=cpu)


def test_config_key_values(folder):
    assert _data_config([str(folder)], "auto").device_resident == "auto"
    assert config_from_dict({"data": {"train": ["x"]}}, source="t").data.device_resident == "auto"
    with pytest.raises(SuperresError, match="'data.device_resident' must be one of 'auto' or true/false"):
        _data_config([str(folder)], "yes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_equal_cpu_batches(folder):
    ds = _dataset(folder, batch=6)
    cpu = DeviceBatches(ds, seed=3, device="cpu")
    gpu = DeviceBatches(ds, seed=3, device="cuda")
    for iteration in (1, 2, 99):
        for a, b in zip(cpu.batch(iteration, range(6)), gpu.batch(iteration, range(6))):
            assert b.is_cuda and torch.equal(a, b.cpu())
    chosen, note = select_device_batches(_data_config([str(folder)], "auto"), ds, seed=3, device=torch.device("cuda"))
    assert isinstance(chosen, DeviceBatches), note


# --------------------------------------------------------------------------- whole runs
def _config(train_dir: Path, **data: Any) -> Config:
    raw = {
        "name": "tiny",
        "model": {"name": "baseline", "scale": 2, "options": {"channels": 4, "num_blocks": 1}},
        "data": {"train": [str(train_dir)], "patch_size": 8, "batch_size": 4, **data},
        "optim": {"lr": 2e-3},
        "schedule": {"name": "cosine", "warmup": 2, "min_lr": 1e-5},
        "train": {"iterations": 12, "save_every": 5, "log_every": 3, "val_every": 100, "seed": 0,
                  "device": "cpu", "ema": 0.9},
    }
    return config_from_dict(raw, source="test")



def test_both_paths_train_the_same_weights(folder, tmp_path, capsys):
    device = model_weights(train(_config(folder, device_resident=True), run_dir=tmp_path / "device"))
    assert f"data path: {DEVICE_PATH}" in capsys.readouterr().err  # the choice is logged
    loader = model_weights(train(_config(folder, device_resident=False), run_dir=tmp_path / "loader"))
    assert f"data path: {LOADER_PATH}" in capsys.readouterr().err
    assert_same_weights(device, loader)




@pytest.mark.slow
def test_resume_after_sigkill_on_the_device_path(folder, tmp_path):
    """Killed at iteration 8 (checkpoint at 5), resumed: the weights of an uninterrupted run. The
    resumed half runs on the DataLoader path, which must not matter either."""
    config = _config(folder, device_resident=True)
    full = tmp_path / "full"
    train(config, run_dir=full)

    config_file = tmp_path / "tiny.yaml"
    save_config(config, config_file)
    killed = tmp_path / "killed"
    train_until_killed(config_file, killed, 8, tmp_path)
    assert torch.load(killed / "last.pt", weights_only=True)["iteration"] == 5

    train(load_config(config_file, ["data.device_resident=true"]), run_dir=killed, resume=True)
    assert_same_weights(model_weights(full / "model.safetensors"), model_weights(killed / "model.safetensors"))

    # and once more, killed on the device path and resumed on the DataLoader path
    other = tmp_path / "other"
    train_until_killed(config_file, other, 7, tmp_path)
    train(load_config(config_file, ["data.device_resident=false"]), run_dir=other, resume=True)
    assert_same_weights(model_weights(full / "model.safetensors"), model_weights(other / "model.safetensors"))
    with open(full / "metrics.csv", newline="") as a, open(killed / "metrics.csv", newline="") as b:
        strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]  # noqa: E731
        assert strip(csv.DictReader(a)) == strip(csv.DictReader(b))


# --------------------------------------------------------------------------- benchmarks/gpu_time_to_quality.py
def _script():
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_time_to_quality.py"
    spec = importlib.util.spec_from_file_location("gpu_time_to_quality", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_pack_and_unpack_are_lossless(tmp_path):
    from superres.io import list_images, read_array

    script = _script()
    rng = np.random.default_rng(4)
    src = tmp_path / "src"
    _write_png(src / "a" / "rgb.png", rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    Image.fromarray(rng.integers(0, 256, (18, 17, 3), dtype=np.uint8)).save(src / "b.bmp")
    _write_png(src / "gray.png", rng.integers(0, 256, (16, 16, 1), dtype=np.uint8))  # WebP has no gray: copied
    info = script.pack({"train": src}, tmp_path / "packed", workers=1)
    assert info["files"] == 3
    packed = sorted(p.relative_to(tmp_path / "packed").as_posix() for p in (tmp_path / "packed").rglob("*") if p.is_file())
    assert packed == ["train/a/rgb.webp", "train/b.webp", "train/gray.png"]
    assert script.is_packed(tmp_path / "packed") and not script.is_packed(src)
    out = script.unpack(tmp_path / "packed" / "train", tmp_path / "unpacked", workers=1)
    for original in list_images([src]):
        rel = original.relative_to(src).with_suffix(".png")
        assert np.array_equal(read_array(out / rel), read_array(original)), rel


def test_time_to_threshold_from_metrics(tmp_path):
    script = _script()
    rows = [  # iteration, elapsed_s, loss, val_psnr_y (blank on rows without validation)
        (100, 10.0, 0.05, ""), (200, 20.5, 0.04, "31.2"), (300, 30.0, 0.03, ""),
        (400, 41.0, 0.03, "31.6"), (500, 52.5, 0.02, "31.5"), (600, 63.0, 0.02, "31.85"),
    ]
    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["iteration", "elapsed_s", "loss", "val_psnr_y"])
        writer.writerows(rows)
    summary = script.summarise(path, batch_size=8)
    assert summary["time_to"]["31.5"] == {"seconds": 41.0, "iteration": 400, "psnr_y": 31.6}
    assert summary["time_to"]["31.8"] == {"seconds": 63.0, "iteration": 600, "psnr_y": 31.85}
    assert summary["iterations"] == 600 and summary["patches_per_s_with_validation"] == round(600 * 8 / 63.0, 1)
    assert summary["set5_best"] == 31.85 and summary["set5_last"] == 31.85 and summary["validations"] == 4
    assert script.time_to([{"val_psnr_y": "30", "elapsed_s": "1", "iteration": "1"}], 31.5) is None


@pytest.mark.slow
def test_run_end_to_end_at_tiny_scale(tmp_path, capsys):
    """The whole device-call script on the CPU at tiny scale: two packed folders (their train/ merged,
    a third one missing), throughput for both data paths, training with Set5 and Set14 scored at each
    validation, final `superres eval` scores, and the files it brings back."""
    import json

    script = _script()
    rng = np.random.default_rng(7)
    src = tmp_path / "src"
    for i in range(3):
        _write_png(src / "A" / f"a{i}.png", rng.integers(0, 256, (28, 30, 3), dtype=np.uint8))
    _write_png(src / "B" / "b0.png", rng.integers(0, 256, (26, 26, 3), dtype=np.uint8))
    for name, count in (("Set5", 2), ("Set14", 3)):
        for i in range(count):
            _write_png(src / name / "HR" / f"{name}_{i}.png", rng.integers(0, 256, (24, 20, 3), dtype=np.uint8))
    script.pack({"train/A": src / "A", "Set5/HR": src / "Set5" / "HR", "Set14/HR": src / "Set14" / "HR"},
                tmp_path / "p1", workers=1)
    script.pack({"train/B": src / "B"}, tmp_path / "p2", workers=1)

    out, work = tmp_path / "out", tmp_path / "work"
    status = script.main([
        "run", "--packed", str(tmp_path / "p1"), str(tmp_path / "p2"), str(tmp_path / "missing"),
        "--minutes", "5", "--out", str(out), "--work", str(work), "--workers", "1", "--device", "cpu",
        "--throughput-paths", "device,loader0", "--throughput-iters", "2", "--throughput-warmup", "1",
        "model.options={blocks: 1, channels: 4}", "data.patch_size=16", "data.batch_size=2",
        "train.iterations=6", "train.val_every=3", "train.log_every=3", "train.amp=none", "train.ema=null",
    ])
    assert status == 0
    printed = capsys.readouterr().out
    assert f"--packed {tmp_path / 'missing'}: not here, skipped" in printed
    assert "validations: training time, Set5 / Set14 PSNR-Y" in printed
    merged = sorted(p.relative_to(work / "train").as_posix() for p in (work / "train").rglob("*.png"))
    assert merged == ["A/a0.png", "A/a1.png", "A/a2.png", "B/b0.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted([
        "model.safetensors", "metrics.csv", "config.yaml", "curves.png", "train.log", "summary.json",
        "throughput.json", "throughput.md"])
    summary = json.loads((out / "summary.json").read_text())
    assert [r["path"] for r in summary["throughput"]] == ["device", "loader0"]
    table = summary["validations_table"]
    assert [r["iteration"] for r in table] == [3, 6] and summary["iterations"] == 6
    assert all(r["Set5"] is not None and r["Set14"] is not None and r["Set5"] != r["Set14"] for r in table)
    # the last validation is the exported model, and `superres eval` agrees with it on both sets
    assert summary["final_scores"]["Set5"]["psnr_y"] == pytest.approx(table[-1]["Set5"], abs=1e-4)
    assert summary["final_scores"]["Set14"]["psnr_y"] == pytest.approx(table[-1]["Set14"], abs=1e-4)


# --------------------------------------------------------------------------- benchmarks/train_throughput.py
@pytest.mark.slow
def test_throughput_benchmark_rows_and_table(folder, tmp_path, monkeypatch):
    """One row per (model, autocast, data path), ratios within the table, the JSON and Markdown files;
    a bf16 row on a CPU without native bf16 says the trainer ran it without autocast."""
    import importlib.util
    import json

    from superres.training import trainer as trainer_module

    monkeypatch.setattr(trainer_module, "cpu_has_native_bf16", lambda: False)
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "train_throughput.py"
    spec = importlib.util.spec_from_file_location("train_throughput", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    out_json, out_md = tmp_path / "t.json", tmp_path / "t.md"
    assert module.main(["--data", str(folder), "--models", "espcn", "--paths", "device,loader0", "--amp", "none,bf16",
                        "--step", "plain,graph", "--batch", "2", "--patch", "8", "--scale", "2", "--iters", "2",
                        "--warmup", "1", "--device", "cpu", "--threads", "1", "--json", str(out_json),
                        "--markdown", str(out_md)]) == 0
    results = json.loads(out_json.read_text())
    rows = results["training"]
    assert [(r["model"], r["path"]) for r in rows] == [("espcn", "device"), ("espcn", "loader0")] * 4
    assert [r["step"] for r in rows] == ["plain", "plain", "graph", "graph"] * 2
    assert [r["amp"] for r in rows] == ["none"] * 8  # bf16 ignored: no native bf16 here
    assert all(r["patches_per_s"] > 0 and r["iterations_timed"] == 2 for r in rows)
    assert [d["path"] for d in results["data_only"]] == ["device", "loader0"]
    table = out_md.read_text().splitlines()
    assert table[0].startswith("| model | params | data path | autocast | step | patches/s | ms/iteration | vs loader0 |")
    loader0 = [line.split(" | ") for line in table if line.startswith("| espcn |") and "| loader0 |" in line]
    assert len(loader0) == 4 and all(cells[7] == "1.00x" for cells in loader0)  # the "vs loader0" column
    first = [line.split(" | ") for line in table if line.startswith("| espcn |")][:2]
    assert all(cells[8] == "1.00x" for cells in first)  # the "vs none, plain" column of the first setting
    with pytest.raises(SystemExit):
        module.main(["--amp", "fp8", "--device", "cpu"])
    with pytest.raises(SystemExit):
        module.main(["--step", "graphs", "--device", "cpu"])


@pytest.mark.slow
def test_throughput_host_profile_names_the_ops(folder, tmp_path):
    """--host-profile appends, per row, a profiler table of the host's ops (here the CPU's convs)."""
    import importlib.util

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "train_throughput.py"
    spec = importlib.util.spec_from_file_location("train_throughput", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    report = tmp_path / "host.txt"
    assert module.main(["--data", str(folder), "--models", "espcn", "--paths", "device,loader0", "--amp", "none",
                        "--batch", "2", "--patch", "8", "--scale", "2", "--iters", "2", "--warmup", "1",
                        "--profile-iters", "2", "--device", "cpu", "--threads", "1", "--host-profile", str(report)]) == 0
    text = report.read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == ["## espcn, data path device, autocast none, plain step: 2 iterations, ops by self CPU time",
                        "## espcn, data path loader0, autocast none, plain step: 2 iterations, ops by self CPU time"]
    assert text.count("convolution_backward") == 2 and "Self CPU" in text
