"""What ``superres upscale`` writes: output names (``--suffix``, ``--ext``), the output size
(``--outscale``, ``--size``, ``--width``), a failing file reported and skipped, and the split of a
job between ``torchrun`` ranks.

The model runs at its own integer scale; a requested output size is then reached with the
project's MATLAB-exact bicubic :func:`superres.resize.imresize` (antialiased when going down), on
the result and its alpha alike.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from superres.errors import SuperresError
from superres.io import Image
from superres.resize import imresize

__all__ = [
    "OUTPUT_EXTS",
    "OutputSize",
    "rename_outputs",
    "check_destinations",
    "parse_size",
    "rank_and_world",
    "rank_device",
    "shard",
    "recorded",
    "BackgroundWriter",
    "finish",
    "resize_image",
]

#: ``--ext`` choices: ``auto`` keeps each input's format.
OUTPUT_EXTS = ("auto", "png", "jpg", "webp", "tif")

#: The largest ``--outscale`` accepted (a 1 MP photo becomes 256 MP at 16).
MAX_OUTSCALE = 16.0


# --------------------------------------------------------------------------- names
def rename_outputs(pairs: Sequence[tuple[Path, Path]], *, suffix: str = "", ext: str = "auto") -> list[tuple[Path, Path]]:
    """``(source, destination)`` pairs with ``suffix`` added to each destination's stem and its
    extension replaced by ``ext`` (``auto``: kept). Refuses a suffix that is a path, and, before
    anything is written, two sources that would share a destination (``a.png`` and ``a.jpg`` with
    ``--ext png``) or a destination that is a source, judged on the final names (so ``--out`` may be
    the input folder when ``--suffix`` makes the names new)."""
    if ext not in OUTPUT_EXTS:
        raise SuperresError(f"--ext {ext}: use one of {', '.join(OUTPUT_EXTS)}")
    if "/" in suffix or os.sep in suffix or "\0" in suffix:
        raise SuperresError(f"--suffix {suffix!r}: must not contain a path separator")
    if not suffix and ext == "auto":
        renamed = list(pairs)
        fix_shared = "upscale them into different --out folders"
    else:
        renamed = []
        for src, dst in pairs:
            new_suffix = dst.suffix if ext == "auto" else "." + ext
            renamed.append((src, dst.with_name(dst.stem + suffix + new_suffix)))
        fix_shared = "use --ext auto or a --suffix, or upscale them into different --out folders"
    check_destinations(renamed, fix_shared=fix_shared, fix_input="choose another --out folder or add a --suffix")
    return renamed


def check_destinations(pairs: Sequence[tuple[Path, Path]], *, fix_shared: str, fix_input: str) -> None:
    """Refuse, before anything is written, two sources with one destination and a destination that
    is one of the sources (paths compared resolved); ``fix_shared``/``fix_input`` end the messages."""
    sources = {_resolved(s) for s, _ in pairs}
    seen: dict[Path, Path] = {}
    for src, dst in pairs:
        key = _resolved(dst)
        if key in seen:
            raise SuperresError(f"{src} and {seen[key]} would both be written to {dst}; {fix_shared}")
        if key in sources:
            raise SuperresError(f"{dst}: the output would overwrite an input image; {fix_input}")
        seen[key] = src


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symbolic link loop (Python < 3.13)
        raise SuperresError(f"{path}: cannot resolve the path ({' '.join(str(exc).split())})") from None


# --------------------------------------------------------------------------- sizes
def parse_size(text: str) -> tuple[int, int]:
    """``"WxH"`` -> ``(width, height)``, both positive integers (for ``--size``)."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"expected WIDTHxHEIGHT such as 1920x1080, got {text!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {text!r}")
    return width, height


@dataclass(frozen=True)
class OutputSize:
    """The requested output size: at most one of ``outscale`` (a factor of the input size),
    ``size`` (``(width, height)``, exact) and ``width`` (the height follows the aspect ratio).
    All None: the model's own scale."""

    outscale: float | None = None
    size: tuple[int, int] | None = None
    width: int | None = None

    def __post_init__(self) -> None:
        given = [name for name in ("outscale", "size", "width") if getattr(self, name) is not None]
        if len(given) > 1:
            raise SuperresError(f"--{given[0]} and --{given[1]}: give only one way to set the output size")
        if self.outscale is not None:
            value = self.outscale
            if not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value <= MAX_OUTSCALE):
                raise SuperresError(f"--outscale {value}: must be a number greater than 0 and at most {MAX_OUTSCALE:g}")
        if self.width is not None and (not isinstance(self.width, int) or self.width <= 0):
            raise SuperresError(f"--width {self.width}: must be a positive integer")
        if self.size is not None and (len(self.size) != 2 or min(self.size) <= 0):
            raise SuperresError(f"--size {self.size}: width and height must be positive")

    @property
    def native(self) -> bool:
        return self.outscale is None and self.size is None and self.width is None

    def target(self, height: int, width: int, scale: int, what: str = "image") -> tuple[int, int]:
        """Output ``(height, width)`` for an ``height x width`` input and a model of ``scale``."""
        if self.outscale is not None:
            out = (round(height * self.outscale), round(width * self.outscale))
        elif self.size is not None:
            out = (self.size[1], self.size[0])
        elif self.width is not None:
            out = (round(height * self.width / width), self.width)
        else:
            out = (height * scale, width * scale)
        if min(out) < 1:
            raise SuperresError(f"{what}: the requested output size {out[1]} x {out[0]} is empty; ask for a larger one")
        if out[0] * out[1] > 16 * 16 * height * width and self.outscale is None:
            raise SuperresError(
                f"{what}: {out[1]} x {out[0]} is more than {MAX_OUTSCALE:g} times the {width} x {height} input per side"
            )
        return out


