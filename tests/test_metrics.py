"""PSNR/SSIM against independently derived values: hand-computed cases, scikit-image's SSIM, and
the torch versions against the numpy reference."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from skimage.metrics import structural_similarity

from superres import metrics as m
from superres.errors import SuperresError

RNG = np.random.default_rng(1234)


def _noisy(a: np.ndarray, amp: int, rng: np.random.Generator = RNG) -> np.ndarray:
    noise = rng.integers(-amp, amp + 1, a.shape)
    return np.clip(a.astype(np.int64) + noise, 0, 255).astype(np.uint8)


def _rand_u8(shape: tuple[int, ...], rng: np.random.Generator = RNG) -> np.ndarray:
    return rng.integers(0, 256, shape, dtype=np.uint8)


def _smooth_u8(shape: tuple[int, ...], rng: np.random.Generator = RNG) -> np.ndarray:
    """A smooth random image (closer to a photo than white noise, so SSIM is well away from 0)."""
    h, w = shape[:2]
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    chans = shape[2] if len(shape) == 3 else 1
    out = np.stack(
        [127 + 100 * np.sin(6 * xx * rng.uniform(0.5, 2) + 4 * yy * rng.uniform(0.5, 2) + rng.uniform(0, 6)) for _ in range(chans)],
        axis=-1,
    )
    out = np.round(out).astype(np.uint8)
    return out if len(shape) == 3 else out[:, :, 0]


def _to_tensor(a: np.ndarray, peak: float = 255.0) -> torch.Tensor:
    """H x W (x C) integer array -> 1 x C x H x W float32 in [0, 1]."""
    if a.ndim == 2:
        a = a[:, :, None]
    return torch.from_numpy(a.astype(np.float32) / np.float32(peak)).permute(2, 0, 1)[None]


# --------------------------------------------------------------------------- PSNR, hand-computed
def test_psnr_known_mse_gray() -> None:
    a = np.full((10, 10), 100, np.uint8)
    b = a.copy()
    b[3, 4] = 100 + 50  # one pixel off by 50: MSE = 2500 / 100 = 25
    assert m.psnr(b, a) == pytest.approx(10 * math.log10(255**2 / 25), abs=1e-12)
    c = np.full((10, 10), 110, np.uint8)  # every pixel off by 10: MSE = 100
    assert m.psnr(c, a) == pytest.approx(20 * math.log10(255 / 10), abs=1e-12)


def test_psnr_gray_is_scored_on_intensity_not_y() -> None:
    black, white = np.zeros((12, 12), np.uint8), np.full((12, 12), 255, np.uint8)
    # Intensity as is: the difference is 255, MSE = 255^2 -> exactly 0 dB.
    assert m.psnr(black, white) == pytest.approx(0.0, abs=1e-12)
    # The same as H x W x 1.
    assert m.psnr(black[:, :, None], white[:, :, None]) == pytest.approx(0.0, abs=1e-12)
    # Colour black/white goes through Y: 16 vs 235, difference 219.
    assert m.psnr(np.zeros((12, 12, 3), np.uint8), np.full((12, 12, 3), 255, np.uint8)) == pytest.approx(
        20 * math.log10(255 / 219), abs=1e-9
    )


def test_to_y_coefficients() -> None:
    px = np.array([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1, 1, 1], [0, 0, 0]]])
    np.testing.assert_allclose(m.to_y(px)[0], [16 + 65.481, 16 + 128.553, 16 + 24.966, 235.0, 16.0], atol=1e-9)
    t = torch.tensor(px[0], dtype=torch.float64).T.reshape(1, 3, 1, 5)
    np.testing.assert_allclose(m.to_y(t).numpy().ravel(), m.to_y(px)[0], atol=1e-12)


def test_psnr_y_single_channel_difference() -> None:
    a = np.full((8, 8, 3), 100, np.uint8)
    b = a.copy()
    b[..., 1] += 51  # G off by 51/255 = 0.2 -> Y off by 0.2 * 128.553 everywhere
    assert m.psnr(b, a) == pytest.approx(20 * math.log10(255 / (0.2 * 128.553)), abs=1e-9)
    # "rgb"/"all": joint MSE over three channels = 51^2 / 3.
    expected_all = 10 * math.log10(255**2 * 3 / 51**2)
    assert m.psnr(b, a, channels="rgb") == pytest.approx(expected_all, abs=1e-9)
    assert m.psnr(b, a, channels="all") == pytest.approx(expected_all, abs=1e-9)


def test_bit_depths_and_data_range_agree() -> None:
    a8, b8 = _smooth_u8((40, 30, 3)), None
    b8 = _noisy(a8, 12)
    a16, b16 = a8.astype(np.uint16) * 257, b8.astype(np.uint16) * 257  # x/255 == x*257/65535 exactly
    af, bf = a8 / 255.0, b8 / 255.0
    for channels in ("y", "all"):
        ref_p, ref_s = m.psnr(b8, a8, channels=channels), m.ssim(b8, a8, channels=channels)
        for sr, hr, kw in (
            (b16, a16, {}),
            (bf, af, {}),
            (b16.astype(np.float64), a16.astype(np.float64), {"data_range": 65535}),
        ):
            assert m.psnr(sr, hr, channels=channels, **kw) == pytest.approx(ref_p, abs=1e-9)
            assert m.ssim(sr, hr, channels=channels, **kw) == pytest.approx(ref_s, abs=1e-12)
    # Mixed inputs: a float SR in [0, 1] against a uint8 HR.
    assert m.psnr(bf, a8) == pytest.approx(m.psnr(b8, a8), abs=1e-9)


def test_multiband_with_y_scores_all_channels() -> None:
    a = _smooth_u8((30, 30, 4))
    b = _noisy(a, 9)
    assert m.psnr(b, a) == pytest.approx(m.psnr(b, a, channels="all"), abs=1e-9)
    assert m.ssim(b, a) == pytest.approx(m.ssim(b, a, channels="all"), abs=1e-12)


def test_shave_removes_border() -> None:
    a = _smooth_u8((32, 32, 3))
    b = a.copy()
    b[:3, :] = 0
    b[:, -3:] = 255  # differences only in a 3-pixel border
    assert math.isfinite(m.psnr(b, a, shave=2))
    assert m.psnr(b, a, shave=3) == math.inf
    sc = m.score(b, a, 3)
    assert sc["psnr_y"] == math.inf and sc["ssim_y"] == pytest.approx(1.0, abs=1e-12)
    assert math.isfinite(m.score(b, a, 2)["psnr_y"])


def test_identical_and_mean_psnr_cap() -> None:
    a = _rand_u8((20, 20, 3))
    assert m.psnr(a, a) == math.inf
    assert m.mean_psnr([math.inf, 30.0]) == pytest.approx((m.PSNR_CAP_DB + 30.0) / 2)
    assert m.mean_psnr([20.0, 30.0]) == pytest.approx(25.0)
    assert m.PSNR_CAP_DB == 100.0
    with pytest.raises(ValueError):
        m.mean_psnr([])


def test_input_errors() -> None:
    a = _rand_u8((20, 20, 3))
    with pytest.raises(SuperresError, match=r"\(20, 20, 3\).*\(20, 21, 3\)"):
        m.psnr(a, _rand_u8((20, 21, 3)))
    with pytest.raises(ValueError, match="channels"):
        m.psnr(a, a, channels="yuv")
    with pytest.raises(SuperresError, match="smaller than the 11x11"):
        m.ssim(a, a, shave=5)
    with pytest.raises(SuperresError, match="too small to shave"):
        m.psnr(a, a, shave=10)
    with pytest.raises(ValueError, match="data_range"):
        m.psnr(a, a, data_range=0)


# --------------------------------------------------------------------------- SSIM
def test_ssim_identical_is_one() -> None:
    for a in (_rand_u8((25, 31, 3)), _rand_u8((25, 31)), _rand_u8((25, 31, 5))):
        assert m.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
        assert m.ssim(a, a, channels="all") == pytest.approx(1.0, abs=1e-12)


def test_ssim_constant_images_hand_computed() -> None:
    # Constant images: every window has zero variance, so SSIM = luminance term only,
    # (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1) with C1 = (0.01 * 255)^2.
    a, b = np.full((20, 20), 100, np.uint8), np.full((20, 20), 120, np.uint8)
    c1 = (0.01 * 255) ** 2
    assert m.ssim(a, b) == pytest.approx((2 * 100 * 120 + c1) / (100**2 + 120**2 + c1), abs=1e-12)


def test_gaussian_window_matches_fspecial() -> None:
    # fspecial('gaussian', 11, 1.5): exp(-(x^2+y^2)/(2*1.5^2)) normalised over the 11x11 grid.
    x = np.arange(-5, 6)
    w2 = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * 1.5**2))
    w2 /= w2.sum()
    g = m.gaussian_window()
    np.testing.assert_allclose(np.outer(g, g), w2, rtol=1e-12, atol=0)


def _skimage_ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0) -> tuple[float, np.ndarray]:
    return structural_similarity(
        a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=data_range, full=True
    )


@pytest.mark.parametrize("shape", [(11, 11), (37, 29), (64, 48)])
def test_ssim_map_matches_skimage_interior(shape: tuple[int, int]) -> None:
    """scikit-image filters with reflect padding and returns a full-size map; its radius is
    int(3.5 * 1.5 + 0.5) = 5 (an 11x11 window), so the interior [5:-5, 5:-5] of its map is exactly the
    'valid' map, and its mean SSIM (which crops those 5 pixels) is the protocol's SSIM."""
    a = _smooth_u8((shape[0], shape[1], 3))
    b = _noisy(a, 25)
    ya, yb = m.to_y(a / 255.0), m.to_y(b / 255.0)
    mssim, full = _skimage_ssim(ya, yb)
    ours = m.ssim_map(ya, yb, data_range=255.0)
    assert ours.shape == (shape[0] - 10, shape[1] - 10)
    np.testing.assert_allclose(ours, full[5:-5, 5:-5], atol=1e-12)
    assert m.ssim(b, a) == pytest.approx(mssim, abs=1e-12)


