"""``superres export --io uint8``: 8-bit NHWC images in and out, the conversions inside the graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


def test_uint8_graph_matches_the_pipeline(tmp_path: Path) -> None:
    from skimage import data as samples

    from superres.export import UINT8_INPUT, UINT8_OUTPUT, _ort, _session
    from superres.graphio import export_uint8_onnx
    from superres.inference import load_for_backend, upscale
    from superres.io import to_float, to_integer

    info = export_uint8_onnx("lumanet-x4", tmp_path / "m.onnx")
    assert info["max_level_diff"] == 0
    session = _session(_ort(), tmp_path / "m.onnx", threads=1)
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, out.name, out.type) == (UINT8_INPUT, "tensor(uint8)", UINT8_OUTPUT, "tensor(uint8)")
    lr = samples.astronaut()[100:140, 200:236].copy()
    got = session.run([UINT8_OUTPUT], {UINT8_INPUT: lr[None]})[0][0]
    want = to_integer(upscale(load_for_backend("lumanet-x4", backend="onnx"), to_float(lr), tile=0), 8)
    assert got.shape == want.shape == (160, 144, 3) and got.dtype == np.uint8
    assert np.array_equal(got, want)  # the float pipeline's conversions, op for op


def test_uint8_graph_is_refused_for_a_y_model(tmp_path: Path) -> None:
    from superres.errors import SuperresError
    from superres.graphio import export_uint8_onnx
    from superres.models import build

    net = build("espcn", scale=2, in_channels=1).eval()
    with pytest.raises(SuperresError, match="--io uint8: .* takes 1 channel"):
        export_uint8_onnx(net, tmp_path / "y.onnx")
    assert not (tmp_path / "y.onnx").exists()


def test_cli_export_io_uint8(tmp_path: Path, capsys) -> None:
    from superres.cli import main

    assert main(["export", "lumanet-x4", "--out", str(tmp_path / "m.onnx"), "--io", "uint8"]) == 0
    out, err = capsys.readouterr()
    assert "lr_u8 -> sr_u8" in out
    assert "exporting" in err and "uint8" in err.strip().splitlines()[-1], err
