"""What a job does: decode the upload with ``superres.io``, upscale it with ``superres.inference``,
write the result with ``superres.io`` in the upload's format, bit depth, channels and alpha.

The models a client may choose are a fixed catalogue made when the server starts, what
``superres models --json`` lists as usable: the shipped models and the installed Real-ESRGAN peers
(superres modules read from ncnn files, run tiled like ours); model files named by the server's
operator (``superres serve --model-file PATH``); and, with ``--peers-dir DIR``, the OpenCV graphs and
yjn870 FSRCNN weights found there (:mod:`superres.peers`: 8-bit gray/RGB in and out, run on the
whole image, so their memory is bounded by ``--max-pixels``, not by the tile). A client names a
model; it never sends a path, and nothing it sends is joined to a path.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from superres.errors import SuperresError
from superres.serve.jobs import Job, JobError

__all__ = ["Catalog", "Engine", "tile_count"]

_PUBLIC_KEYS = ("name", "kind", "arch", "scale", "in_channels", "params", "scores", "psnr_y", "license")


def tile_count(height: int, width: int, tile: int) -> int:
    """The number of model calls :func:`superres.inference.upscale_tensor` makes for this image."""
    from superres.inference import tile_grid

    return (len(tile_grid(height, tile)) - 1) * (len(tile_grid(width, tile)) - 1)


class Catalog:
    """The models this server offers: ``name -> entry`` (public metadata) and, on first use, the
    loaded module (loaded once, shared by the workers: inference does not modify it)."""

    def __init__(self, model_files: list[str | Path] = (), *, device: str = "cpu", peers_dir: str | Path | None = None) -> None:
        from superres.devices import resolve_device
        from superres.modelfile import list_models, read_metadata

        self.device = resolve_device(device)
        self._paths: dict[str, str] = {}
        self._entries: dict[str, dict[str, Any]] = {}
        self._peers: dict[str, tuple[Any, threading.Lock]] = {}
        for e in list_models():
            if e.get("shipped"):
                self._entries[e["name"]] = {k: e.get(k) for k in _PUBLIC_KEYS}
                self._paths[e["name"]] = e["name"]
            elif e.get("kind") == "peer" and e.get("installed"):  # Real-ESRGAN: load_model(name) reads its ncnn files
                self._entries[e["name"]] = {
                    "name": e["name"], "kind": "peer", "arch": e.get("description"), "scale": e.get("scale"), "in_channels": 3,
                    "params": e.get("params"), "scores": {}, "psnr_y": None, "license": e.get("license"),
                }
                self._paths[e["name"]] = e["name"]
        for f in model_files:
            path = Path(f)
            meta = read_metadata(path)  # SuperresError for a missing or foreign file: the server does not start
            name = path.stem
            if name in self._entries:
                raise SuperresError(f"--model-file {path}: the name {name!r} is taken by a shipped model; rename the file")
            from superres.modelfile import _headline_psnr

            scores = meta.get("scores", {})
            self._entries[name] = {
                "name": name, "kind": "server-file", "arch": meta.get("arch"), "scale": meta.get("scale"),
                "in_channels": meta.get("in_channels"), "params": meta.get("params"), "scores": scores,
                "psnr_y": _headline_psnr(scores),
            }
            self._paths[name] = str(path.resolve())
        if peers_dir is not None:
            self._add_peer_files(Path(peers_dir))
        self._models: dict[str, Any] = {}
        self._lock = threading.Lock()

    def _add_peer_files(self, folder: Path) -> None:
        """The OpenCV graphs and yjn870 FSRCNN weights in ``folder`` (what ``superres benchmark`` finds there;
        not :func:`superres.peers.find_peers`, which would also load every Real-ESRGAN model up front)."""
        from superres.peers import OPENCV_GRAPHS, opencv_available, opencv_peer, yjn870_peer
        from superres.scales import SCALES

        if not folder.is_dir():
            raise SuperresError(f"--peers-dir {folder}: no such folder")
        found = []
        for scale in SCALES:
            if opencv_available() is None:
                found += [opencv_peer(g) for g in (folder / f"{stem}_x{scale}.pb" for stem in OPENCV_GRAPHS) if g.is_file()]
            yjn = folder / f"yjn870-pr6_fsrcnn_x{scale}.pth"
            if yjn.is_file():
                found.append(yjn870_peer(yjn))
        for peer in found:
            name = f"peer-{peer.path.stem}"
            self._entries[name] = {
                "name": name, "kind": "peer", "arch": peer.name, "scale": peer.scale, "in_channels": 3,
                "params": peer.params, "scores": {}, "psnr_y": None, "license": None, "whole_image": True,
            }
            self._peers[name] = (peer, threading.Lock())  # one call at a time: OpenCV nets are not re-entrant

    def peer(self, name: str) -> tuple[Any, threading.Lock] | None:
        return self._peers.get(name)

    def entries(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self._entries.values()]

    def entry(self, name: str) -> dict[str, Any] | None:
        return self._entries.get(name)

    def default_for(self, scale: int) -> str | None:
        """The best recorded model at ``scale`` (highest headline PSNR-Y), as ``superres upscale`` picks."""
        candidates = [e for e in self._entries.values() if e.get("scale") == scale]
        if not candidates:
            return None
        return max(candidates, key=lambda e: e["psnr_y"] if isinstance(e.get("psnr_y"), (int, float)) else float("-inf"))["name"]

    def load(self, name: str) -> Any:
        with self._lock:
            model = self._models.get(name)
            if model is None:
                from superres.modelfile import load_model

                model = load_model(self._paths[name], device=self.device)
                self._models[name] = model
            return model


def _progress_module(model: Any, job: Job) -> Any:
    """``model`` wrapped so that every tile counts towards ``job``'s progress and a cancelled job
    stops at its next tile (upscale_tensor calls the model once per tile)."""
    from torch import nn

    class _Counted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = model
            self.scale = model.scale
            self.in_channels = model.in_channels

        def forward(self, x):  # noqa: ANN001
            job.check_cancelled()
            out = self.inner(x)
            job.tiles_done += 1
            return out

    return _Counted().eval()


class Engine:
    """``Engine(catalog, tile_overlap)(job)`` runs one job (the :class:`~superres.serve.jobs.JobQueue` runner)."""

    def __init__(self, catalog: Catalog, *, tile_overlap: int = 16) -> None:
        self.catalog = catalog
        self.tile_overlap = tile_overlap

    def _scrub(self, text: str, job: Job) -> str:
        """A message with the server's paths replaced by the client's file name."""
        return text.replace(str(job.folder / "input"), job.input_name).replace(str(job.folder.parent), "<server>")

    def __call__(self, job: Job) -> None:
        from superres.inference import upscale
        from superres.io import read_image
        from superres.precision import resolve_precision

        from superres.metadata import read_metadata

        job.check_cancelled()
        source = job.folder / "input"
        try:
            image = read_image(source)
            # ICC profile, DPI and EXIF go to the result as `superres upscale` carries them over
            job.metadata = read_metadata(source)
        except SuperresError as exc:
            raise JobError("unreadable_image", self._scrub(str(exc), job)) from None
        finally:
            source.unlink(missing_ok=True)
        image = replace(image, path=None)
        options = job.options
        peer = self.catalog.peer(options["model"])
        if peer is not None:
            result = self._run_peer(job, image, *peer)
            self._write(job, result)
            return
        job.tiles_total = tile_count(image.height, image.width, options["tile"])
        net = _progress_module(self.catalog.load(options["model"]), job)
        # the precision `superres upscale` runs this model in (--precision auto), so results are the CLI's
        precision, _ = resolve_precision("auto", self.catalog.device, options["model"])
        try:
            result = upscale(net, image, tile=options["tile"], tile_overlap=self.tile_overlap, device=self.catalog.device,
                             precision=precision)
        except SuperresError as exc:
            raise JobError("unsupported_image", self._scrub(str(exc), job)) from None
        del image
        self._write(job, result)

    def _run_peer(self, job: Job, image: Any, peer: Any, lock: threading.Lock) -> Any:
        """A peer on the whole image: 8-bit gray or RGB only; alpha resized with bicubic as upscale() does."""
        import numpy as np

        from superres.io import Image, to_float, to_integer
        from superres.resize import imresize

        if image.bit_depth != 8 or image.channels not in (1, 3):
            raise JobError(
                "unsupported_image",
                f"{job.input_name}: peer models take 8-bit gray or RGB images, this one is {image.bit_depth}-bit with "
                f"{image.channels} channel(s); choose a superres model",
            )
        job.tiles_total = 1
        job.check_cancelled()
        with lock:
            out = peer.upscale(to_integer(image.data, 8))
        job.tiles_done = 1
        alpha = None
        if image.alpha is not None:
            alpha = np.clip(np.asarray(imresize(image.alpha, scale=peer.scale), dtype=np.float32), 0.0, 1.0)
            alpha = alpha.reshape(out.shape[0], out.shape[1], 1)
        data = to_float(out.reshape(out.shape[0], out.shape[1], -1))
        return Image(data=data, alpha=alpha, bit_depth=8, path=None)

    def _write(self, job: Job, result: Any) -> None:
        from superres.io import write_image

        options = job.options
        job.check_cancelled()
        target = job.folder / f"result{options['suffix']}"
        write_image(target, result, metadata=job.metadata)
        job.result_path = target
        job.info["result"] = {
            "width": result.width, "height": result.height, "channels": result.channels,
            "bit_depth": result.bit_depth, "alpha": result.alpha is not None,
            "format": options["format"], "bytes": target.stat().st_size,
        }
