"""Peer models: loaded correctly means they reproduce the published/sanity scores of ../shared/peers/SOURCES.md
under our protocol (scored by superres.evaluate, as the benchmark does)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from superres.errors import SuperresError
from superres.evaluate import evaluate
from superres.peers import find_peers, opencv_available, opencv_peer, yjn870_peer


@pytest.fixture(scope="module")
def peers_dir(shared_data: Path) -> Path:
    folder = shared_data.parent / "peers"
    if not (folder / "yjn870-pr6_fsrcnn_x4.pth").is_file():
        pytest.skip(f"{folder}: the peer weights are not present")
    return folder


def _score(peer, data: Path, scale: int) -> float:
    return evaluate(peer.name, data, scale=scale, upscaler=lambda lr, bits: peer.upscale(lr))["psnr_y"]


def test_yjn870_fsrcnn_x4_reproduces_the_sanity_score(peers_dir: Path, shared_data: Path) -> None:
    peer = yjn870_peer(peers_dir / "yjn870-pr6_fsrcnn_x4.pth")
    assert peer.scale == 4 and peer.params == 12_809  # FSRCNN(56, 12, 4): 12,464 weights + 173 biases + 172 slopes
    # SOURCES.md sanity table: 30.52 dB on Set5 x4 (Set5 has no gray image, so it is directly comparable).
    assert abs(_score(peer, shared_data / "Set5", 4) - 30.52) < 0.05


def test_opencv_fsrcnn_graph_loads_runs_and_scores_near_its_sanity_value(peers_dir: Path, shared_data: Path) -> None:
    reason = opencv_available()
    if reason is not None:
        pytest.skip(reason)
    peer = opencv_peer(peers_dir / "FSRCNN_x4.pb", threads=1)
    rgb = (np.random.default_rng(0).random((10, 12, 3)) * 255).astype(np.uint8)
    out = peer.upscale(rgb)
    assert out.shape == (40, 48, 3) and out.dtype == np.uint8
    gray = peer.upscale(rgb[:, :, 0])
    assert gray.shape == (40, 48) and gray.dtype == np.uint8
    assert abs(_score(peer, shared_data / "Set5", 4) - 28.41) < 0.05


def test_find_peers_lists_what_exists_per_scale(peers_dir: Path) -> None:
    found, notes = find_peers(peers_dir, 3, threads=1)
    names = [p.name for p in found]
    assert "yjn870 FSRCNN (.pth, PR #6)" in names
    if opencv_available() is None:
        # LapSRN has no x3 graph; ESPCN, FSRCNN and FSRCNN-small do.
        assert sum(n.startswith("OpenCV") for n in names) == 3 and not any("LapSRN" in n for n in names)
    else:
        assert notes and "OpenCV" in notes[0]
    assert all(p.scale == 3 for p in found)


def test_peer_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(SuperresError, match="peers folder not found"):
        find_peers(tmp_path / "missing", 4)
    bad = tmp_path / "weights.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SuperresError, match="weights.pth"):
        yjn870_peer(bad)
    with pytest.raises(SuperresError, match="_x<scale>|not an OpenCV|OpenCV is not installed|dnn_superres"):
        opencv_peer(tmp_path / "Something.pb")
