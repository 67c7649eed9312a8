"""ONNX export (`superres export`) and the onnx backend (`upscale`/`eval --backend onnx`).

The reference for every check is the PyTorch model itself: onnxruntime must reproduce it within
1e-4 on inputs of sizes other than the traced one, through the same tiling code.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="the onnx extra (onnx, onnxruntime) is not installed")
pytest.importorskip("onnxruntime", reason="the onnx extra (onnx, onnxruntime) is not installed")

import onnx  # noqa: E402

from superres.errors import SuperresError  # noqa: E402
from superres.export import OnnxModel, export_onnx, load_onnx  # noqa: E402
from superres.models import build  # noqa: E402

# Every registry architecture in a small configuration (the big presets only differ in depth/width).
SMALL = [
    ("baseline", 4, 3, {"channels": 8, "num_blocks": 1}),
    ("enhanced", 3, 3, {"channels": 8, "num_blocks": 2}),
    ("espcn", 2, 1, {"features": 8, "hidden": 8}),
    ("fsrcnn", 4, 1, {"d": 8, "s": 4, "m": 1}),
    ("edsr-baseline", 2, 3, {"blocks": 1, "channels": 8}),
    ("srresnet", 4, 3, {"channels": 8, "blocks": 1}),
    ("rcan-small", 2, 3, {"groups": 1, "blocks": 1, "channels": 16, "reduction": 4}),
]


def _model_file(tmp_path: Path, arch: str, scale: int, channels: int, opts: dict) -> Path:
    from superres.modelfile import save_model

    torch.manual_seed(0)
    net = build(arch, scale=scale, in_channels=channels, **opts)
    return save_model(tmp_path / f"{arch}_x{scale}.safetensors", net, arch=arch, args=opts)


@pytest.mark.parametrize("arch,scale,channels,opts", SMALL, ids=[s[0] for s in SMALL])
def test_export_agrees_with_pytorch_and_keeps_metadata(tmp_path: Path, arch: str, scale: int, channels: int, opts: dict) -> None:
    from superres.modelfile import load_model

    path = _model_file(tmp_path, arch, scale, channels, opts)
    result = export_onnx(path, tmp_path / "m.onnx")
    assert result.max_abs_diff_random < 1e-4 and result.max_abs_diff_image < 1e-4
    assert result.path.is_file() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []

    props = {p.key: p.value for p in onnx.load(str(result.path)).metadata_props}
    assert props["arch"] == arch and props["scale"] == str(scale) and props["in_channels"] == str(channels)
    assert props["value_range"] == "[0, 1]"

    # Dynamic batch/height/width: a shape never seen at export time, batch 3, against PyTorch.
    onnx_model = OnnxModel(result.path)
    net = load_model(path)
    x = torch.rand(3, channels, 19, 11, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = net(x)
    got = onnx_model(x)
    assert got.shape == (3, channels, 19 * scale, 11 * scale)
    assert float((got - want).abs().max()) < 1e-4


def test_onnx_backend_equals_torch_backend_with_tiling(tmp_path: Path) -> None:
    from superres.inference import upscale
    from superres.modelfile import load_model

    path = _model_file(tmp_path, "enhanced", 2, 3, {"channels": 8, "num_blocks": 1})
    onnx_model = load_onnx(path)  # exported on the fly from the .safetensors file
    image = np.random.default_rng(0).random((45, 37, 3), dtype=np.float32)
    # tile 16 with overlap 6: a 3x3 grid of tiles of different shapes, cross-faded.
    want = upscale(load_model(path), image, tile=16, tile_overlap=6)
    got = upscale(onnx_model, image, tile=16, tile_overlap=6)
    assert got.shape == want.shape == (90, 74, 3)
    assert float(np.abs(got - want).max()) < 1e-4
    # A Y model on RGB (Y through onnxruntime, chroma bicubic), tiled too.
    ypath = _model_file(tmp_path, "fsrcnn", 3, 1, {"d": 8, "s": 4, "m": 1})
    want_y = upscale(load_model(ypath), image, tile=20, tile_overlap=8)
    got_y = upscale(str(export_onnx(ypath, tmp_path / "y.onnx").path), image, tile=20, tile_overlap=8)
    assert float(np.abs(got_y - want_y).max()) < 1e-4


def test_upscale_files_and_eval_accept_the_onnx_backend(tmp_path: Path) -> None:
    from superres.evaluate import evaluate
    from superres.inference import upscale_files
    from superres.io import Image, read_array, write_image

    path = _model_file(tmp_path, "espcn", 2, 1, {"features": 8, "hidden": 8})
    onnx_path = export_onnx(path, tmp_path / "espcn.onnx").path
    rng = np.random.default_rng(2)
    hr = tmp_path / "bench" / "HR"
    for i in range(2):
        write_image(hr / f"im{i}.png", Image(rng.random((24, 30, 3), dtype=np.float32), None, 8))
    common = dict(out_dir=tmp_path / "t", tile=8, tile_overlap=4, device="cpu", half=False, progress=False)
    torch_files = upscale_files([hr], model=str(path), backend="torch", **common)
    onnx_files = upscale_files([hr], model=str(onnx_path), backend="onnx", **{**common, "out_dir": tmp_path / "o"})
    for a, b in zip(torch_files, onnx_files):
        # Float outputs agree to 1e-4, so the 8-bit files differ at most where a value sits on a rounding tie.
        assert np.abs(read_array(a).astype(int) - read_array(b).astype(int)).max() <= 1

    ref = evaluate(str(path), tmp_path / "bench", scale=2, backend="torch")
    for model in (str(onnx_path), str(path)):  # an .onnx file, and a model file exported on the fly
        got = evaluate(model, tmp_path / "bench", scale=2, backend="onnx")
        assert abs(got["psnr_y"] - ref["psnr_y"]) < 1e-3


def test_failed_check_writes_nothing_and_options_are_checked(tmp_path: Path) -> None:
    path = _model_file(tmp_path, "fsrcnn", 2, 1, {"d": 8, "s": 4, "m": 1})
    out = tmp_path / "out" / "m.onnx"
    with pytest.raises(SuperresError, match="disagrees"):
        export_onnx(path, out, tolerance=-1.0)  # no difference can be below -1: the check must refuse
    assert not out.exists() and list(out.parent.iterdir()) == []
    with pytest.raises(SuperresError, match="--opset 9"):
        export_onnx(path, out, opset=9)
    with pytest.raises(SuperresError, match="--backend onnx"):
        from superres.inference import load_for_backend

        load_for_backend(str(tmp_path / "x.onnx"), backend="torch")
    bogus = tmp_path / "plain.onnx"
    model = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["lr"], ["sr"])], "g",
        [onnx.helper.make_tensor_value_info("lr", onnx.TensorProto.FLOAT, None)],
        [onnx.helper.make_tensor_value_info("sr", onnx.TensorProto.FLOAT, None)]))
    onnx.save(model, str(bogus))
    with pytest.raises(SuperresError, match="not a superres ONNX export"):
        OnnxModel(bogus)


class _BranchOnWidth(torch.nn.Module):
    """Nearest x2 upscaling that adds 1 in PyTorch when the input is ``width`` pixels wide.

    The ``if`` is Python, so the exporter's trace (at a width of 28) bakes in the branch it took and
    the ONNX graph never adds 1: onnxruntime disagrees with PyTorch by exactly 1 on inputs of that
    width and agrees (nearest upscaling is a copy) on every other width."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.scale, self.in_channels, self.width = 2, 1, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        if x.shape[-1] == self.width:
            y = y + 1.0
        return y


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # the baked-in branch is the point
def test_the_check_refuses_when_either_half_fails(tmp_path: Path) -> None:
    """Both checks must pass (random input *and* the photo): one failing is enough to refuse.

    The random check input is 2 x 1 x 37 x 29 (``ExportResult.summary`` names it); the photo here is
    a 17 x 31 gray PNG. A model that is wrong only at width 29 fails the random half alone, one
    wrong only at width 31 the photo half alone, and one wrong at width 30 neither."""
    from superres.io import Image as SrImage, write_image

    photo = tmp_path / "photo.png"
    write_image(photo, SrImage(np.random.default_rng(0).random((17, 31), dtype=np.float32), None, 8))

    ok = export_onnx(_BranchOnWidth(30), tmp_path / "ok.onnx", check_image=photo)
    assert ok.max_abs_diff_random == 0.0 and ok.max_abs_diff_image == 0.0  # the model itself exports fine

    cases = {29: r"1\.00e\+00 on a random input, 0\.00e\+00 on", 31: r"0\.00e\+00 on a random input, 1\.00e\+00 on"}
    for width, figures in cases.items():
        out = tmp_path / f"w{width}" / "m.onnx"
        with pytest.raises(SuperresError, match=rf"disagrees with PyTorch \(max \|diff\| {figures}"):
            export_onnx(_BranchOnWidth(width), out, check_image=photo)
        assert not out.exists() and list(out.parent.iterdir()) == []