def test_ssim_all_channels_matches_skimage_channel_mean() -> None:
    a = _smooth_u8((40, 33, 3))
    b = _noisy(a, 30)
    expected = structural_similarity(
        a.astype(np.float64), b.astype(np.float64), gaussian_weights=True, sigma=1.5,
        use_sample_covariance=False, data_range=255, channel_axis=-1,
    )
    assert m.ssim(b, a, channels="all") == pytest.approx(expected, abs=1e-12)


def _read(path: Path) -> np.ndarray:
    with PILImage.open(path) as im:
        return np.asarray(im)


def _nearest_up(lr: np.ndarray, s: int) -> np.ndarray:
    return np.repeat(np.repeat(lr, s, axis=0), s, axis=1)


@pytest.mark.shared_data
def test_ssim_real_images_match_skimage(shared_data: Path) -> None:
    for set_name, name in (("Set5", "butterfly"), ("Set14", "bridge")):
        hr = _read(shared_data / set_name / "HR" / f"{name}.png")
        lr = _read(shared_data / set_name / "LR_bicubic" / "X4" / f"{name}.png")
        sr = _nearest_up(lr, 4)
        hr = hr[: sr.shape[0], : sr.shape[1]]
        if hr.ndim == 3:
            ys, yh = m.to_y(sr / 255.0), m.to_y(hr / 255.0)
        else:
            ys, yh = sr.astype(np.float64), hr.astype(np.float64)
        expected, _ = _skimage_ssim(ys[4:-4, 4:-4], yh[4:-4, 4:-4])
        assert m.score(sr, hr, 4)["ssim_y"] == pytest.approx(expected, abs=1e-10)


