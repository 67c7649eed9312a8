"""Real-world degradations (superres.degrade): kernels, JPEG, determinism, presets and their
validation, both training data paths, exact resume, and `superres data degrade` end to end."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from superres.config import DegradationConfig, check_degradation, config_from_dict, load_config
from superres.degrade import PRESETS, Degrader, blur_kernels, jpeg, resolve, sinc_kernels
from superres.errors import SuperresError

pytestmark = pytest.mark.usefixtures("one_thread")


def _image(rng: np.random.Generator, h: int, w: int, c: int = 3) -> np.ndarray:
    """Smooth structure plus texture, uint8: something every degradation visibly changes."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    out = np.stack([np.sin(0.3 * x + c_ * 1.3) * np.cos(0.2 * y) for c_ in range(c)], axis=-1)
    out = 0.5 + 0.35 * out + 0.15 * rng.random((h, w, c))
    return np.clip(np.round(out * 255), 0, 255).astype(np.uint8)


def _hr_batch(b: int = 6, size: int = 48, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return torch.from_numpy(np.stack([_image(rng, size, size) for _ in range(b)])).permute(0, 3, 1, 2).float() / 255


# --------------------------------------------------------------------------- kernels
def _all_kernels(n: int = 64) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    kind = torch.arange(n) % 6
    size = 7 + 2 * torch.randint(0, 8, (n,), generator=g)
    sx, sy = 0.2 + 2.8 * torch.rand(n, generator=g), 0.2 + 2.8 * torch.rand(n, generator=g)
    theta, beta = (2 * torch.rand(n, generator=g) - 1) * math.pi, 0.5 + 3.5 * torch.rand(n, generator=g)
    return blur_kernels(kind, size, sx, sy, theta, beta), kind, size


def test_every_kernel_sums_to_one_and_is_zero_outside_its_size():
    kernels, _, size = _all_kernels()
    omega = torch.linspace(math.pi / 5, math.pi, 64)
    sincs = sinc_kernels(omega, size)
    for k in (kernels, sincs):
        assert torch.allclose(k.sum(dim=(1, 2)), torch.ones(64, dtype=torch.float64), atol=1e-12)
        assert torch.isfinite(k).all()
    for i in range(64):
        r = int(size[i]) // 2
        inner = torch.zeros(21, 21, dtype=torch.bool)
        inner[10 - r : 11 + r, 10 - r : 11 + r] = True
        assert (kernels[i][~inner] == 0).all() and (sincs[i][~inner] == 0).all()


def test_isotropic_kernels_are_symmetric_and_all_are_point_symmetric():
    kernels, kind, _ = _all_kernels()
    for i in range(64):
        k = kernels[i]
        assert torch.allclose(k, k.flip(0, 1), atol=1e-15)  # correlation = convolution
        if int(kind[i]) % 2 == 0:  # iso, generalized_iso, plateau_iso
            for t in (k.flip(0), k.flip(1), k.T):
                assert torch.allclose(k, t, atol=1e-15)
    aniso = blur_kernels(torch.tensor([1]), torch.tensor([21]), torch.tensor([3.0]), torch.tensor([0.5]),
                         torch.tensor([0.0]), torch.tensor([1.0]))[0]
    assert not torch.allclose(aniso, aniso.T)  # wide along x, narrow along y
    assert aniso[10, 10 + 4] > 10 * aniso[10 + 4, 10]


def test_gaussian_kernel_matches_its_formula():
    k = blur_kernels(torch.tensor([0]), torch.tensor([21]), torch.tensor([1.5]), torch.tensor([9.0]),
                     torch.tensor([1.0]), torch.tensor([3.0]))[0]  # iso: sigma_y, theta, beta unused
    ax = np.arange(-10, 11)
    ref = np.exp(-(ax[:, None] ** 2 + ax[None, :] ** 2) / (2 * 1.5**2))
    np.testing.assert_allclose(k.numpy(), ref / ref.sum(), atol=1e-15)


def test_sinc_kernel_passes_below_its_cutoff_and_stops_above():
    omega = math.pi / 2
    k = sinc_kernels(torch.tensor([omega]), torch.tensor([21]))[0].numpy()
    response = np.abs(np.fft.fft2(k, s=(256, 256)))
    f = np.fft.fftfreq(256) * 2 * math.pi  # radians per pixel
    radius = np.hypot(f[:, None], f[None, :])
    assert response[radius < 0.6 * omega].min() > 0.85
    assert response[(radius > 1.4 * omega) & (radius < math.pi)].max() < 0.12
    # a lower cut-off blurs more: less energy passes at mid frequencies
    low = sinc_kernels(torch.tensor([math.pi / 4]), torch.tensor([21]))[0].numpy()
    mid = (radius > 0.45 * math.pi) & (radius < 0.55 * math.pi)
    assert np.abs(np.fft.fft2(low, s=(256, 256)))[mid].mean() < 0.1 < response[mid].mean()


def test_filter_batch_is_a_reflect_padded_convolution_per_sample():
    from superres.degrade import filter_batch

    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.random((2, 3, 12, 15))).float()
    k = torch.from_numpy(rng.random((2, 5, 5)))
    k = (k + k.flip(1, 2)) / 2  # point-symmetric, as every kernel built here
    got = filter_batch(x, k).numpy()
    for b in range(2):
        padded = np.pad(x[b].numpy().astype(np.float64), ((0, 0), (2, 2), (2, 2)), mode="reflect")
        ref = sum(k[b, i, j].item() * padded[:, i : i + 12, j : j + 15] for i in range(5) for j in range(5))
        np.testing.assert_allclose(got[b], ref, atol=1e-5)


