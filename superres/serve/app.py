"""The HTTP layer: a FastAPI app over :class:`~superres.serve.jobs.JobQueue` and
:class:`~superres.serve.engine.Engine`, and the page in ``static/``.

Every error is JSON ``{"error": {"code": ..., "message": ...}}`` with a 4xx/5xx status, never a
traceback. See :func:`create_app` for the endpoints and docs in README ("Web page and HTTP API").
"""

from __future__ import annotations

import re
import secrets
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import Request  # at module level: the endpoints' annotations are resolved from here

from superres.serve.engine import Catalog, Engine, tile_count
from superres.serve.jobs import CANCELLED, DONE, FAILED, JobQueue, QueueFull
from superres.serve.limits import FORMAT_SUFFIX, UploadRefused, check_upload

__all__ = ["ServeConfig", "create_app"]

STATIC = Path(__file__).resolve().parent / "static"
_MEDIA = {
    ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".bmp": "image/bmp", ".tif": "image/tiff",
    ".tiff": "image/tiff", ".webp": "image/webp",
}
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
_UPLOAD_SLACK = 64 * 1024  # the multipart envelope and the option fields around the image


@dataclass
class ServeConfig:
    """Everything ``superres serve`` configures; the defaults are the command's."""

    host: str = "127.0.0.1"
    port: int = 8000
    device: str = "auto"
    workers: int = 1
    threads: int | None = None
    queue_depth: int = 8
    max_upload_bytes: int = 50 * 1024 * 1024
    max_pixels: int = 2_000_000
    max_tile: int = 512
    default_tile: int = 256
    tile_overlap: int = 16
    result_ttl: float = 600.0
    job_timeout: float = 600.0
    abandon_after: float = 300.0
    token: str | None = None
    cors_origins: list[str] = field(default_factory=list)
    model_files: list[str] = field(default_factory=list)
    peers_dir: str | None = None


class _BodyTooLarge(Exception):
    pass


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None):
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


_STATUS_CODES = {400: "bad_request", 401: "unauthorized", 404: "not_found", 405: "method_not_allowed", 413: "too_large", 422: "invalid_request"}


def _safe_name(name: str | None) -> str:
    """The client's file name reduced to a harmless display name (no folders, only plain characters)."""
    base = re.split(r"[\\/]", name or "")[-1]
    base = re.sub(r"[^A-Za-z0-9._ -]", "_", base).strip(" .")[:100]
    return base or "image"


class _LimitBody:
    """ASGI middleware: a POST to /v1/upscale whose body is over ``limit`` bytes is refused with 413,
    from its Content-Length before reading it, or once that many bytes have arrived."""

    def __init__(self, app, limit: int) -> None:  # noqa: ANN001
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/v1/upscale":
            return await self.app(scope, receive, send)
        for key, value in scope.get("headers", []):
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.limit:
                    limit = self.limit - _UPLOAD_SLACK
                    response = _error(413, "upload_too_large", f"the upload is {declared} bytes, above this server's limit of {limit} bytes")
                    return await response(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _BodyTooLarge()
            return message

        return await self.app(scope, limited, send)


_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'"
)


class _SecurityHeaders:
    """ASGI middleware (plain, so that errors raised while reading the body reach the endpoint):
    ``nosniff`` and ``no-referrer`` on every response, a strict Content-Security-Policy on the page."""

    def __init__(self, app) -> None:  # noqa: ANN001
        self.app = app

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        page = scope["path"] == "/" or scope["path"].startswith("/static/")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if page:
                    headers.append((b"content-security-policy", _CSP.encode()))
                message = dict(message, headers=headers)
            await send(message)

        return await self.app(scope, receive, send_with_headers)


