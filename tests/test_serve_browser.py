"""`superres serve` in a real browser: headless Chromium (Debian's, driven by Playwright; no browser
download) opens the page, uploads a photo, waits for the result, moves the slider, shows the lens,
downloads the output and the zip, and the downloaded image equals `superres upscale`'s.

The server runs as a subprocess on 127.0.0.1. A screenshot of the finished page is saved as an
artefact: ``$SUPERRES_ARTEFACTS/serve-page.png`` when that is set, else in the test's tmp folder
(its path is printed). Skipped, with the reason, where Playwright or a Chromium is not installed
(``.ci/run`` installs both).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the [serve] extra (fastapi) is not installed")
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip) is not installed: pip install playwright")

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = next((p for p in (os.environ.get("SUPERRES_CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium"),
                             shutil.which("chromium-browser")) if p and Path(p).is_file()), None)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium (apt-get install chromium; .ci/run does)"),
]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]
MODEL, TILE = "lumanet-x4", 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "superres", "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
         "--workers", "1", "--threads", "1", "--max-pixels", "1000000"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError("the server did not start:\n" + (tmp_path / "server.log").read_text()) from None
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def artefact_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ["SUPERRES_ARTEFACTS"]) if os.environ.get("SUPERRES_ARTEFACTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_page_upscales_a_photo_end_to_end(server, tmp_path):
    from superres.io import Image, read_raw, write_image

    # a photo-like input: a crop of scikit-image's astronaut
    from skimage import data as skdata

    photo = skdata.astronaut()[40:136, 180:300]  # 96 x 120
    src = tmp_path / "in" / "astronaut.png"
    src.parent.mkdir()
    write_image(src, Image(photo.astype(np.float32) / 255.0, None, 8, None))
    cli = subprocess.run(
        [sys.executable, "-m", "superres", "upscale", str(src), "--model", MODEL, "--tile", str(TILE), "--out", str(tmp_path / "cli"), "--quiet"],
        env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"), capture_output=True, text=True, timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    expected = read_raw(tmp_path / "cli" / "astronaut.png")
    gray_src = tmp_path / "in" / "gray.png"
    write_image(gray_src, Image(photo[:40, :48, 1:2].astype(np.float32) / 255.0, None, 8, None))
    bad_src = tmp_path / "in" / "notes.png"
    bad_src.write_text("not an image at all")

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(accept_downloads=True, viewport={"width": 1100, "height": 1000})
            page = context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            outside: list[str] = []
            page.on("request", lambda req: None if req.url.startswith((server, "blob:", "data:")) else outside.append(req.url))

            page.goto(server + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            assert page.locator("#scale").input_value() == "4"
            page.select_option("#model", MODEL)
            assert page.locator("#models tbody tr.chosen td").first.inner_text().startswith(MODEL)
            assert page.locator("#models tbody tr").count() >= 2  # the x4 models, with their scores
            page.fill("#tile", str(TILE))
            page.set_input_files("#files", [str(src), str(gray_src), str(bad_src)])  # many at once

            assert page.locator(".card").count() == 3
            card = page.locator(".card", has_text="astronaut.png")
            sync_api.expect(page.locator(".card.done")).to_have_count(2, timeout=120_000)  # (the page's CSP forbids eval)
            assert card.locator(".state").inner_text() == "done"
            bad_card = page.locator(".card", has_text="notes.png")
            assert "failed" in (bad_card.get_attribute("class") or "")
            assert bad_card.locator(".state").inner_text().startswith("refused: the upload is not an image")
            gray_card = page.locator(".card", has_text="gray.png")
            assert "1 channel(s)" in gray_card.locator(".info").inner_text()
            assert card.locator("progress").evaluate("p => p.value") == 1
            assert "480x384" in card.locator(".info").inner_text()

            # the slider moves the boundary between input and output
            slider = card.locator(".slider")
            slider.fill("20")
            assert page.evaluate("document.querySelector('.card.done .after').style.clipPath") == "inset(0px 0px 0px 20%)"
            box = slider.bounding_box()
            page.mouse.click(box["x"] + box["width"] * 0.8, box["y"] + box["height"] / 2)
            moved = int(slider.input_value())
            assert 70 <= moved <= 90, moved
            assert page.evaluate("document.querySelector('.card.done .divider').style.left") == f"{moved}%"

            # the lens shows the output at full resolution
            frame = card.locator(".frame").bounding_box()
            page.mouse.move(frame["x"] + frame["width"] * 0.45, frame["y"] + frame["height"] * 0.4)
            lens = card.locator(".lens")
            assert lens.is_visible()
            assert page.evaluate("document.querySelector('.card.done .lens').style.backgroundSize") == "480px 384px"
            assert page.evaluate("document.querySelector('.card.done .after').naturalWidth") == 480
            assert page.evaluate("document.querySelector('.card.done .before').naturalWidth") == 120
            assert page.evaluate("document.querySelector('.card.done .frame').getBoundingClientRect().width") <= 480

            shot = artefact_dir(tmp_path) / "serve-page.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"screenshot: {shot}")

            with page.expect_download() as info:
                card.locator(".download").click()
            download = info.value
            assert download.suggested_filename == "astronaut_x4.png"
            got_path = tmp_path / "downloaded.png"
            download.save_as(str(got_path))

            # the errors the console shows for the refused upload are its 422, nothing else
            errors[:] = [e for e in errors if "422" not in e]
            with page.expect_download() as info:
                page.click("#zip")
            zip_path = tmp_path / "all.zip"
            info.value.save_as(str(zip_path))
            assert not errors, errors
            assert not outside, f"the page fetched from elsewhere: {outside}"
        finally:
            browser.close()

    got = read_raw(got_path)
    assert got.pixels.shape == expected.pixels.shape == (384, 480, 3) and got.bit_depth == 8 and got.alpha is None
    np.testing.assert_array_equal(got.pixels, expected.pixels)
    with zipfile.ZipFile(zip_path) as zf:
        assert sorted(zf.namelist()) == ["astronaut_x4.png", "gray_x4.png"]
        assert zf.read("astronaut_x4.png") == got_path.read_bytes()


def test_leaving_the_page_cancels_its_jobs(server, tmp_path):
    import json

    from superres.io import Image, write_image

    rng = np.random.default_rng(0)
    big = tmp_path / "big.png"  # 1000 x 1000 at x4 in tiles of 32: many seconds of work on one thread
    write_image(big, Image(rng.random((1000, 1000, 3), dtype=np.float32), None, 8, None))
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server + "/")
            page.wait_for_selector("body[data-ready='1']", timeout=30_000)
            page.select_option("#model", MODEL)
            page.fill("#tile", "32")
            page.set_input_files("#files", str(big))
            card = page.locator(".card").first
            sync_api.expect(card.locator(".state")).to_contain_text("upscaling", timeout=60_000)
            job_id = card.get_attribute("data-job")
            page.goto("about:blank")  # the user closes the tab
        finally:
            browser.close()
    deadline = time.monotonic() + 30
    while True:
        with urllib.request.urlopen(f"{server}/v1/jobs/{job_id}", timeout=5) as r:
            job = json.load(r)
        if job["state"] not in ("queued", "running") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert job["state"] == "cancelled" and job["error"]["message"] == "cancelled by the client"
    assert job["tiles_done"] < job["tiles_total"]
