"""Load test of `superres serve`: a bounded number of concurrent clients against a server this script
starts on 127.0.0.1, every answer checked.

Usage (from the repository root; needs the serve extra and httpx)::

    python benchmarks/serve_load.py --requests 120 --concurrency 12 --workers 2 --queue-depth 6 --out serve-load.json

What it does:

* starts ``python -m superres serve`` on a free 127.0.0.1 port (``--workers`` jobs at once, one torch
  thread each, ``--queue-depth`` waiting, ``--max-pixels``), with ``TMPDIR`` pointed at a fresh
  folder so that leftover temporary files can be seen;
* ``--concurrency`` client threads send ``--requests`` uploads in all: photo crops of a few sizes
  (each answer must equal :func:`superres.inference.upscale` run here on the same image with the
  same model and tile, pixel for pixel), and every ``--bad-every``-th upload a bad one (not an
  image, a truncated PNG, a decompression bomb, an unknown model; each must get its JSON error);
  each client POSTs, polls the job until it is done, and downloads the result; a 429 must carry
  ``Retry-After`` and the JSON error, and the client waits that long and tries again (at most
  ``--retries`` times);
* samples the server's RSS every 50 ms and reads its peak (``VmHWM``) at the end; then asks
  /healthz, stops the server and checks its temporary folder is empty.

Reports throughput (finished jobs per second of wall time), p50/p99 latency of a finished job
(first POST to last byte of the result, waits after 429s included) and of a 429 answer, peak RSS, and the count of every kind of answer.
Exits 1 when any answer was wrong, the peak RSS is over ``--max-rss-mb``, or files were left behind.
Stops by itself: every client request has a timeout and the whole run ``--time-limit``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid: int, key: str = "VmRSS") -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def png_bytes(array: np.ndarray) -> bytes:
    from PIL import Image as PILImage

    buf = io.BytesIO()
    PILImage.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def bomb_png(side: int = 20000) -> bytes:
    """A valid gray PNG of side x side zeros, a few hundred KB that would decode to side^2 bytes."""
    import struct

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    comp = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    raw = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", raw) + chunk(b"IEND", b"")


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=120)
    p.add_argument("--concurrency", type=int, default=12)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--threads", type=int, default=1, help="torch threads per server worker (and for the reference here)")
    p.add_argument("--queue-depth", type=int, default=6)
    p.add_argument("--max-pixels", type=int, default=4_000_000)
    p.add_argument("--model", default="lumanet-x4")
    p.add_argument("--tile", type=int, default=128)
    p.add_argument("--sizes", default="64x80,128x128,160x240", help="input sizes HxW, comma-separated")
    p.add_argument("--retries", type=int, default=50, help="tries after a 429 (waiting Retry-After each time)")
    p.add_argument("--bad-every", type=int, default=10, help="every N-th upload is a bad one (0: none)")
    p.add_argument("--max-rss-mb", type=float, default=1500.0, help="fail when the server's peak RSS is above this")
    p.add_argument("--time-limit", type=float, default=500.0, help="seconds for the whole run")
    p.add_argument("--out", default=None, help="write the report as JSON here")
    args = p.parse_args(argv)

    import httpx
    import torch
    from skimage import data as skdata

    from superres.devices import resolve_device
    from superres.inference import upscale
    from superres.modelfile import load_model
    from superres.precision import resolve_precision

    torch.set_num_threads(args.threads)
    photo = skdata.astronaut()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    model = load_model(args.model)
    # the precision the server (like `superres upscale`) runs this model in: --precision auto
    precision, _ = resolve_precision("auto", resolve_device("cpu"), args.model)
    inputs = []
    for i, (h, w) in enumerate(sizes):
        crop = np.ascontiguousarray(photo[30 * i : 30 * i + h, 40 * i : 40 * i + w])
        ref = upscale(model, crop.astype(np.float32) / 255.0, tile=args.tile, precision=precision)
        inputs.append((f"crop{i}.png", png_bytes(crop), np.round(ref * 255.0).astype(np.uint8)))
    good_png = inputs[0][1]
    bad = [
        ("not-an-image.png", b"this is not an image", {}, 422, "not_an_image"),
        ("truncated.png", good_png[: len(good_png) // 2], {}, 422, "unreadable_image"),  # a failed job
        ("bomb.png", bomb_png(), {}, 413, "too_many_pixels"),
        ("unknown-model.png", good_png, {"model": "../../etc/passwd"}, 422, "invalid_option"),
    ]

    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=str(REPO), TMPDIR=str(tmp), OMP_NUM_THREADS=str(args.threads))
    server = subprocess.Popen(
        [sys.executable, "-m", "superres", "serve", "--host", "127.0.0.1", "--port", str(port), "--device", "cpu",
         "--workers", str(args.workers), "--threads", str(args.threads), "--queue-depth", str(args.queue_depth),
         "--max-pixels", str(args.max_pixels)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + args.time_limit
    try:
        with httpx.Client(timeout=5) as c:
            while True:
                try:
                    if c.get(url + "/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the server did not start: " + (server.stderr.read() if server.stderr else ""))
                time.sleep(0.2)
        base_rss = rss_kb(server.pid)

        peak = {"rss": base_rss}
        stop = threading.Event()

        def sample():
            while not stop.is_set():
                peak["rss"] = max(peak["rss"], rss_kb(server.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()

        lock = threading.Lock()
        counts: dict[str, int] = {}
        problems: list[str] = []
        done_latency: list[float] = []
        busy_latency: list[float] = []

        def count(key: str) -> None:
            with lock:
                counts[key] = counts.get(key, 0) + 1

        def one(i: int) -> None:
            if time.monotonic() > deadline:
                count("skipped (time limit)")
                return
            is_bad = args.bad_every and i % args.bad_every == args.bad_every - 1
            if is_bad:
                name, data, fields, status, code = bad[(i // args.bad_every) % len(bad)]
                expected = None
            else:
                name, data, expected = inputs[i % len(inputs)]
                fields = {}
            fields = {"model": args.model, "tile": str(args.tile), **fields}
            t0 = time.monotonic()
            with httpx.Client(base_url=url, timeout=120) as c:
                for attempt in range(args.retries + 1):
                    t1 = time.monotonic()
                    r = c.post("/v1/upscale", files={"image": (name, data, "image/png")}, data=fields)
                    if r.status_code != 429:
                        break
                    retry_after = r.headers.get("retry-after", "")
                    ok = retry_after.isdigit() and r.json().get("error", {}).get("code") == "queue_full"
                    count("429 queue full (clean)" if ok else "429 WITHOUT Retry-After/JSON")
                    if not ok:
                        problems.append(f"{name}: 429 without Retry-After or JSON error")
                        return
                    with lock:
                        busy_latency.append(time.monotonic() - t1)
                    if attempt == args.retries or time.monotonic() + int(retry_after) > deadline:
                        count("gave up after 429s")
                        return
                    time.sleep(int(retry_after))
                if is_bad and r.status_code == status:
                    body = r.json()
                    if body.get("error", {}).get("code") == code:
                        count(f"{status} {code} (expected)")
                        return
                    problems.append(f"{name}: {status} with {body}")
                    return
                if r.status_code != 202:
                    problems.append(f"{name}: POST answered {r.status_code} {r.text[:200]}")
                    count(f"unexpected {r.status_code}")
                    return
                job = r.json()
                while job["state"] in ("queued", "running"):
                    if time.monotonic() > deadline:
                        c.delete(f"/v1/jobs/{job['id']}")
                        count("cancelled (time limit)")
                        return
                    time.sleep(0.05)
                    job = c.get(f"/v1/jobs/{job['id']}").json()
                if is_bad:
                    if job["state"] == "failed" and job["error"]["code"] == code:
                        count(f"failed job {code} (expected)")
                    else:
                        problems.append(f"{name}: job {job['state']} {job.get('error')}")
                    return
                if job["state"] != "done":
                    problems.append(f"{name}: job {job['state']} {job.get('error')}")
                    count(f"job {job['state']}")
                    return
                res = c.get(f"/v1/jobs/{job['id']}/result")
                elapsed = time.monotonic() - t0
                from PIL import Image as PILImage

                got = np.asarray(PILImage.open(io.BytesIO(res.content)))
                if res.status_code != 200 or got.shape != expected.shape or not np.array_equal(got, expected):
                    diff = int(np.abs(got.astype(int) - expected).max()) if got.shape == expected.shape else "shape"
                    problems.append(f"{name}: result differs from superres.inference.upscale (max diff {diff})")
                    count("wrong result")
                    return
                count("200 result equal to upscale()")
                with lock:
                    done_latency.append(elapsed)

        t_start = time.monotonic()
        with ThreadPoolExecutor(args.concurrency) as pool:
            list(pool.map(one, range(args.requests)))
        wall = time.monotonic() - t_start
        stop.set()
        sampler.join()
        with httpx.Client(timeout=5) as c:
            health = c.get(url + "/healthz").json()
        hwm = rss_kb(server.pid, "VmHWM")
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
    left = [str(p.relative_to(tmp)) for p in tmp.rglob("*")]
    if not left:
        tmp.rmdir()

    from superres.devices import cpu_name

    peak_mb = max(peak["rss"], hwm) / 1024
    report = {
        "command": "python benchmarks/serve_load.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "cpu": cpu_name(), "cores": os.cpu_count(), "load_average": os.getloadavg(),
        "server": {"workers": args.workers, "threads": args.threads, "queue_depth": args.queue_depth, "model": args.model, "tile": args.tile},
        "requests": args.requests, "concurrency": args.concurrency, "sizes": args.sizes,
        "wall_s": round(wall, 2),
        "finished_jobs_per_s": round(len(done_latency) / wall, 3),
        "latency_done_s": {"p50": percentile(done_latency, 50), "p99": percentile(done_latency, 99), "max": max(done_latency, default=None)},
        "latency_429_s": {"p50": percentile(busy_latency, 50), "p99": percentile(busy_latency, 99)},
        "rss_mb": {"idle": round(base_rss / 1024, 1), "peak": round(peak_mb, 1), "bound": args.max_rss_mb},
        "answers": dict(sorted(counts.items())),
        "problems": problems[:20],
        "health_after": health,
        "temp_files_left": left[:20],
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    failed = bool(problems) or peak_mb > args.max_rss_mb or bool(left) or health.get("status") != "ok"
    print("FAIL" if failed else "OK: every answer was correct or a clean 429", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