def resize_image(image, out_hw: tuple[int, int]):
    """A :class:`superres.io.Image` (the model's result) resized to ``out_hw`` with MATLAB bicubic
    (float32 torch path; antialiased when going down), clipped to [0, 1]; alpha alike. Returns the
    image unchanged when it already has that size."""
    import torch


    if image.data.shape[:2] == tuple(out_hw):
        return image

    def resize(array: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))
        y = imresize(x, size=tuple(out_hw)).permute(1, 2, 0).contiguous().numpy()
        return np.clip(y, 0.0, 1.0, out=y)

    alpha = None if image.alpha is None else resize(image.alpha)
    return Image(resize(image.data), alpha, image.bit_depth, image.path)


def finish(image, out_hw: tuple[int, int], ext: str = "auto"):
    """The model's result as it is written: resized to ``out_hw`` (:func:`resize_image`), and stored
    at 8 bits when ``--ext`` names an 8-bit format (jpg, webp) for a 16-bit or float source, which
    the user asked for by naming it (with ``--ext auto`` the depth is always kept)."""
    image = resize_image(image, out_hw)
    if ext in ("jpg", "webp") and image.bit_depth != 8:
        image = Image(image.data, image.alpha, 8, image.path)
    return image


# --------------------------------------------------------------------------- failures
@contextlib.contextmanager
def recorded(failures: "list[tuple[Path, str]] | None", src: Path, writer: "BackgroundWriter | None" = None) -> Iterator[None]:
    """Run one file's work; with a ``failures`` list, a :class:`SuperresError` (or an ``OSError``)
    is appended to it as ``(src, message)`` and the job goes on; without one it propagates, after
    ``writer``'s pending writes have finished (so the run stops with complete files only)."""
    try:
        yield
    except BaseException as exc:
        if failures is None or not isinstance(exc, (SuperresError, OSError)):
            if writer is not None:
                writer.abandon()
            raise
        message = str(exc) if isinstance(exc, SuperresError) else f"{src}: {exc.strerror or exc}"
        if str(src) not in message:
            message = f"{src}: {message}"
        failures.append((src, message))


class BackgroundWriter:
    """Writes results in one background thread while the next image is upscaled.

    Encoding a large PNG or WebP takes as long as running a small model (seconds for a 16 MP
    result); Pillow, tifffile and zlib release the GIL while they encode, so the write overlaps the
    next image's model run. At most ``depth`` results wait or are being written, so host memory
    holds ``depth`` results beyond the one being computed. A write that fails is recorded in
    ``failures`` (or raised, without a list) when it is collected: at a later :meth:`submit` or
    at :meth:`close`. ``written`` lists the destinations completed.
    """

    def __init__(self, failures: "list[tuple[Path, str]] | None" = None, depth: int = 1) -> None:
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.failures = failures
        self.depth = max(1, int(depth))
        self.written: list[Path] = []
        self._pending: deque = deque()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="superres-writer")

    def submit(self, src: Path, dst: Path, write, *args, **kwargs) -> None:
        while len(self._pending) >= self.depth:
            self._collect()
        self._pending.append((src, dst, self._pool.submit(write, *args, **kwargs)))

    def drain(self) -> None:
        while self._pending:
            self._collect()

    def _collect(self) -> None:
        src, dst, future = self._pending.popleft()
        with recorded(self.failures, src):
            future.result()
            self.written.append(dst)

    def abandon(self) -> None:
        """Let the pending writes finish (each is atomic), ignore their errors, stop the thread."""
        for _, _, future in self._pending:
            future.exception()
        self._pending.clear()
        self._pool.shutdown(wait=True)

    def close(self) -> list[Path]:
        try:
            self.drain()
        finally:
            self._pool.shutdown(wait=True)
        return self.written


# --------------------------------------------------------------------------- torchrun
def rank_and_world() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` from the environment ``torchrun`` sets; ``(0, 1)`` outside it."""
    try:
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise SuperresError("RANK / WORLD_SIZE: not integers (set by torchrun)") from None
    if world < 1 or not 0 <= rank < world:
        raise SuperresError(f"RANK={rank} WORLD_SIZE={world}: not a valid rank")
    return rank, world


def rank_device(device: str) -> str:
    """Under ``torchrun`` on a machine with CUDA, ``auto``/``cuda`` become this process's GPU,
    ``cuda:LOCAL_RANK`` (modulo the GPUs present), so N ranks use N GPUs; otherwise ``device``."""
    local = os.environ.get("LOCAL_RANK")
    if local is None or device not in ("auto", "cuda"):
        return device
    import torch

    if not torch.cuda.is_available():
        return device
    return f"cuda:{int(local) % torch.cuda.device_count()}"


def shard(pairs: Sequence, rank: int | None = None, world: int | None = None) -> list:
    """This rank's share of the planned (sorted) job: every ``world``-th item from ``rank``. Every
    rank plans the same list from the same inputs, so the shares are disjoint and cover it."""
    if rank is None or world is None:
        rank, world = rank_and_world()
    return list(pairs[rank::world])
