"""Scientific images end to end: 16-bit single-channel and 4-band uint16 TIFFs.

From real sample images (scikit-image's bundled photos) this builds truly 16-bit data (the 8-bit
values times 257 plus a smooth field, so the low byte carries information), then trains a tiny model
on each kind through :func:`superres.training.train`, scores it with
:func:`superres.evaluate.evaluate` and upscales the files with :func:`superres.inference.upscale_files`.

The expected PSNR is computed here independently, straight from the definition on the 16-bit scale:
``10 log10(65535^2 / MSE)`` over the shaved uint16 arrays (all bands; gray intensity), so a
metric that used the 8-bit peak on 16-bit values, or dropped a band, would be caught.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

SCALE = 2


def to_16bit(gray8: np.ndarray, phase: float) -> np.ndarray:
    """8-bit samples spread to 16 bits with a smooth, sub-8-bit-level variation (+-200 of 65535)."""
    h, w = gray8.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    field = 200.0 * np.sin(xx / 13.0 + phase) * np.cos(yy / 17.0 - phase)
    return np.clip(gray8.astype(np.float64) * 257.0 + field, 0, 65535).round().astype(np.uint16)


def sample_gray(name: str, size: int) -> np.ndarray:
    import skimage.data

    image = np.asarray(getattr(skimage.data, name)())
    if image.ndim == 3:
        image = image[:, :, 1]  # green: the informative channel of a fundus photo
    y0, x0 = (image.shape[0] - size) // 2, (image.shape[1] - size) // 2
    return image[y0 : y0 + size, x0 : x0 + size]


@pytest.fixture(scope="module")
def datasets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scientific")
    gray_names = ["camera", "moon", "retina", "microaneurysms", "coins"]
    gray = {n: to_16bit(sample_gray(n, 96), k) for k, n in enumerate(gray_names)}
    # 4 bands: three colour bands of a photo and a fourth from another image (a "NIR" band).
    import skimage.data

    rgb = skimage.data.astronaut()[100:196, 200:296]
    bands = {
        f"scene{k}": np.stack(
            [to_16bit(rgb[:, :, c] if k == 0 else np.rot90(rgb[:, :, c], k), c + k) for c in range(3)]
            + [to_16bit(sample_gray(gray_names[k], 96), 5.0)],
            axis=2,
        )
        for k in range(3)
    }
    for kind, images in (("gray16", gray), ("bands16", bands)):
        names = sorted(images)
        for n in names:  # the last two are held out as the benchmark (HR only: LR made by evaluate)
            folder = root / kind / ("bench/HR" if n in names[-2:] else "train")
            folder.mkdir(parents=True, exist_ok=True)
            # Bands as bands (minisblack, contiguous), not RGB + alpha, as multispectral files store them.
            tifffile.imwrite(folder / f"{n}.tif", images[n], photometric="minisblack", planarconfig="contig")
    for image in list(gray.values()) + list(bands.values()):
        assert np.any(image % 257)  # truly 16-bit: not 8-bit values times 257
    return {"root": root}


def train_tiny(root: Path, kind: str, in_channels: int) -> Path:
    from superres.config import config_from_dict
    from superres.training import train

    config = config_from_dict({
        "name": f"tiny_{kind}",
        "model": {"name": "enhanced", "scale": SCALE, "in_channels": in_channels,
                  "options": {"channels": 8, "num_blocks": 1}},
        "data": {"train": [str(root / kind / "train")], "patch_size": 32, "batch_size": 4,
                 "val": str(root / kind / "bench")},
        "train": {"iterations": 4, "ema": None, "device": "cpu", "val_every": 4, "save_every": 4, "log_every": 2},
    })
    return train(config, run_dir=root / kind / "run")


def psnr16(sr: np.ndarray, hr: np.ndarray, shave: int) -> float:
    """PSNR on the 16-bit scale over all channels, from the definition."""
    a = sr[shave:-shave, shave:-shave].astype(np.float64)
    b = hr[shave:-shave, shave:-shave].astype(np.float64)
    return float(10.0 * np.log10(65535.0**2 / np.mean((a - b) ** 2)))


@pytest.mark.parametrize("kind,channels", [("gray16", 1), ("bands16", 4)])
def test_train_evaluate_upscale_16bit(datasets: dict[str, Path], kind: str, channels: int) -> None:
    from superres.evaluate import evaluate
    from superres.inference import upscale, upscale_files
    from superres.modelfile import load_model
    from superres.resize import imresize, modcrop

    root = datasets["root"]
    model_path = train_tiny(root, kind, channels)
    model = load_model(str(model_path))
    assert model.in_channels == channels

    bench = root / kind / "bench"
    report = evaluate(str(model_path), bench, scale=SCALE)
    bicubic = evaluate("bicubic", bench, scale=SCALE)
    assert report["count"] == 2
    for entry, bic in zip(report["images"], bicubic["images"]):
        hr = tifffile.imread(bench / "HR" / f"{entry['name']}.tif")
        hr = modcrop(hr if hr.ndim == 3 else hr[:, :, None], SCALE)
        lr = imresize(hr, scale=1.0 / SCALE)  # uint16 in, uint16 out (MATLAB per-pass rounding)
        assert lr.dtype == np.uint16
        sr = upscale(model, lr.astype(np.float32) / 65535.0, tile=0)
        sr16 = np.floor(sr.astype(np.float64) * 65535.0 + 0.5).astype(np.uint16)
        # 1e-3 dB: a repeated CPU forward pass may round one output level differently (oneDNN threads).
        assert entry["psnr_y"] == pytest.approx(psnr16(sr16, hr, SCALE), abs=1e-3)
        assert bic["psnr_y"] == pytest.approx(psnr16(imresize(lr, scale=SCALE), hr, SCALE), abs=1e-6)

    out = root / kind / "upscaled"
    written = upscale_files([bench / "HR"], model=str(model_path), out_dir=out, tile=40, tile_overlap=8,
                            device="cpu", half=False, backend="torch", progress=False)
    assert len(written) == 2
    for path in written:
        src = tifffile.imread(bench / "HR" / path.name)
        result = tifffile.imread(path)
        assert result.dtype == np.uint16
        assert result.shape[:2] == (src.shape[0] * SCALE, src.shape[1] * SCALE)
        assert (result.shape[2] if result.ndim == 3 else 1) == channels
        assert np.any(result % 257)  # 16-bit output, not 8-bit values stretched