# --------------------------------------------------------------------------- torch vs numpy
def _agree(sr: np.ndarray, hr: np.ndarray, shave: int, channels: str) -> None:
    ts, th = _to_tensor(sr), _to_tensor(hr)
    p_np = m.psnr(sr, hr, shave=shave, channels=channels)
    s_np = m.ssim(sr, hr, shave=shave, channels=channels)
    p_t = m.psnr_torch(ts, th, shave=shave, channels=channels)
    s_t = m.ssim_torch(ts, th, shave=shave, channels=channels)
    assert p_t.shape == (1,) and s_t.shape == (1,)
    assert abs(p_t.item() - p_np) < 1e-4, (p_t.item(), p_np)
    assert abs(s_t.item() - s_np) < 1e-5, (s_t.item(), s_np)


@pytest.mark.parametrize("shape", [(37, 29, 3), (31, 45), (24, 24, 1), (33, 27, 4)])
@pytest.mark.parametrize("shave", [0, 3])
@pytest.mark.parametrize("channels", ["y", "all"])
def test_torch_agrees_with_numpy_random(shape: tuple[int, ...], shave: int, channels: str) -> None:
    rng = np.random.default_rng([*shape, shave, len(channels)])  # deterministic per case
    hr = _smooth_u8(shape, rng)
    _agree(_noisy(hr, 20, rng), hr, shave, channels)
    _agree(_rand_u8(shape, rng), _rand_u8(shape, rng), shave, channels)  # white noise: SSIM near 0