def test_cli_export_prints_the_agreement(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from superres.cli import main

    path = _model_file(tmp_path, "espcn", 3, 1, {"features": 8, "hidden": 8})
    assert main(["export", str(path), "--out", str(tmp_path / "e.onnx"), "--opset", "13"]) == 0
    text, err = capsys.readouterr()
    assert "max |diff|" in text and "opset 13" in text
    # a line on stderr as each step starts: the export, then the onnxruntime check
    steps = err.strip().splitlines()
    assert len(steps) == 2 and "exporting espcn x3 to ONNX (opset 13)" in steps[0] and "onnxruntime" in steps[1], err
    assert onnx.load(str(tmp_path / "e.onnx")).opset_import[0].version == 13
    assert main(["export", "no-such-model", "--out", str(tmp_path / "f.onnx")]) == 2


# --------------------------------------------------------------------------- band-split runs
def _graph(*nodes: onnx.NodeProto) -> onnx.GraphProto:
    return onnx.helper.make_graph(list(nodes), "g", [], [])


def _conv(kernel: int, dilation: int = 1, stride: int = 1) -> onnx.NodeProto:
    return onnx.helper.make_node("Conv", ["a", "w"], ["b"], kernel_shape=[kernel, kernel],
                                 dilations=[dilation, dilation], strides=[stride, stride])


def test_receptive_radius_adds_up_the_convolutions_and_refuses_what_it_cannot_bound() -> None:
    from superres.export import MAX_BAND_HALO, receptive_radius

    relu = onnx.helper.make_node("Relu", ["b"], ["c"])
    assert receptive_radius(_graph(_conv(3), relu, _conv(3), _conv(5))) == 1 + 1 + 2
    assert receptive_radius(_graph(_conv(3, dilation=2))) == 2
    assert receptive_radius(_graph(_conv(2))) == 1  # an even kernel reaches one pixel further on one side
    assert receptive_radius(_graph(relu)) == 0
    assert receptive_radius(_graph(_conv(3, stride=2))) is None
    for op in ("Resize", "MaxPool", "ConvTranspose", "GlobalAveragePool"):
        assert receptive_radius(_graph(_conv(3), onnx.helper.make_node(op, ["b"], ["c"]))) is None, op
    assert MAX_BAND_HALO >= 7  # the shipped compact models reach 6-7 input pixels


@pytest.mark.parametrize("name,halo", [("lumanet-x4", 6), ("lumanet-x4-deep-int8", 7)])
def test_two_threads_run_a_compact_model_in_bands_that_equal_one_whole_run(name: str, halo: int) -> None:
    from superres.export import MIN_BAND_ROWS

    one, two = load_onnx(name, threads=1), load_onnx(name, threads=2)
    assert not one.banded and two.banded and two.halo == halo
    two._load, two.active_threads = None, 2  # both cores free, whatever the machine runs beside the test
    generator = torch.Generator().manual_seed(3)
    # at the limit (exactly MIN_BAND_ROWS rows per band), one row short of it (whole run), odd sizes,
    # and two bands per thread
    for rows in (2 * MIN_BAND_ROWS, 2 * MIN_BAND_ROWS - 1, 301):
        x = torch.rand(2, 3, rows, 37, generator=generator)
        assert torch.equal(one(x), two(x)), rows
    # the bands write N x H x W x C memory: the H x W x C image upscale makes next is a view
    assert two(x).is_contiguous(memory_format=torch.channels_last)
    two.bands_per_thread = 2
    x = torch.rand(1, 3, 4 * MIN_BAND_ROWS + 5, 20, generator=generator)
    assert torch.equal(one(x), two(x))


def test_a_short_input_runs_in_as_many_bands_as_it_has_rows_for(monkeypatch) -> None:
    """With four threads, an input of three bands' worth of rows runs in three bands, not whole; the
    bands in use bound it too."""
    from superres.export import MIN_BAND_ROWS

    four, whole = load_onnx("lumanet-x4", threads=4), load_onnx("lumanet-x4", threads=1)
    assert four.banded
    runs: list[int] = []
    real = four._run_bands
    monkeypatch.setattr(four, "_run_bands", lambda array, threads: runs.append(threads) or real(array, threads))
    four._load = None
    generator = torch.Generator().manual_seed(5)
    for active, rows, bands in ((4, 3 * MIN_BAND_ROWS, 3), (4, 3 * MIN_BAND_ROWS - 1, 2), (2, 3 * MIN_BAND_ROWS, 2),
                                (4, 2 * MIN_BAND_ROWS - 1, 1), (1, 3 * MIN_BAND_ROWS, 1)):
        four.active_threads = active
        x = torch.rand(1, 3, rows, 16, generator=generator)
        before = len(runs)
        assert torch.equal(four(x), whole(x)), (active, rows)
        assert (runs[-1] if len(runs) > before else 1) == bands, (active, rows)


class _FixedLoad:
    """An OtherLoad stand-in that reports the next figure of a list (None: the window is still open)."""

    def __init__(self, figures):
        self.figures = list(figures)

    def poll(self):
        return self.figures.pop(0)


def test_bands_follow_the_cores_that_other_processes_leave_free(monkeypatch) -> None:
    """Two bands while at least 1.5 CPUs are free (of 2), one whole one-thread run below that; a window
    still open keeps the last choice."""
    import superres.export

    model = load_onnx("lumanet-x4", threads=2)
    assert model.banded
    monkeypatch.setattr(superres.export.os, "cpu_count", lambda: 2)
    runs: list[int] = []
    real = model._run_bands
    monkeypatch.setattr(model, "_run_bands", lambda array, threads: runs.append(threads) or real(array, threads))
    whole = load_onnx("lumanet-x4", threads=1)
    x = torch.rand(1, 3, 2 * superres.export.MIN_BAND_ROWS, 16, generator=torch.Generator().manual_seed(0))
    expected = whole(x)
    # other processes' CPUs per window: idle, exactly at the limit, just over it, window open, busy, idle
    model._load = _FixedLoad([0.0, 0.5, 0.51, None, 1.0, 0.2])
    used = []
    for _ in range(6):
        before = len(runs)
        assert torch.equal(model(x), expected)
        used.append(runs[-1] if len(runs) > before else 1)
    assert used == [2, 2, 1, 1, 1, 2]
    assert model.active_threads == 2


def test_a_graph_whose_bands_disagree_with_the_whole_keeps_onnxruntimes_pool(tmp_path: Path) -> None:
    """A global sum passes the operator check (radius 0), but the probe run catches it."""
    from superres.export import INPUT_NAME, OUTPUT_NAME

    class Global(torch.nn.Module):
        def forward(self, x):
            return x.repeat_interleave(2, 2).repeat_interleave(2, 3) + x.sum(dim=(2, 3), keepdim=True) * 1e-3

    path = tmp_path / "global.onnx"
    with warnings.catch_warnings():  # the TorchScript exporter's deprecation notes (export_onnx does the same)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(Global(), (torch.rand(1, 3, 8, 8),), str(path), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "n", 2: "h", 3: "w"}}, dynamo=False)
    graph = onnx.load(str(path))
    onnx.helper.set_model_props(graph, {"scale": "2", "in_channels": "3"})
    onnx.save(graph, str(path))
    ops = {node.op_type for node in graph.graph.node}
    assert "ReduceSum" in ops, ops
    model = OnnxModel(path, threads=2)
    assert not model.banded
    x = torch.rand(1, 3, 200, 20)
    assert torch.allclose(model(x), OnnxModel(path, threads=1)(x))


def test_run_uint8_gives_the_float_path_samples_bit_for_bit_whole_and_in_bands() -> None:
    """The 8-bit graph is the float graph + ``to_integer`` of its clipped output, op for op; in bands
    too (at the smallest banded height, one row short of it, an odd height)."""
    from superres.export import MIN_BAND_ROWS
    from superres.inference import upscale
    from superres.io import to_float, to_integer

    one, two = load_onnx("lumanet-x4", threads=1), load_onnx("lumanet-x4", threads=2)
    two._load, two.active_threads = None, 2
    runs: list[int] = []
    real = two._run_bands
    two._run_bands = lambda array, threads, **kw: runs.append(threads) or real(array, threads, **kw)
    rng = np.random.default_rng(4)
    for rows in (2 * MIN_BAND_ROWS, 2 * MIN_BAND_ROWS - 1, 141):
        pixels = rng.integers(0, 256, (rows, 37, 3), dtype=np.uint8)
        want = to_integer(upscale(one, to_float(pixels), tile=0), 8)
        for model in (one, two):
            got = model.run_uint8(pixels)
            assert got.dtype == np.uint8 and np.array_equal(got, want), rows
    assert runs == [2, 2]  # the two heights of at least 2 x MIN_BAND_ROWS ran in two bands
    with pytest.raises(ValueError, match="uint8"):
        one.run_uint8(np.zeros((8, 8, 3), np.uint16))


def test_superres_upscale_runs_8_bit_rgb_through_the_uint8_graph(tmp_path: Path, monkeypatch) -> None:
    """``--backend onnx`` on 8-bit RGB(A) in one pass: the 8-bit graph, the same file bytes' samples
    as the float path; 16-bit, tiled or resized outputs keep the float path."""
    from superres.export import OnnxModel
    from superres.inference import upscale, upscale_files
    from superres.io import Image, read_raw, to_integer, write_image
    from superres.outputs import OutputSize

    calls: list[tuple] = []
    real = OnnxModel.run_uint8
    monkeypatch.setattr(OnnxModel, "run_uint8", lambda self, pixels: calls.append(pixels.shape) or real(self, pixels))
    rng = np.random.default_rng(6)
    src = tmp_path / "in"
    rgb = rng.random((30, 26, 3), dtype=np.float32)
    alpha = rng.random((30, 26, 1), dtype=np.float32)
    write_image(src / "rgb8.png", Image(rgb, None, 8))
    write_image(src / "rgba8.png", Image(rgb, alpha, 8))
    write_image(src / "rgb16.png", Image(rgb, None, 16))
    common = dict(model="lumanet-x4", backend="onnx", device="cpu", half=False, progress=False, tile="auto")
    upscale_files([src], out_dir=tmp_path / "out", **common)
    assert sorted(calls) == [(30, 26, 3), (30, 26, 3)]  # the two 8-bit files, not the 16-bit one

    net = load_onnx("lumanet-x4", threads=1)
    for name in ("rgb8.png", "rgba8.png"):
        source = read_raw(src / name)
        image = Image(source.pixels.astype(np.float32) / 255, None if source.alpha is None else
                      source.alpha.astype(np.float32) / 255, 8)
        want = upscale(net, image, tile=0)
        got = read_raw(tmp_path / "out" / name)
        assert np.array_equal(got.pixels, to_integer(want.data, 8)), name
        if source.alpha is not None:
            assert np.array_equal(got.alpha, to_integer(want.alpha, 8))
    calls.clear()
    upscale_files([src / "rgb8.png"], out_dir=tmp_path / "tiled", **{**common, "tile": 16})
    upscale_files([src / "rgb8.png"], out_dir=tmp_path / "resized", output_size=OutputSize(outscale=2.0), **common)
    assert calls == []


@pytest.mark.parametrize("threads", [1, 2])
def test_a_damaged_onnx_file_is_one_error_naming_it(tmp_path: Path, threads: int) -> None:
    """Two threads parse the graph for bands before onnxruntime loads it: either way, one
    ``SuperresError`` naming the file (``superres upscale`` prints it as one line, exit 2)."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    with pytest.raises(SuperresError, match="bad.onnx: "):
        OnnxModel(bad, threads=threads)