# --------------------------------------------------------------------------- JPEG
@pytest.mark.parametrize("channels", [3, 1])
def test_jpeg_is_pillows_codec(channels):
    a = _image(np.random.default_rng(1), 40, 56, channels)
    buf = io.BytesIO()
    Image.fromarray(a if channels == 3 else a[..., 0]).save(buf, format="JPEG", quality=37)
    expected = np.asarray(Image.open(io.BytesIO(buf.getvalue()))).reshape(a.shape)
    x = torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255
    out = jpeg(torch.cat([x, x]), [37, None])
    got = (out[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    np.testing.assert_array_equal(got, expected)
    assert torch.equal(out[1], x[0])  # None: unchanged


# --------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_same_seed_same_batch_and_different_seed_differs(preset):
    hr = _hr_batch()
    cfg = DegradationConfig(kind="realworld", preset=preset)
    d = Degrader(cfg, scale=2, seed=5)
    lr, target = d(hr, 7, range(6))
    assert lr.shape == (6, 3, 24, 24) and target.shape == hr.shape
    assert lr.min() >= 0 and lr.max() <= 1 and torch.equal(lr, (lr * 255).round() / 255)
    again, target2 = Degrader(cfg, scale=2, seed=5)(hr, 7, range(6))
    assert torch.equal(lr, again) and torch.equal(target, target2)
    assert not torch.equal(lr, Degrader(cfg, scale=2, seed=6)(hr, 7, range(6))[0])
    assert not torch.equal(lr, d(hr, 8, range(6))[0])
    # a sample depends on (seed, iteration, slot), not on the rest of the batch (DDP shards)
    part, _ = d(hr[2:4], 7, [2, 3])
    assert torch.allclose(part, lr[2:4], atol=1.5 / 255)
    # the bicubic LR would be far closer to the HR's downscale: the degradation did something
    assert (lr - torch.nn.functional.avg_pool2d(hr, 2)).abs().mean() > 1e-3


def test_sharpened_target_only_with_sharpen_target():
    hr = _hr_batch(2)
    _, plain = Degrader(DegradationConfig(kind="realworld", preset="medium"), scale=4, seed=0)(hr, 1, [0, 1])
    assert plain is hr
    _, sharp = Degrader(DegradationConfig(kind="realworld", preset="realesrgan"), scale=4, seed=0)(hr, 1, [0, 1])
    assert sharp.shape == hr.shape and 0 <= sharp.min() and sharp.max() <= 1
    assert (sharp - hr).abs().max() > 0.01  # edges enhanced
    assert sharp.std() > hr.std()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_degradation_on_cuda_is_seeded_and_close_to_the_cpu_law():
    hr = _hr_batch(8, 64)
    cfg = DegradationConfig(kind="realworld", preset="realesrgan")
    d = Degrader(cfg, scale=4, seed=2)
    a, ta = d(hr.cuda(), 3, range(8))
    b, tb = d(hr.cuda(), 3, range(8))
    assert a.is_cuda and torch.equal(a, b) and torch.equal(ta, tb)
    cpu, tcpu = d(hr, 3, range(8))
    assert torch.allclose(ta.cpu(), tcpu, atol=1e-5)  # the sharpened target: no randomness
    # the same kernels, sizes and qualities; only the noise draws differ between the devices
    assert a.shape == cpu.shape and 0 <= a.min() and a.max() <= 1


# --------------------------------------------------------------------------- presets and validation
def test_realesrgan_preset_is_the_published_settings():
    p = resolve(DegradationConfig(kind="realworld", preset="realesrgan"))
    a, b = p.first, p.second
    assert (a.resize_prob, a.resize_range, a.gaussian_noise_prob, a.noise_range) == ([0.2, 0.7, 0.1], [0.15, 1.5], 0.5, [1.0, 30.0])
    assert (a.poisson_scale_range, a.gray_noise_prob, a.jpeg_range) == ([0.05, 3.0], 0.4, [30, 95])
    assert (a.kernel_size, a.kernel_prob, a.sinc_prob, a.blur_sigma) == ([7, 21], [0.45, 0.25, 0.12, 0.03, 0.12, 0.03], 0.1, [0.2, 3.0])
    assert (a.betag_range, a.betap_range) == ([0.5, 4.0], [1.0, 2.0])
    assert (b.blur_prob, b.resize_prob, b.resize_range, b.noise_range) == (0.8, [0.3, 0.4, 0.3], [0.3, 1.2], [1.0, 25.0])
    assert (b.poisson_scale_range, b.jpeg_range, b.blur_sigma, b.sinc_prob) == ([0.05, 2.5], [30, 95], [0.2, 1.5], 0.1)
    assert p.final_sinc_prob == 0.8 and p.sharpen_target is True


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_passes_the_range_checks(preset):
    def bad(key, problem):
        raise AssertionError(f"{preset}: {key} {problem}")

    check_degradation(resolve(DegradationConfig(kind="realworld", preset=preset)), "data.degradation", bad)


def _train_raw(**degradation) -> dict:
    return {"data": {"train": ["x"], "degradation": {"kind": "realworld", **degradation}}, "model": {"scale": 2}}


@pytest.mark.parametrize(
    "degradation, message",
    [
        ({"first": {"noise_range": [1, 300]}}, "'data.degradation.first.noise_range' must be [min, max] with 0 <= min <= max <= 255"),
        ({"second": {"blur_prob": 1.5}}, "'data.degradation.second.blur_prob' must be a probability"),
        ({"first": {"kernel_size": [8, 21]}}, "'data.degradation.first.kernel_size' must be [min, max], odd"),
        ({"first": {"kernel_prob": [0.5, 0.5, 0.5, 0, 0, 0]}}, "'data.degradation.first.kernel_prob' must be 6 probabilities"),
        ({"second": {"resize_range": [1.2, 1.5]}}, "'data.degradation.second.resize_range' must be [min, max] with 0 < min <= 1 <= max"),
        ({"first": {"jpeg_range": [0, 95]}}, "'data.degradation.first.jpeg_range' must be [min, max] JPEG qualities with 1 <= min"),
        ({"final_sinc_prob": -0.1}, "'data.degradation.final_sinc_prob' must be a probability"),
        ({"preset": "extreme"}, "'data.degradation.preset' must be one of 'realesrgan', 'light', 'medium', 'heavy'"),
        ({"first": {"noise_rnge": [1, 2]}}, "unknown key 'data.degradation.first.noise_rnge' (did you mean 'data.degradation.first.noise_range'?)"),
        ({"sharpen": True}, "unknown key 'data.degradation.sharpen' (did you mean 'data.degradation.sharpen_target'?)"),
    ],
)
def test_out_of_range_and_unknown_values_name_the_key(degradation, message):
    with pytest.raises(SuperresError) as info:
        config_from_dict(_train_raw(**degradation), source="cfg.yaml")
    assert str(info.value).startswith("cfg.yaml: ") and message in str(info.value), str(info.value)


def test_realworld_conflicts_are_errors_and_overrides_reach_the_section(tmp_path):
    with pytest.raises(SuperresError, match="data.degradation.kind.*train.cuda_graph"):
        config_from_dict({**_train_raw(), "train": {"cuda_graph": True}}, source="cfg")
    with pytest.raises(SuperresError, match="data.degradation.kind.*in_channels 1 or 3"):
        config_from_dict({**_train_raw(), "model": {"scale": 2, "in_channels": 4}}, source="cfg")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"data": {"train": ["x"]}, "model": {"scale": 2}}))
    assert load_config(path).data.degradation == DegradationConfig()  # default: bicubic
    c = load_config(path, ["data.degradation.kind=realworld", "data.degradation.second.noise_range=[1,5]"])
    assert c.data.degradation.kind == "realworld" and c.data.degradation.second.noise_range == [1.0, 5.0]
    with pytest.raises(SuperresError, match="data.degradation.second.jpeg_range"):
        load_config(path, ["data.degradation.second.jpeg_range=[50,101]"])