def test_torch_batch_is_per_image() -> None:
    rng = np.random.default_rng(7)
    hrs = [_smooth_u8((30, 26, 3), rng) for _ in range(3)]
    srs = [_noisy(h, amp, rng) for h, amp in zip(hrs, (5, 15, 40))]
    ts = torch.cat([_to_tensor(s) for s in srs])
    th = torch.cat([_to_tensor(h) for h in hrs])
    p = m.psnr_torch(ts, th, shave=2)
    s = m.ssim_torch(ts, th, shave=2)
    assert p.shape == (3,) and s.shape == (3,) and p.dtype == torch.float64
    for i in range(3):
        assert abs(p[i].item() - m.psnr(srs[i], hrs[i], shave=2)) < 1e-4
        assert abs(s[i].item() - m.ssim(srs[i], hrs[i], shave=2)) < 1e-5
    assert p[0] > p[1] > p[2]  # more noise, lower PSNR


def test_torch_data_range_and_identical() -> None:
    hr = _smooth_u8((28, 28, 3))
    sr = _noisy(hr, 10)
    t255s = torch.from_numpy(sr.astype(np.float64)).permute(2, 0, 1)[None]
    t255h = torch.from_numpy(hr.astype(np.float64)).permute(2, 0, 1)[None]
    assert abs(m.psnr_torch(t255s, t255h, data_range=255.0).item() - m.psnr(sr, hr)) < 1e-9
    assert abs(m.ssim_torch(t255s, t255h, data_range=255.0).item() - m.ssim(sr, hr)) < 1e-12
    assert m.psnr_torch(t255h, t255h, data_range=255.0).item() == math.inf
    assert m.ssim_torch(t255h, t255h, data_range=255.0).item() == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(TypeError):
        m.psnr_torch(t255h.to(torch.uint8), t255h.to(torch.uint8))
    with pytest.raises(SuperresError):
        m.psnr_torch(t255h, t255h[..., :-1])


@pytest.mark.shared_data
def test_torch_agrees_with_numpy_real(shared_data: Path) -> None:
    # bridge is grayscale (mode L); comic has odd sizes (250 x 361); baby is a colour photo.
    for set_name, name in (("Set14", "bridge"), ("Set14", "comic"), ("Set5", "baby")):
        for s in (3, 4):
            hr = _read(shared_data / set_name / "HR" / f"{name}.png")
            lr = _read(shared_data / set_name / "LR_bicubic" / f"X{s}" / f"{name}.png")
            sr = _nearest_up(lr, s)
            hr = hr[: sr.shape[0], : sr.shape[1]]
            _agree(sr, hr, s, "y")
