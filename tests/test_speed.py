"""Choices made for the machine: ``--tile auto`` and the default model of ``superres upscale``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import superres.speed
from superres.errors import SuperresError
from superres.speed import CPU_BUDGET_MS_PER_MP, MIN_AUTO_TILE, auto_tile, bytes_per_input_pixel, choose_default_model

CPU = torch.device("cpu")


def small_model(scale: int = 2) -> torch.nn.Module:
    """A 3-layer conv net + pixel shuffle: receptive-field radius 3 LR pixels, so tiles with overlap
    >= 6 are exact (docs/INFERENCE.md)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 3 * scale * scale, 3, padding=1), torch.nn.PixelShuffle(scale),
    )
    net.scale, net.in_channels = scale, 3
    return net.eval()


def test_auto_tile_is_one_pass_when_the_image_fits() -> None:
    assert auto_tile(small_model(), 100, 80, 3, CPU, free=10**9, per_pixel=1000.0) == 0


def test_auto_tile_respects_a_small_budget() -> None:
    free, per_pixel, overlap = 4 * 200 * 200 * 1000, 1000.0, 16  # a quarter of it: 200x200 px of tile
    tile = auto_tile(small_model(), 1000, 1000, 3, CPU, tile_overlap=overlap, free=free, per_pixel=per_pixel)
    assert tile == 200 - 2 * overlap
    assert (tile + 2 * overlap) ** 2 * per_pixel <= free * superres.speed.RAM_FRACTION
    assert auto_tile(small_model(), 1000, 1000, 3, CPU, free=1000, per_pixel=per_pixel) == MIN_AUTO_TILE