# --------------------------------------------------------------------------- the two data paths
def _folder(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    train = tmp_path / "train"
    train.mkdir()
    for i, (h, w) in enumerate([(40, 44), (36, 50), (48, 48)]):
        Image.fromarray(_image(rng, h, w)).save(train / f"t{i}.png")
    return train


def _batches(cfg, device_resident: bool, iterations=(1, 2, 3), workers: int = 0):
    from superres.training.batches import IterationItems, batch_loader, build_train_dataset
    from superres.training.device_data import DeviceBatches

    ds = build_train_dataset(cfg.data, scale=cfg.model.scale, in_channels=3, seed=cfg.train.seed)
    if device_resident:
        db = DeviceBatches(ds, seed=cfg.train.seed, device="cpu")
        return [db.batch(i, range(cfg.data.batch_size)) for i in iterations]
    items = IterationItems(ds, batch_size=cfg.data.batch_size, seed=cfg.train.seed)
    loader = batch_loader(items, start=iterations[0], stop=iterations[-1], slots=range(cfg.data.batch_size), workers=workers, pin_memory=False)
    return list(loader)


def test_both_data_paths_give_the_same_degraded_batches_and_bicubic_is_unchanged(tmp_path):
    train = _folder(tmp_path)
    raw = {"data": {"train": [str(train)], "patch_size": 16, "batch_size": 4}, "model": {"scale": 2}, "train": {"seed": 3}}
    bicubic = config_from_dict(raw, source="t")
    real = config_from_dict({**raw, "data": {**raw["data"], "degradation": {"kind": "realworld", "preset": "heavy"}}}, source="t")
    plain = _batches(bicubic, False)
    loader, device, workers = _batches(real, False), _batches(real, True), _batches(real, False, workers=2)
    for (lr_p, hr_p), (lr_l, hr_l), (lr_d, hr_d), (lr_w, hr_w) in zip(plain, loader, device, workers):
        assert torch.equal(hr_l, hr_p) and torch.equal(hr_d, hr_p)  # the same crops
        assert torch.equal(lr_l, lr_d)  # the same degraded LR on both paths
        assert torch.equal(lr_w, lr_l) and torch.equal(hr_w, hr_l)  # degraded in worker processes: the same
        assert lr_l.shape == lr_p.shape and not torch.equal(lr_l, lr_p)
    # kind: bicubic is the code path of before: the dataset's own items, no degrader anywhere
    from superres.training.batches import build_train_dataset

    ds = build_train_dataset(bicubic.data, scale=2, in_channels=3, seed=3)
    assert not hasattr(ds, "degrader")
    ds.set_epoch(2)
    items = [ds[j] for j in range(4)]
    assert torch.equal(plain[1][0], torch.stack([lr for lr, _ in items]))
    assert torch.equal(plain[1][1], torch.stack([hr for _, hr in items]))


@pytest.mark.slow
def test_training_with_realworld_degradation_resumes_exactly(tmp_path):
    from support import assert_same_weights, model_weights, train_until_killed

    from superres.training import train

    train_dir = _folder(tmp_path)
    raw = {
        "name": "tiny",
        "model": {"name": "baseline", "scale": 2, "options": {"channels": 4, "num_blocks": 1}},
        "data": {"train": [str(train_dir)], "patch_size": 16, "batch_size": 3,
                 "degradation": {"kind": "realworld", "preset": "realesrgan"}},
        "optim": {"lr": 2e-3},
        "train": {"iterations": 8, "save_every": 3, "log_every": 2, "val_every": 100, "seed": 1, "device": "cpu"},
    }
    config_file = tmp_path / "tiny.yaml"
    config_file.write_text(yaml.safe_dump(raw))
    whole = tmp_path / "whole"
    train(load_config(config_file), run_dir=whole)
    killed = tmp_path / "killed"
    train_until_killed(config_file, killed, 5, tmp_path)  # the last checkpoint is at 3
    assert torch.load(killed / "last.pt", weights_only=True)["iteration"] == 3
    train(load_config(config_file), run_dir=killed, resume=True)
    assert_same_weights(model_weights(whole / "model.safetensors"), model_weights(killed / "model.safetensors"))
    saved = yaml.safe_load((whole / "config.yaml").read_text())
    assert saved["data"]["degradation"]["kind"] == "realworld"


# --------------------------------------------------------------------------- `superres data degrade`
def _sources(tmp_path: Path) -> Path:
    rng = np.random.default_rng(2)
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(_image(rng, 50, 61)).save(src / "a.png")
    Image.fromarray(_image(rng, 45, 40)).save(src / "b.png")
    Image.fromarray(_image(rng, 33, 38, 1)[..., 0]).save(src / "g.png")
    return src


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_cli_data_degrade_shows_progress(tmp_path, capsys, monkeypatch):
    """`superres data degrade` shows a bar for the check and one for the LR it writes."""
    import superres.progress
    from superres.cli import main

    monkeypatch.setattr(superres.progress, "DELAY_S", 0)
    src = _sources(tmp_path)
    assert main(["data", "degrade", str(src), "--scale", "4", "--preset", "medium", "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "check: 100%" in err and "LR_medium x4: 100%" in err and "3/3" in err


def test_cli_data_degrade_is_reproducible_and_scored_by_eval(tmp_path, capsys):
    from superres.cli import main

    src = _sources(tmp_path)
    args = ["data", "degrade", str(src), "--scale", "4", "--preset", "medium", "--seed", "3"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--out", str(tmp_path / "two")]) == 0
    assert main([*args[:-1], "4", "--out", str(tmp_path / "other")]) == 0
    one, two, other = (_files(tmp_path / n) for n in ("one", "two", "other"))
    assert sorted(one) == ["HR/a.png", "HR/b.png", "HR/g.png", "LR_medium/X4/a.png", "LR_medium/X4/b.png", "LR_medium/X4/g.png"]
    assert one == two  # byte-identical
    assert all(one[k] == other[k] for k in one if k.startswith("HR/"))
    assert all(one[k] != other[k] for k in one if k.startswith("LR_"))
    hr = np.asarray(Image.open(tmp_path / "one" / "HR" / "a.png"))
    lr = np.asarray(Image.open(tmp_path / "one" / "LR_medium" / "X4" / "a.png"))
    assert hr.shape == (48, 60, 3) and lr.shape == (12, 15, 3)
    assert np.array_equal(hr, np.asarray(Image.open(src / "a.png"))[:48, :60])
    assert np.asarray(Image.open(tmp_path / "one" / "LR_medium" / "X4" / "g.png")).shape == (8, 9)
    capsys.readouterr()
    assert main(["eval", "--data", str(tmp_path / "one"), "--scale", "4", "--lr", "LR_medium", "--json"]) == 0
    report = yaml.safe_load(capsys.readouterr().out)
    assert report["count"] == 3 and report["lr_source"] == "LR_medium/X4" and 5 < report["psnr_y"] < 60
    assert main(["eval", "--data", str(tmp_path / "one"), "--scale", "4", "--lr", "LR_heavy"]) == 2
    assert "LR_heavy/X4: LR folder not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "first.noise_range=[1,300]"], "superres: error: --set: 'data.degradation.first.noise_range' must be [min, max]"),
        (["--set", "second.jpeg_prob=2"], "superres: error: --set: 'data.degradation.second.jpeg_prob' must be a probability"),
        (["--set", "first.nose_range=[1,3]"], "superres: error: --set: unknown key 'data.degradation.first.nose_range'"),
        (["--preset", "extreme"], "superres: error: --preset extreme: unknown preset; choose one of realesrgan, light, medium, heavy"),
    ],
)
def test_cli_bad_degradation_value_is_one_line_exit_2_and_writes_nothing(tmp_path, capsys, extra, message):
    from superres.cli import main

    src = _sources(tmp_path)
    out = tmp_path / "out"
    assert main(["data", "degrade", str(src), "--out", str(out), "--scale", "2", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert not out.exists()


def test_cli_bad_input_image_writes_nothing(tmp_path, capsys):
    from superres.cli import main

    src = _sources(tmp_path)
    import tifffile

    tifffile.imwrite(src / "z.tif", np.full((20, 20, 4), 9, np.uint8), photometric="minisblack", planarconfig="contig")
    out = tmp_path / "out"
    assert main(["data", "degrade", str(src), "--out", str(out), "--scale", "2"]) == 2
    assert "z.tif: 4 channels" in capsys.readouterr().err
    assert not out.exists()


def test_cli_train_with_a_bad_degradation_value_is_one_line_exit_2(tmp_path, capsys):
    from superres.cli import main

    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump({"data": {"train": [str(tmp_path)]}, "model": {"scale": 2}}))
    out = tmp_path / "run"
    assert main(["train", "--config", str(config_file), "--out", str(out), "data.degradation.kind=realworld",
                 "data.degradation.second.gaussian_noise_prob=1.2"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'data.degradation.second.gaussian_noise_prob' must be a probability in [0, 1], got 1.2" in err, err
    assert not out.exists()
