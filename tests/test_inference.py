"""Tiled inference: exactness against untiled runs, blending weights, channel rules, files.

Expectations are derived independently of the code under test: the untiled forward pass of the
same model is the reference for tiling; the receptive field that the overlap has to cover is
measured here with autograd, not taken from the implementation; colour round trips are checked
against MATLAB's published ``rgb2ycbcr`` values.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from superres.color import rgb_to_ycbcr, ycbcr_to_rgb
from superres.devices import resolve_device
from superres.errors import SuperresError
from superres.inference import (
    axis_weights,
    tile_grid,
    upscale,
    upscale_files,
    upscale_tensor,
)
from superres.models import build


def receptive_radius(model: nn.Module, scale: int, size: int = 81) -> int:
    """Largest LR distance from an output pixel's centre to an input pixel that influences it (autograd)."""
    x = torch.rand(1, model.in_channels, size, size, requires_grad=True)
    y = model(x)
    c = y.shape[-1] // 2
    y[0, :, c, c].sum().backward()
    influence = torch.nonzero(x.grad[0].abs().sum(0) > 0)
    centre = (c + 0.5) / scale - 0.5
    return math.ceil(float((influence - centre).abs().max()))


def untiled(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(x)


# --------------------------------------------------------------------------- geometry
@pytest.mark.parametrize("length,tile", [(53, 16), (64, 16), (17, 16), (100, 7), (5, 16), (40, 0)])
def test_tile_grid_covers_axis_in_cores_of_at_most_tile(length: int, tile: int) -> None:
    bounds = tile_grid(length, tile)
    sizes = np.diff(bounds)
    assert bounds[0] == 0 and bounds[-1] == length
    assert (sizes > 0).all()
    if tile > 0:
        assert sizes.max() <= tile
    expected_count = math.ceil(length / tile) if 0 < tile < length else 1
    assert len(sizes) == expected_count


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("overlap", [0, 1, 6, 16])
def test_blend_weights_are_a_partition_of_unity(scale: int, overlap: int) -> None:
    """Summed over tiles the 2-D weights are 1 everywhere, so no weight canvas is needed."""
    h, w, tile = 45, 38, 12
    ys, xs = tile_grid(h, tile), tile_grid(w, tile)
    total = np.zeros((h * scale, w * scale))
    for i in range(len(ys) - 1):
        for j in range(len(xs) - 1):
            y0, y1 = max(0, ys[i] - overlap), min(h, ys[i + 1] + overlap)
            x0, x1 = max(0, xs[j] - overlap), min(w, xs[j + 1] + overlap)
            wy = axis_weights(ys, scale, overlap // 2, i, y0, y1)
            wx = axis_weights(xs, scale, overlap // 2, j, x0, x1)
            assert wy.min() >= 0 and wx.min() >= 0 and wy.max() <= 1 + 1e-12
            total[y0 * scale : y1 * scale, x0 * scale : x1 * scale] += np.outer(wy, wx)
    np.testing.assert_allclose(total, 1.0, atol=1e-12)


def test_blend_weights_stay_inside_the_safe_margin() -> None:
    """A tile's weight is 0 within ceil(overlap/2) LR pixels of its inner edges (where its output is wrong)."""
    scale, overlap = 3, 10
    bounds = tile_grid(60, 20)  # cores [0, 20, 40, 60]
    start, stop = bounds[1] - overlap, bounds[2] + overlap
    wy = axis_weights(bounds, scale, overlap // 2, 1, start, stop)
    margin = (overlap - overlap // 2) * scale
    assert np.all(wy[:margin] == 0) and np.all(wy[-margin:] == 0)
    assert np.all(wy[margin + overlap // 2 * 2 * scale : -(margin + overlap // 2 * 2 * scale)] == 1)


# --------------------------------------------------------------------------- exactness
def check_tiling_is_exact(model: nn.Module, scale: int, combos: tuple[tuple[int, int], ...]) -> None:
    """Tiled == untiled (1e-4 max abs) when the overlap covers the measured receptive field.

    ``combos`` are ``(extra_overlap, extra_tile)``: the overlap is ``2 * (radius + 1)`` (the
    cross-fade uses the inner half of it) plus ``extra_overlap``, the tile is the overlap plus
    ``extra_tile``. The image (3 cores per axis, not a multiple of the tile) is sized so that the
    middle tile's context is cut from the image on every side: interior tiles are exercised, not
    only tiles that hold the whole image.
    """
    radius = receptive_radius(model, scale, size=4 * radius_probe_margin(model))
    for extra_overlap, extra_tile in combos:
        overlap = 2 * (radius + 1) + extra_overlap
        tile = overlap + extra_tile
        size = (3 * tile - 1, 3 * tile - 2)
        for n in size:
            bounds = tile_grid(n, tile)
            assert len(bounds) == 4 and bounds[1] - overlap > 0 and bounds[2] + overlap < n
        x = torch.rand(1, model.in_channels, *size)
        ref = untiled(model, x)
        out = upscale_tensor(model, x, tile=tile, tile_overlap=overlap)
        assert out.shape == ref.shape
        err = (out - ref).abs().max().item()
        assert err < 1e-4, f"x{scale} tile {tile} overlap {overlap}: max error {err}"


def radius_probe_margin(model: nn.Module) -> int:
    """An upper bound on the receptive radius (one pixel per 3x3 conv) to size the autograd probe."""
    return 2 + sum(isinstance(m, nn.Conv2d) for m in model.modules())


@pytest.mark.parametrize("name", ["baseline", "enhanced"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_tiled_equals_untiled_when_overlap_covers_receptive_field(name: str, scale: int) -> None:
    """The registry's architectures, made shallow and narrow so that every scale and several tilings
    (even and odd overlaps, tiles just above the overlap and larger) fit in a few seconds; tiling
    depends on the receptive field only. The full-depth models are checked below."""
    torch.manual_seed(scale)
    model = build(name, scale=scale, channels=16, num_blocks=2).eval()
    check_tiling_is_exact(model, scale, combos=((0, 2), (3, 9)))


@pytest.mark.parametrize("name,options", [("baseline", {}), ("enhanced", {"channels": 16})])
@pytest.mark.slow
def test_tiled_equals_untiled_full_depth_x4(name: str, options: dict) -> None:
    """``baseline`` exactly as registered; ``enhanced`` at its full depth (narrowed for speed)."""
    torch.manual_seed(4)
    model = build(name, scale=4, **options).eval()
    check_tiling_is_exact(model, 4, combos=((0, 3),))


def test_tiled_differs_when_overlap_is_too_small() -> None:
    """The exactness test above can fail: with too little context the tiles see zero padding."""
    torch.manual_seed(0)
    model = build("baseline", scale=2).eval()
    x = torch.rand(1, 3, 40, 40)
    ref = untiled(model, x)
    err = (upscale_tensor(model, x, tile=16, tile_overlap=2) - ref).abs().max().item()
    assert err > 1e-3


def lr_receptive_radius(model: nn.Module, scale: int, size: int) -> int:
    """The contract's ``R``: the farthest LR pixel (in whole pixels, either side) from the LR pixel
    ``m`` that output pixel ``q`` lies in (``m = q // scale``) that influences ``q``, over every
    phase ``q % scale`` (autograd). :func:`receptive_radius` measures from the output pixel's centre
    instead, which for a pixel-shuffle model is one pixel more: fine for the slack test above, one
    pixel too loose for a test at the limit."""
    m, worst = size // 2, 0
    for phase in range(scale):
        x = torch.rand(1, model.in_channels, size, size, requires_grad=True)
        q = m * scale + phase
        model(x)[0, :, q, q].sum().backward()
        influence = torch.nonzero(x.grad[0].abs().sum(0) > 0)
        worst = max(worst, int((influence - m).abs().max()))
    return worst


def tiled_error(model: nn.Module, overlap: int) -> float:
    """Max |tiled - untiled| of :func:`upscale_tensor` with ``tile_overlap=overlap`` on an image of 3 x 3
    cores whose middle tile has its context cut from the image on every side (as in
    :func:`check_tiling_is_exact`)."""
    tile = overlap + 3
    size = (3 * tile - 1, 3 * tile - 2)
    for n in size:
        bounds = tile_grid(n, tile)
        assert len(bounds) == 4 and bounds[1] - overlap > 0 and bounds[2] + overlap < n
    x = torch.rand(1, model.in_channels, *size)
    out = upscale_tensor(model, x, tile=tile, tile_overlap=overlap)
    ref = untiled(model, x)
    assert out.shape == ref.shape
    return (out - ref).abs().max().item()


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_tiling_is_exact_at_the_smallest_overlap_the_contract_allows(scale: int) -> None:
    """The contract (module docstring of superres.inference): tiled == untiled to 1e-4 when
    ``R <= ceil(tile_overlap / 2)``. The smallest such overlap is ``2R - 1`` (odd: the cross-fade
    ramp is ``overlap // 2`` wide and the context ``overlap``); ``2R`` is the smallest even one.
    :func:`check_tiling_is_exact` keeps a pixel of slack (``2(R+1)`` with the centre-measured radius),
    so a context or a ramp one pixel off would pass it; at the limit it does not.

    ESPCN (5x5, 3x3, 3x3 convs, then a pixel shuffle: ``R = 2 + 1 + 1 = 4``, tanh activations) is used
    because its outermost pixels weigh enough that one missing pixel of context costs ~1e-2, far
    above the 1e-4 bound; one overlap below the limit shows it."""
    torch.manual_seed(scale)
    model = build("espcn", scale=scale, in_channels=1).eval()
    radius = lr_receptive_radius(model, scale, size=21)
    assert radius == 4  # measured with autograd; by hand from the kernel sizes above
    for overlap in (2 * radius - 1, 2 * radius):
        err = tiled_error(model, overlap)
        assert err < 1e-4, f"x{scale} overlap {overlap} (R {radius}): max error {err}"
    # One pixel below the limit the guarantee no longer holds: the test above is at the edge.
    assert tiled_error(model, 2 * radius - 2) > 1e-3


def test_batch_and_channels_are_handled_per_sample() -> None:
    torch.manual_seed(2)
    model = build("enhanced", scale=2, in_channels=4, num_blocks=1).eval()
    x = torch.rand(3, 4, 30, 22)
    radius = receptive_radius(model, 2, size=41)
    out = upscale_tensor(model, x, tile=10, tile_overlap=2 * (radius + 1))
    assert out.shape == (3, 4, 60, 44)
    assert (out - untiled(model, x)).abs().max().item() < 1e-4


class _Recorder(nn.Module):
    """Nearest-neighbour x2 'model' that records the input sizes it is called with."""

    def __init__(self) -> None:
        super().__init__()
        self.scale, self.in_channels = 2, 1
        self.sizes: list[tuple[int, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append((x.shape[-2], x.shape[-1]))
        return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def test_each_model_call_sees_at_most_one_tile_plus_context() -> None:
    model = _Recorder()
    x = torch.rand(1, 1, 300, 170)
    out = upscale_tensor(model, x, tile=64, tile_overlap=8)
    assert max(max(s) for s in model.sizes) <= 64 + 2 * 8
    assert len(model.sizes) == math.ceil(300 / 64) * math.ceil(170 / 64)
    # A pointwise model is exact under any tiling: the blend weights sum to 1.
    np.testing.assert_allclose(out.numpy(), x.repeat_interleave(2, -2).repeat_interleave(2, -1).numpy(), atol=1e-6)


def test_wrong_scale_declaration_is_reported() -> None:
    model = _Recorder()
    model.scale = 3
    with pytest.raises(SuperresError, match="declares scale 3"):
        upscale_tensor(model, torch.rand(1, 1, 10, 10))


# --------------------------------------------------------------------------- colour
def test_ycbcr_matches_matlab_rgb2ycbcr() -> None:
    """MATLAB documents rgb2ycbcr(double) of white/black/pure colours (BT.601 studio swing)."""
    rgb = np.array([[[1, 1, 1], [0, 0, 0], [1, 0, 0]]], dtype=np.float64)
    ycc = rgb_to_ycbcr(rgb) * 255
    np.testing.assert_allclose(ycc[0, 0], [235, 128, 128], atol=1e-3)
    np.testing.assert_allclose(ycc[0, 1], [16, 128, 128], atol=1e-9)
    np.testing.assert_allclose(ycc[0, 2], [81.481, 90.203, 240.0], atol=1e-9)
    rand = np.random.default_rng(0).random((7, 5, 3))
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(rand)), rand, atol=1e-12)


# --------------------------------------------------------------------------- devices
def test_device_validation() -> None:
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(SuperresError, match="--device"):
        resolve_device("toaster")
    if not torch.cuda.is_available():
        with pytest.raises(SuperresError, match="CUDA is not available"):
            resolve_device("cuda")


def test_half_on_cpu_is_refused() -> None:
    model = build("baseline", scale=2, num_blocks=0).eval()
    with pytest.raises(SuperresError, match="--half"):
        upscale(model, np.zeros((8, 8, 3), np.float32), half=True, device="cpu")


# --------------------------------------------------------------------------- images
class _PerChannelNearest(nn.Module):
    """x2 nearest-neighbour 'model' that multiplies channel c by gains[c]: outputs known in closed form."""

    def __init__(self, in_channels: int, gains: tuple[float, ...] | None = None) -> None:
        super().__init__()
        self.scale, self.in_channels = 2, in_channels
        self.register_buffer("gains", torch.tensor(gains or (1.0,) * in_channels).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x * self.gains).repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


def nearest2(a: np.ndarray) -> np.ndarray:
    return a.repeat(2, axis=0).repeat(2, axis=1)


def smooth_rgb(h: int, w: int) -> np.ndarray:
    """A smooth, moderately saturated colour ramp (no channel near 0 or 1, so nothing clips)."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    return np.stack([0.3 + 0.4 * xx, 0.4 + 0.2 * yy, 0.6 - 0.3 * xx * yy], axis=2).astype(np.float32)


def test_luma_model_on_rgb_runs_on_y_and_resizes_chroma_with_bicubic() -> None:
    from superres.metrics import to_y
    from superres.resize import imresize

    rgb = smooth_rgb(20, 26)
    out = upscale(_PerChannelNearest(1), rgb, tile=0)
    assert out.shape == (40, 52, 3) and out.dtype == np.float32
    # Y of the output is the nearest-upscaled Y of the input (Y/255 in [16/255, 235/255]).
    np.testing.assert_allclose(to_y(out), nearest2(to_y(rgb)), atol=1e-3)
    # Cb/Cr (MATLAB rgb2ycbcr rows, written out here) are MATLAB-bicubic upscaled.
    cb_row, cr_row = np.array([-37.797, -74.203, 112.0]), np.array([112.0, -93.786, -18.214])
    for row in (cb_row, cr_row):
        expected = imresize((rgb.astype(np.float64) @ row), scale=2)
        np.testing.assert_allclose(out.astype(np.float64) @ row, expected, atol=2e-3 * 255)


def test_luma_path_matches_the_float64_reference_closely() -> None:
    """The float32 chroma resize and colour inverse (speed, see _upscale_chroma) stay within 1e-5 of the
    float64 numpy reference: rgb_to_ycbcr -> model on Y, imresize(CbCr) -> ycbcr_to_rgb."""
    from superres.color import rgb_to_ycbcr, ycbcr_to_rgb
    from superres.resize import imresize

    rgb = smooth_rgb(23, 31)
    ycc = rgb_to_ycbcr(rgb)
    reference = ycbcr_to_rgb(np.concatenate([nearest2(ycc[:, :, :1]), imresize(ycc[:, :, 1:], scale=2)], axis=2))
    out = upscale(_PerChannelNearest(1), rgb, tile=0)
    np.testing.assert_allclose(out, np.clip(reference, 0, 1), atol=1e-5)


def test_rgb_model_on_gray_replicates_and_averages() -> None:
    gray = smooth_rgb(9, 11)[:, :, 0]
    out = upscale(_PerChannelNearest(3, (0.5, 1.0, 1.5)), gray, tile=4, tile_overlap=2)
    assert out.shape == (18, 22)  # H x W in, H x W out
    np.testing.assert_allclose(out, nearest2(gray), atol=1e-6)  # mean of the gains is 1


def test_channel_mismatch_names_both_counts() -> None:
    with pytest.raises(SuperresError, match=r"4 channel\(s\) but the model takes 3"):
        upscale(_PerChannelNearest(3), np.zeros((8, 8, 4), np.float32))
    with pytest.raises(SuperresError, match="float array"):
        upscale(_PerChannelNearest(3), np.zeros((8, 8, 3), np.uint8))


def test_output_is_clamped() -> None:
    out = upscale(_PerChannelNearest(3, (3.0, -1.0, 1.0)), np.full((4, 4, 3), 0.5, np.float32))
    np.testing.assert_allclose(out[0, 0], [1.0, 0.0, 0.5])


def test_image_keeps_bit_depth_and_upscales_alpha_with_bicubic() -> None:
    from superres.io import Image
    from superres.resize import imresize

    rng = np.random.default_rng(0)
    alpha = rng.random((10, 12, 1)).astype(np.float32)
    image = Image(smooth_rgb(10, 12), alpha, 16, Path("x.tif"))
    out = upscale(_PerChannelNearest(3), image, tile=5, tile_overlap=2)
    assert isinstance(out, Image) and out.bit_depth == 16 and out.channels == 3
    np.testing.assert_allclose(out.data, nearest2(image.data), atol=1e-6)
    expected_alpha = np.clip(imresize(alpha[:, :, 0].astype(np.float64), scale=2), 0, 1)
    np.testing.assert_allclose(out.alpha[:, :, 0], expected_alpha, atol=1e-6)


def test_upscale_accepts_a_model_file(tmp_path: Path) -> None:
    from superres.modelfile import save_model

    torch.manual_seed(0)
    model = build("enhanced", scale=2, channels=8, num_blocks=1)
    path = save_model(tmp_path / "m.safetensors", model, arch="enhanced", args={"channels": 8, "num_blocks": 1})
    rgb = smooth_rgb(12, 10)
    expected = np.clip(untiled(model.eval(), torch.from_numpy(rgb.transpose(2, 0, 1))[None])[0].numpy(), 0, 1)
    np.testing.assert_allclose(upscale(str(path), rgb), expected.transpose(1, 2, 0), atol=1e-5)


# --------------------------------------------------------------------------- files
@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    from superres.modelfile import save_model

    torch.manual_seed(0)
    return save_model(
        tmp_path / "rgb_x2.safetensors", build("enhanced", scale=2, channels=8, num_blocks=1),
        arch="enhanced", args={"channels": 8, "num_blocks": 1},
    )


def test_upscale_files_keeps_format_depth_channels_alpha(tmp_path: Path, model_file: Path) -> None:
    from superres.io import Image, read_raw, write_image

    src = tmp_path / "in"
    rng = np.random.default_rng(1)
    rgba16 = Image(smooth_rgb(40, 30), rng.random((40, 30, 1)).astype(np.float32), 16)
    write_image(src / "a_rgba16.png", rgba16)
    write_image(src / "sub" / "b_gray8.png", Image(smooth_rgb(17, 23)[:, :, :1], None, 8))
    write_image(src / "c_rgb8.jpg", Image(smooth_rgb(20, 20), None, 8))
    single = tmp_path / "single.tif"
    write_image(single, Image(smooth_rgb(12, 9), None, 16))

    out = tmp_path / "out"
    written = upscale_files([src, single], model=str(model_file), out_dir=out, tile=16, tile_overlap=4,
                            device="cpu", half=False, backend="torch", progress=False)
    assert sorted(p.relative_to(out).as_posix() for p in written) == [
        "a_rgba16.png", "c_rgb8.jpg", "single.tif", "sub/b_gray8.png"]
    a = read_raw(out / "a_rgba16.png")
    assert a.pixels.dtype == np.uint16 and a.pixels.shape == (80, 60, 3) and a.alpha is not None
    b = read_raw(out / "sub" / "b_gray8.png")
    assert b.pixels.dtype == np.uint8 and b.pixels.shape == (34, 46, 1) and b.alpha is None
    assert read_raw(out / "c_rgb8.jpg").pixels.shape == (40, 40, 3)
    assert read_raw(out / "single.tif").pixels.dtype == np.uint16


def test_upscale_files_deflates_pngs_on_the_cpus_the_model_leaves(tmp_path: Path, model_file: Path, monkeypatch) -> None:
    """The background writer's PNGs are deflated on the CPUs the model's threads leave free
    (:func:`superres.threads.writer_threads`), while a PNG written outside it keeps every CPU."""
    import superres.io as io
    import superres.threads as threads
    from superres.io import Image, write_image

    seen = []
    real = io.write_png

    def recorded(handle, samples, **kwargs):
        seen.append(kwargs.get("threads"))
        return real(handle, samples, **kwargs)

    write_image(tmp_path / "in" / "a.png", Image(smooth_rgb(20, 16), None, 8))
    monkeypatch.setattr(io, "write_png", recorded)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    for model_threads, expected in ((1, 2), (3, 1)):
        monkeypatch.setattr(threads, "_threads", model_threads)
        upscale_files([tmp_path / "in"], model=str(model_file), out_dir=tmp_path / f"out{model_threads}", tile=0,
                      device="cpu", progress=False)
        assert seen[-1] == expected
    write_image(tmp_path / "direct.png", Image(smooth_rgb(4, 4), None, 8))
    assert seen[-1] is None


def test_upscale_files_reports_a_bad_file_and_writes_nothing_for_it(tmp_path: Path, model_file: Path) -> None:
    from superres.io import Image, write_image

    src = tmp_path / "in"
    write_image(src / "a.png", Image(smooth_rgb(8, 8), None, 8))
    (src / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    out = tmp_path / "out"
    with pytest.raises(SuperresError, match="b.png"):
        upscale_files([src], model=str(model_file), out_dir=out, tile=0, tile_overlap=0,
                      device="cpu", half=False, backend="torch", progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]  # no partial or temporary file


def test_upscale_files_refuses_bad_options_before_any_work(tmp_path: Path, model_file: Path, monkeypatch) -> None:
    from superres.io import Image, write_image

    write_image(tmp_path / "a.png", Image(smooth_rgb(8, 8), None, 8))
    common = dict(out_dir=tmp_path / "out", tile=0, tile_overlap=0, progress=False)
    with pytest.raises(SuperresError, match="unknown backend"):
        upscale_files([tmp_path / "a.png"], model=str(model_file), device="cpu", half=False, backend="tensorrt", **common)
    with pytest.raises(SuperresError, match="--half"):
        upscale_files([tmp_path / "a.png"], model=str(model_file), device="cpu", half=True, backend="torch", **common)
    with pytest.raises(SuperresError, match="overwrite an input"):
        upscale_files([tmp_path], model=str(model_file), device="cpu", half=False, backend="torch",
                      **{**common, "out_dir": tmp_path})
    with pytest.raises(SuperresError, match="--png-level 10"):
        upscale_files([tmp_path / "a.png"], model=str(model_file), device="cpu", half=False, backend="torch",
                      png_level=10, **common)
    import superres.modelfile

    monkeypatch.setattr(superres.modelfile, "list_models", lambda: [{"name": "baseline", "shipped": False}])
    with pytest.raises(SuperresError, match="no pretrained model is shipped yet; pass --model PATH"):
        upscale_files([tmp_path / "a.png"], model=None, device="cpu", half=False, backend="torch", **common)
    assert not (tmp_path / "out").exists()


def test_default_model_is_the_best_shipped_x4(monkeypatch) -> None:
    import superres.modelfile
    from superres.inference import default_model_name

    entries = [
        {"name": "a_x4", "shipped": True, "scale": 4, "psnr_y": 30.1},
        {"name": "b_x4", "shipped": True, "scale": 4, "psnr_y": 30.9},
        {"name": "c_x2", "shipped": True, "scale": 2, "psnr_y": 36.0},
        {"name": "d_x4", "shipped": True, "scale": 4, "psnr_y": None},
    ]
    monkeypatch.setattr(superres.modelfile, "list_models", lambda: entries)
    assert default_model_name() == "b_x4"


def test_cli_upscale_error_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    from superres.cli import main

    code = main(["upscale", str(tmp_path / "missing.png"), "--model", "x.safetensors", "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.png" in err[0]


def test_upscale_files_runs_the_tile_batch_the_device_allows(tmp_path: Path, model_file: Path, monkeypatch) -> None:
    """``superres upscale`` asks :func:`superres.speed.tile_batch` (more than 1 only on CUDA) for the
    tiles per model call and passes it down; the files written are the same as one tile per call."""
    import superres.inference as inference
    from superres.io import Image, read_raw, write_image

    src = tmp_path / "a.png"
    write_image(src, Image(smooth_rgb(40, 33), None, 8))
    common = dict(model=str(model_file), tile=16, tile_overlap=4, device="cpu", half=False, backend="torch",
                  progress=False)
    upscale_files([src], out_dir=tmp_path / "one", **common)

    asked, calls = [], []
    real_upscale_tensor = inference.upscale_tensor

    def spy(*args, **kwargs):
        calls.append(kwargs.get("batch"))
        return real_upscale_tensor(*args, **kwargs)

    monkeypatch.setattr(inference, "tile_batch", lambda net, tile, *a, **k: asked.append(tile) or 3)
    monkeypatch.setattr(inference, "upscale_tensor", spy)
    upscale_files([src], out_dir=tmp_path / "three", **common)
    assert asked == [16] and calls == [3]
    assert np.array_equal(read_raw(tmp_path / "one" / "a.png").pixels, read_raw(tmp_path / "three" / "a.png").pixels)