def test_auto_tile_caps_large_images_on_the_cpu_only() -> None:
    from superres.speed import CPU_TILE_CAP, CPU_WHOLE_PIXELS

    side = int(1.5 * CPU_TILE_CAP)
    assert CPU_WHOLE_PIXELS == side * side
    assert auto_tile(small_model(), side, side, 3, CPU, free=10**12, per_pixel=1000.0) == 0  # exactly at the limit
    assert auto_tile(small_model(), side, side + 1, 3, CPU, free=10**12, per_pixel=1000.0) == CPU_TILE_CAP
    # the pixel count decides, not the longest side: a 360p frame stays whole, a long strip of the
    # same area too, and a frame just over the count is capped
    assert auto_tile(small_model(), 360, 640, 3, CPU, free=10**12, per_pixel=1000.0) == 0
    assert auto_tile(small_model(), 100, CPU_WHOLE_PIXELS // 100, 3, CPU, free=10**12, per_pixel=1000.0) == 0
    assert auto_tile(small_model(), 480, 854, 3, CPU, free=10**12, per_pixel=1000.0) == CPU_TILE_CAP
    big = side + 1

    class Cuda:
        type = "cuda"

    assert auto_tile(small_model(), 4 * big, 4 * big, 3, Cuda(), free=10**12, per_pixel=1000.0) == 0


def test_auto_tile_does_not_cap_an_onnxruntime_graph() -> None:
    """Through onnxruntime a whole pass was faster than 384 tiles (docs/BENCHMARKS.md): only the
    memory budget tiles a graph, while a torch module on the same image is capped."""
    from superres.speed import CPU_TILE_CAP

    class Graph:  # what auto_tile sees of an OnnxModel: not an nn.Module
        scale, in_channels = 4, 3

    big = 3 * CPU_TILE_CAP
    assert auto_tile(Graph(), big, big, 3, CPU, free=10**12, per_pixel=1000.0) == 0
    assert auto_tile(small_model(), big, big, 3, CPU, free=10**12, per_pixel=1000.0) == CPU_TILE_CAP
    free, overlap = 4 * 200 * 200 * 1000, 16  # the budget still applies: 200 x 200 px of tile
    assert auto_tile(Graph(), big, big, 3, CPU, tile_overlap=overlap, free=free, per_pixel=1000.0) == 200 - 2 * overlap


def test_bytes_per_input_pixel_grows_with_the_widest_layer() -> None:
    narrow = bytes_per_input_pixel(small_model(), 3)
    wide = small_model()
    wide[2] = torch.nn.Conv2d(8, 64, 3, padding=1)
    wide[4] = torch.nn.Conv2d(64, 12, 3, padding=1)
    assert bytes_per_input_pixel(wide, 3) > narrow > 0


@pytest.mark.slow
def test_upscale_files_tile_auto_equals_untiled_and_shows_tile_progress(tmp_path: Path, monkeypatch, capsys) -> None:
    import superres.inference
    from superres.inference import upscale
    from superres.io import Image, read_image, write_image

    net = small_model()
    rng = np.random.default_rng(0)
    write_image(tmp_path / "a.png", Image(data=rng.random((90, 70, 3), dtype=np.float32), alpha=None, bit_depth=8, path=None))
    monkeypatch.setattr(superres.inference, "load_for_backend", lambda *a, **k: net)
    # A budget so small that auto tiling cuts the 90x70 image into 64-pixel cores.
    monkeypatch.setattr(superres.speed, "available_memory", lambda device: 1000)
    chosen = []
    real_upscale = superres.inference.upscale

    def spy(*args, **kwargs):
        chosen.append(kwargs["tile"])
        return real_upscale(*args, **kwargs)

    monkeypatch.setattr(superres.inference, "upscale", spy)
    superres.inference.upscale_files([tmp_path / "a.png"], model="x", out_dir=tmp_path / "out", precision="fp32",
                                     progress=True)
    assert chosen == [MIN_AUTO_TILE]
    assert "tiles" in capsys.readouterr().err  # per-tile progress for a single image of a few tiles
    tiled = read_image(tmp_path / "out" / "a.png").data
    whole = upscale(net, read_image(tmp_path / "a.png"), tile=0).data
    assert np.abs(tiled - whole).max() <= 1 / 255 + 1e-6  # both rounded to 8 bits
    x = torch.rand(1, 3, 90, 70)
    assert torch.allclose(superres.inference.upscale_tensor(net, x, tile=MIN_AUTO_TILE), superres.inference.upscale_tensor(net, x), atol=1e-4)


ENTRIES = [
    {"name": "big", "shipped": True, "scale": 4, "psnr_y": 31.85},
    {"name": "mid", "shipped": True, "scale": 4, "psnr_y": 31.78},
    {"name": "small", "shipped": True, "scale": 4, "psnr_y": 31.04},
    {"name": "unmeasured", "shipped": True, "scale": 4, "psnr_y": 32.5},
    {"name": "x2", "shipped": True, "scale": 2, "psnr_y": 37.0},
]
PROFILE = {
    "cpu": "Test CPU",
    "threads": 1,
    "models": {
        "big": {"ms_per_mp": {"fp32": 5400.0, "bf16": 2300.0}},
        "mid": {"ms_per_mp": {"fp32": 2300.0, "bf16": 900.0}},
        "small": {"ms_per_mp": {"fp32": 56.0, "bf16": 40.0}},
    },
}


def choose(budget=None, precision="bf16", device=CPU):
    return choose_default_model(device, budget_ms=budget, entries=ENTRIES, profile=PROFILE, precision_for=lambda n: precision)


def test_default_model_is_the_best_within_the_budget() -> None:
    name, why = choose()
    assert name == "mid" and CPU_BUDGET_MS_PER_MP >= 900.0
    assert "900 ms/MP in bf16" in why and "Test CPU" in why and "--model" in why and "\n" not in why
    assert choose(precision="fp32")[0] == "small"  # without bf16 'mid' takes 2300 ms/MP
    assert choose(budget=10_000)[0] == "big"  # the unmeasured model never counts as fitting


def test_a_budget_exactly_at_a_model_s_speed_fits() -> None:
    assert choose(budget=900.0)[0] == "mid"
    assert choose(budget=899.9)[0] == "small"


def test_nothing_fits_takes_the_fastest_and_gpu_takes_the_best() -> None:
    assert choose(budget=1.0)[0] == "small"

    class Cuda:
        type = "cuda"

    assert choose(device=Cuda())[0] == "unmeasured"


def test_no_shipped_model_is_an_error() -> None:
    with pytest.raises(SuperresError, match="no pretrained model is shipped yet"):
        choose_default_model(CPU, entries=[], profile=PROFILE)


@pytest.mark.slow
def test_the_shipped_default_on_this_machine_fits_the_budget() -> None:
    name, why = choose_default_model(CPU)
    models = superres.precision.load_profile()["models"]
    assert name in models and why.startswith(f"model: {name} ")


@pytest.mark.parametrize("tile, batch", [(0, 4), (16, 1), (16, 3), (23, 8)])
def test_batched_tiles_equal_the_per_tile_loop(tile: int, batch: int) -> None:
    from superres.inference import upscale_tensor

    net = small_model()
    x = torch.rand(2, 3, 57, 41, generator=torch.Generator().manual_seed(1))
    want = upscale_tensor(net, x, tile=tile, tile_overlap=6)
    got = upscale_tensor(net, x, tile=tile, tile_overlap=6, batch=batch)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5)
    assert torch.allclose(got, upscale_tensor(net, x, tile=0), atol=1e-4)  # exact tiling (radius 3 <= 6/2)


