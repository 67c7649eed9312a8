"""BT.601 studio-swing colour: the Y that every PSNR-Y / SSIM-Y is computed on, and YCbCr.

The coefficients are those of ITU-R BT.601 as MATLAB's ``rgb2ycbcr`` uses them, for RGB in
``[0, 1]``: ``Y = 16 + 65.481 R + 128.553 G + 24.966 B`` (16..235), ``Cb`` and ``Cr`` centred on
128 (16..240). Metrics, losses, Y-channel models and inference all read them from here, so the Y a
model is trained on is the Y it is scored on.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "Y_OFFSET",
    "Y_COEFFS",
    "CB_COEFFS",
    "CR_COEFFS",
    "CHROMA_OFFSET",
    "ycbcr_matrix",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
]

#: BT.601 studio-swing luma for R, G, B in [0, 1]: Y = Y_OFFSET + sum(Y_COEFFS * RGB), Y in 16..235.
Y_OFFSET = 16.0
Y_COEFFS = (65.481, 128.553, 24.966)
#: Chroma rows for R, G, B in [0, 1]: Cb = 128 + row . RGB, Cr = 128 + row . RGB, both in 16..240.
CB_COEFFS = (-37.797, -74.203, 112.0)
CR_COEFFS = (112.0, -93.786, -18.214)
CHROMA_OFFSET = 128.0


def ycbcr_matrix() -> tuple[np.ndarray, np.ndarray]:
    """Forward BT.601 studio-swing matrix (3x3, RGB in [0, 1] -> YCbCr in 0..255) and offsets (3,),
    both float64."""
    matrix = np.array([Y_COEFFS, CB_COEFFS, CR_COEFFS], dtype=np.float64)
    offset = np.array([Y_OFFSET, CHROMA_OFFSET, CHROMA_OFFSET], dtype=np.float64)
    return matrix, offset


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """``H x W x 3`` RGB in [0, 1] -> YCbCr of BT.601 studio swing divided by 255 (float64).

    Y is then in ``[16/255, 235/255]``, which is what MATLAB's ``rgb2ycbcr`` returns for double
    images and the input range of Y-channel models such as FSRCNN and ESPCN.
    """
    matrix, offset = ycbcr_matrix()
    return (rgb.astype(np.float64) @ matrix.T + offset) / 255.0


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Inverse of :func:`rgb_to_ycbcr` (the matrix inverse, computed, not a rounded table)."""
    matrix, offset = ycbcr_matrix()
    return (ycc.astype(np.float64) * 255.0 - offset) @ np.linalg.inv(matrix).T