def create_app(config: ServeConfig | None = None, *, catalog: Catalog | None = None, queue: JobQueue | None = None):
    """The ASGI app. Endpoints:

    ``GET /`` the page; ``GET /healthz``; ``GET /v1/models``; ``POST /v1/upscale`` (multipart
    ``image`` + ``model``, ``scale``, ``tile``) -> 202 and the job; ``GET /v1/jobs/ID``;
    ``DELETE /v1/jobs/ID``; ``GET /v1/jobs/ID/result``; ``GET /v1/results.zip?ids=ID,ID``;
    ``GET /openapi.json``. The job queue's threads start here and stop at the app's shutdown.
    """
    from contextlib import asynccontextmanager

    from fastapi import FastAPI
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.background import BackgroundTask
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.formparsers import MultiPartException

    from superres.scales import SCALES

    config = config or ServeConfig()
    catalog = catalog or Catalog(config.model_files, device=config.device, peers_dir=config.peers_dir)
    engine = Engine(catalog, tile_overlap=config.tile_overlap)
    if queue is None:
        queue = JobQueue(
            engine, workers=config.workers, queue_depth=config.queue_depth, result_ttl=config.result_ttl,
            job_timeout=config.job_timeout, abandon_after=config.abandon_after,
        )

    @asynccontextmanager
    async def lifespan(app):  # noqa: ANN001
        yield
        await run_in_threadpool(queue.close)

    app = FastAPI(
        title="superres",
        summary="Single-image super-resolution: upscale images with superres models.",
        version=_version(),
        docs_url=None,  # the interactive docs pages load scripts from a CDN; the page must work offline
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    # Uploads being received at once (each spooled to disk up to max_upload_bytes): past this, 429 too.
    receiving = {"now": 0, "max": max(4, config.workers + config.queue_depth)}
    app.state.config = config
    app.state.queue = queue
    app.state.catalog = catalog

    # ------------------------------------------------------------------ errors, never tracebacks
    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "error"
        return _error(exc.status_code, _STATUS_CODES.get(exc.status_code, "error"), message, getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
        return _error(422, "invalid_request", "; ".join(parts) or "invalid request")

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):
        return _error(500, "internal_error", "the server failed to handle this request")

    app.add_middleware(_SecurityHeaders)

    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["GET", "POST", "DELETE"], allow_headers=["Authorization"]
        )
    app.add_middleware(_LimitBody, limit=config.max_upload_bytes + _UPLOAD_SLACK)

    def _auth(request: Request):
        if not config.token:
            return None
        given = request.headers.get("authorization", "")
        if given.startswith("Bearer ") and secrets.compare_digest(given[7:].strip().encode(), config.token.encode()):
            return None
        return _error(401, "unauthorized", "this server needs an access token: send 'Authorization: Bearer TOKEN'", {"WWW-Authenticate": "Bearer"})

    def _find(job_id: str):
        job = queue.get(job_id) if _JOB_ID.match(job_id) else None
        if job is None:
            return None, _error(404, "unknown_job", f"no job {job_id[:40]!r} (unknown, or its result expired after {config.result_ttl:g} s)")
        return job, None

    def _job_json(job) -> dict[str, Any]:
        out = job.public()
        out["status_url"] = f"/v1/jobs/{job.id}"
        out["result_url"] = f"/v1/jobs/{job.id}/result"
        return out

    # ------------------------------------------------------------------ page
    @app.get("/", include_in_schema=False)
    async def page():
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ------------------------------------------------------------------ API
    @app.get("/healthz", tags=["server"], summary="Liveness and queue occupancy")
    async def healthz():
        return {"status": "ok", "queue": queue.stats()}

    @app.get("/v1/models", tags=["models"], summary="The models this server offers, with parameters and scores")
    async def models(request: Request):
        if (denied := _auth(request)) is not None:
            return denied
        entries = catalog.entries()
        scales = sorted({e["scale"] for e in entries if e.get("scale")})
        return {
            "models": entries,
            "defaults": {str(s): catalog.default_for(s) for s in scales},
            "limits": {
                "max_upload_bytes": config.max_upload_bytes, "max_pixels": config.max_pixels,
                "max_tile": config.max_tile, "default_tile": config.default_tile, "queue_depth": config.queue_depth,
                "workers": config.workers, "result_ttl_s": config.result_ttl,
            },
        }

    upload_schema = {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": {
                "type": "object",
                "required": ["image"],
                "properties": {
                    "image": {"type": "string", "format": "binary", "description": "PNG, JPEG, WebP, BMP or TIFF; 8/16-bit, gray/RGB, alpha kept"},
                    "model": {"type": "string", "description": "a name from GET /v1/models (default: the best model at `scale`)"},
                    "scale": {"type": "integer", "enum": list(SCALES), "description": "must match the model's scale (default: the model's, or 4)"},
                    "tile": {"type": "integer", "description": f"tile size in input pixels, 16..max_tile (default {config.default_tile})"},
                },
            }}},
        },
        "responses": {
            "202": {"description": "the job, queued"}, "401": {"description": "missing or wrong access token"},
            "413": {"description": "upload or declared pixel count over the limit"},
            "422": {"description": "not an image, unsupported format or invalid option"},
            "429": {"description": "queue full; see Retry-After"},
        },
    }

    def _option_int(value: Any, name: str) -> int | None:
        if value is None or value == "":
            return None
        if isinstance(value, UploadFile) or not re.fullmatch(r"\s*-?\d{1,9}\s*", str(value)):
            raise UploadRefused(422, "invalid_option", f"{name}: expected an integer, got {str(value)[:40]!r}")
        return int(value)

    def _options(form) -> dict[str, Any]:  # noqa: ANN001
        unknown = sorted(set(form.keys()) - {"image", "model", "scale", "tile"})
        if unknown:
            raise UploadRefused(422, "invalid_option", f"unknown field(s) {', '.join(repr(u[:40]) for u in unknown)}; use image, model, scale, tile")
        scale = _option_int(form.get("scale"), "scale")
        tile = _option_int(form.get("tile"), "tile")
        model = form.get("model")
        if isinstance(model, UploadFile):
            raise UploadRefused(422, "invalid_option", "model: a model name from GET /v1/models; model files cannot be uploaded")
        if scale is not None and scale not in SCALES:
            raise UploadRefused(422, "invalid_option", f"scale: {scale} is not supported; use one of {', '.join(map(str, SCALES))}")
        if not model:
            model = catalog.default_for(scale or 4)
            if model is None:
                raise UploadRefused(422, "invalid_option", f"scale: no model on this server upscales x{scale or 4}")
        entry = catalog.entry(str(model))
        if entry is None and re.search(r"[\\/]|\.safetensors$|\.onnx$", str(model)):
            raise UploadRefused(422, "invalid_option", "model: a name from GET /v1/models, not a path; clients cannot name or upload model files")
        if entry is None:
            names = ", ".join(e["name"] for e in catalog.entries())
            raise UploadRefused(422, "invalid_option", f"model: unknown model {str(model)[:60]!r}; choose one of {names} (GET /v1/models)")
        if scale is not None and entry.get("scale") != scale:
            raise UploadRefused(422, "invalid_option", f"scale: {model} upscales x{entry.get('scale')}, not x{scale}; choose a x{scale} model")
        if tile is None:
            tile = config.default_tile
        if not 16 <= tile <= config.max_tile:
            raise UploadRefused(422, "invalid_option", f"tile: {tile} is outside 16..{config.max_tile} (the tile bounds the memory a job takes)")
        return {"model": entry["name"], "scale": int(entry["scale"]), "tile": tile}

    @app.post("/v1/upscale", tags=["jobs"], summary="Queue one image for upscaling", status_code=202, openapi_extra=upload_schema)
    async def submit(request: Request):
        if (denied := _auth(request)) is not None:
            return denied
        try:
            queue.reserve()
        except QueueFull as exc:
            return _error(429, "queue_full", str(exc), {"Retry-After": str(exc.retry_after)})
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            return _error(422, "invalid_request", "send the image as multipart/form-data with a field named 'image'")
        if receiving["now"] >= receiving["max"]:
            return _error(429, "queue_full", f"{receiving['now']} uploads are being received; retry in 2 s", {"Retry-After": "2"})
        receiving["now"] += 1
        try:
            form = await request.form(max_files=2, max_fields=8, max_part_size=4096)
        except _BodyTooLarge:
            return _error(413, "upload_too_large", f"the upload is above this server's limit of {config.max_upload_bytes} bytes")
        except MultiPartException as exc:
            return _error(422, "invalid_request", f"malformed multipart body ({exc.message})")
        finally:
            receiving["now"] -= 1
        job = None
        try:
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                raise UploadRefused(422, "missing_image", "no file in the field 'image'")
            options = _options(form)
            job = queue.new_job(options, _safe_name(upload.filename))
            source = job.folder / "input"

            def save_and_check():
                with open(source, "wb") as out:
                    shutil.copyfileobj(upload.file, out, 1 << 20)
                return check_upload(source, config.max_pixels)

            declared = await run_in_threadpool(save_and_check)
            suffix = Path(job.input_name).suffix.lower()
            if suffix not in _MEDIA:  # like the CLI, the result takes the file's suffix; else the content's
                suffix = FORMAT_SUFFIX[declared.format]
            options.update(suffix=suffix, format=declared.format)
            scale = options["scale"]
            job.tiles_total = tile_count(declared.height, declared.width, options["tile"])
            job.info["input"] = {"width": declared.width, "height": declared.height, "format": declared.format}
            job.info["expected"] = {"width": declared.width * scale, "height": declared.height * scale}
            job.result_name = f"{Path(job.input_name).stem or 'image'}_x{scale}{suffix}"
            queue.submit(job)
        except UploadRefused as exc:
            if job is not None:
                queue.discard(job)
            return _error(exc.status, exc.code, exc.message)
        except QueueFull as exc:
            return _error(429, "queue_full", str(exc), {"Retry-After": str(exc.retry_after)})
        except BaseException:
            if job is not None:
                queue.discard(job)
            raise
        finally:
            await form.close()
        return JSONResponse(_job_json(job), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})

    @app.get("/v1/jobs/{job_id}", tags=["jobs"], summary="A job's state and progress")
    async def job_status(job_id: str, request: Request):
        if (denied := _auth(request)) is not None:
            return denied
        job, missing = _find(job_id)
        return missing or _job_json(job)

    @app.delete("/v1/jobs/{job_id}", tags=["jobs"], summary="Cancel a job (a running one stops at its next tile)")
    async def job_cancel(job_id: str, request: Request):
        if (denied := _auth(request)) is not None:
            return denied
        job, missing = _find(job_id)
        if missing:
            return missing
        queue.cancel(job.id)
        return _job_json(job)

    def _result_error(job):
        if job.state == DONE and job.result_path is not None and job.result_path.is_file():
            return None
        if job.state == FAILED:
            return _error(422, job.error["code"], job.error["message"])
        if job.state == CANCELLED:
            return _error(410, "cancelled", job.error["message"] if job.error else "the job was cancelled")
        if job.state == DONE:
            return _error(404, "unknown_job", "the result has expired")
        return _error(409, "not_ready", f"the job is {job.state}; poll GET /v1/jobs/{job.id} until its state is 'done'")

    @app.get("/v1/jobs/{job_id}/result", tags=["jobs"], summary="The upscaled image (same format, bit depth, channels and alpha)",
             responses={200: {"content": {m: {} for m in sorted(set(_MEDIA.values()))}}, 409: {"description": "not finished"},
                        410: {"description": "cancelled"}, 422: {"description": "the job failed"}})
    async def job_result(job_id: str, request: Request):
        if (denied := _auth(request)) is not None:
            return denied
        job, missing = _find(job_id)
        if missing:
            return missing
        if (problem := _result_error(job)) is not None:
            return problem
        info = job.info.get("result", {})
        headers = {
            "X-Superres-Bit-Depth": str(info.get("bit_depth")), "X-Superres-Channels": str(info.get("channels")),
            "X-Superres-Alpha": "1" if info.get("alpha") else "0", "Cache-Control": "no-store",
        }
        return FileResponse(job.result_path, media_type=_MEDIA[job.result_path.suffix], filename=job.result_name, headers=headers)

    @app.get("/v1/results.zip", tags=["jobs"], summary="Several finished results in one zip (ids comma-separated)")
    async def results_zip(request: Request, ids: str = ""):
        if (denied := _auth(request)) is not None:
            return denied
        wanted = [i for i in ids.split(",") if i][:200]
        if not wanted:
            return _error(422, "invalid_option", "ids: give the job ids, comma-separated")
        jobs = []
        for job_id in wanted:
            job, missing = _find(job_id)
            if missing:
                return missing
            if (problem := _result_error(job)) is not None:
                return problem
            jobs.append(job)
        target = queue.root / f"zip-{secrets.token_hex(8)}.zip"

        def build():
            used: set[str] = set()
            with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
                for job in jobs:
                    name, n = job.result_name, 1
                    while name in used:
                        n += 1
                        name = f"{Path(job.result_name).stem}-{n}{Path(job.result_name).suffix}"
                    used.add(name)
                    zf.write(job.result_path, name)

        try:
            await run_in_threadpool(build)
        except FileNotFoundError:
            target.unlink(missing_ok=True)
            return _error(404, "unknown_job", "a result expired while the zip was made")
        return FileResponse(target, media_type="application/zip", filename="superres-results.zip",
                            background=BackgroundTask(target.unlink, missing_ok=True))

    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:  # not `from superres import __version__`: the package root sits above this layer
        return version("superres")
    except PackageNotFoundError:
        return "unknown"