def test_batched_tiles_batch_the_equal_shapes() -> None:
    from superres.inference import upscale_tensor

    net = small_model()
    calls = []
    net.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    upscale_tensor(net, torch.rand(1, 3, 64, 64), tile=16, tile_overlap=4, batch=4)
    # 4 x 4 tiles in 4 shapes (corners 20x20, top/bottom 20x24, left/right 24x20, interior 24x24), 4 of each
    assert sorted(shape[0] for shape in calls) == [4, 4, 4, 4]


def test_batched_tiles_split_a_shape_group_into_calls_of_at_most_batch() -> None:
    from superres.inference import upscale_tensor

    net = small_model()
    calls = []
    net.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    upscale_tensor(net, torch.rand(1, 3, 64, 64), tile=16, tile_overlap=4, batch=3)
    assert sorted(calls) == [1, 1, 1, 1, 3, 3, 3, 3]  # each group of 4 equal shapes: 3 + 1
    calls.clear()
    upscale_tensor(net, torch.rand(1, 3, 64, 64), tile=16, tile_overlap=4)
    assert calls == [1] * 16
    with pytest.raises(SuperresError, match="batch 0"):
        upscale_tensor(net, torch.rand(1, 3, 64, 64), tile=16, batch=0)


class FakeCuda:
    type = "cuda"


def test_tile_batch_fills_the_gpu_budget_and_stays_1_on_the_cpu() -> None:
    from superres.speed import GPU_FRACTION, MAX_TILE_BATCH, tile_batch

    per_pixel, overlap, tile = 1000.0, 16, 96
    each = (tile + 2 * overlap) ** 2 * per_pixel
    free = int(3 * each / GPU_FRACTION)  # exactly three tiles' worth of budget
    assert tile_batch(small_model(), tile, 3, FakeCuda(), tile_overlap=overlap, free=free, per_pixel=per_pixel) == 3
    assert tile_batch(small_model(), tile, 3, FakeCuda(), tile_overlap=overlap, free=free - 2, per_pixel=per_pixel) == 2
    assert tile_batch(small_model(), tile, 3, FakeCuda(), tile_overlap=overlap, free=1, per_pixel=per_pixel) == 1
    assert tile_batch(small_model(), tile, 3, FakeCuda(), tile_overlap=overlap, free=10**15,
                      per_pixel=per_pixel) == MAX_TILE_BATCH
    assert tile_batch(small_model(), 0, 3, FakeCuda(), free=10**15, per_pixel=per_pixel) == 1  # one pass
    assert tile_batch(small_model(), tile, 3, CPU, free=10**15, per_pixel=per_pixel) == 1


def test_tiles_go_in_channels_last_on_the_cpu_and_under_reduced_precision_on_cuda() -> None:
    from superres.inference import tile_layout

    assert tile_layout(CPU, "fp32") == torch.channels_last
    assert tile_layout(FakeCuda(), "fp32") == torch.contiguous_format
    assert tile_layout(FakeCuda(), "bf16") == torch.channels_last
    assert tile_layout(FakeCuda(), "fp16") == torch.channels_last

    class Mps:
        type = "mps"

    assert tile_layout(Mps(), "fp16") == torch.contiguous_format
