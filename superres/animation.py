"""Animated GIF and WebP through ``superres upscale``: every frame upscaled with its alpha, each
frame's duration and the loop count kept (Pillow). A ``.gif`` always goes this way, so a GIF in
gives a GIF out; a WebP only when it has more than one frame.

The model call is passed in (``superres.inference`` binds its ``upscale`` to the model and the
options), so this module sits below :mod:`superres.inference` in the package's layers.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from superres.errors import SuperresError
from superres.io import Image, _check_pixels, atomic_write
from superres.outputs import resize_image

if TYPE_CHECKING:
    from superres.outputs import OutputSize

__all__ = ["is_animation", "upscale_animation"]


def is_animation(path: Path) -> bool:
    """A GIF (any: a GIF is written back as a GIF), or a WebP with more than one frame."""
    suffix = Path(path).suffix.lower()
    if suffix == ".gif":
        return True
    if suffix != ".webp":
        return False
    from PIL import Image as PILImage

    try:
        with PILImage.open(path) as im:
            return int(getattr(im, "n_frames", 1)) > 1
    except Exception:  # noqa: BLE001 - not readable: the image reader names it
        return False


def upscale_animation(upscale: Callable[[Any], Any], scale: int, src: Path, dst: Path, *,
                      output_size: "OutputSize") -> None:
    """Upscale every frame of a GIF or animated WebP into ``dst`` (``.gif`` or ``.webp``), keeping
    each frame's duration, the loop count and transparency. ``upscale`` maps a
    :class:`superres.io.Image` to the model's result at ``scale`` (``superres.inference`` passes
    its :func:`~superres.inference.upscale` with the model and options bound)."""
    from PIL import Image as PILImage
    from PIL import ImageSequence

    fmt = {".gif": "GIF", ".webp": "WEBP"}.get(dst.suffix.lower())
    if fmt is None:
        raise SuperresError(f"{dst}: an animation is written as .gif or .webp (use --ext auto, gif or webp)")
    limit = PILImage.MAX_IMAGE_PIXELS
    PILImage.MAX_IMAGE_PIXELS = None
    try:
        im = PILImage.open(src)
    except Exception as exc:  # noqa: BLE001
        raise SuperresError(f"{src}: cannot read image ({exc})") from None
    finally:
        PILImage.MAX_IMAGE_PIXELS = limit
    frames, durations = [], []
    with im:
        width, height = im.size
        _check_pixels(src, height, width, samples=height * width * int(getattr(im, "n_frames", 1)))
        loop = im.info.get("loop")
        out_h, out_w = output_size.target(height, width, scale, str(src))
        try:
            for frame in ImageSequence.Iterator(im):
                frame.load()  # WebP sets a frame's duration when it is decoded
                durations.append(int(frame.info.get("duration", im.info.get("duration", 100)) or 0))
                rgba = np.asarray(frame.convert("RGBA"), dtype=np.float32) / 255.0
                alpha = rgba[:, :, 3:]
                has_alpha = bool((alpha < 1).any())
                result = upscale(Image(rgba[:, :, :3].copy(), alpha.copy() if has_alpha else None, 8, src))
                result = resize_image(result, (out_h, out_w))
                samples = result.to_integer(include_alpha=True)
                frames.append(PILImage.fromarray(samples if samples.shape[2] > 1 else samples[:, :, 0]))
        except SuperresError:
            raise
        except Exception as exc:  # noqa: BLE001 - a decoder error on a later frame
            raise SuperresError(f"{src}: cannot read frame {len(frames)} ({exc})") from None
    options: dict[str, Any] = {"save_all": True, "append_images": frames[1:], "duration": durations}
    if loop is not None:
        options["loop"] = int(loop)
    if fmt == "GIF":
        options["disposal"] = 2
    else:
        options.update(quality=95, method=4)
    with atomic_write(dst) as tmp:
        frames[0].save(tmp, format=fmt, **options)
