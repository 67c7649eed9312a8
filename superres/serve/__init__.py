"""``superres serve``: a web page and an HTTP API for upscaling, on FastAPI + uvicorn (the ``serve`` extra).

* :mod:`superres.serve.limits`: what an upload's header must declare before it is decoded;
* :mod:`superres.serve.jobs`: the bounded queue, the worker threads, expiry and cancellation;
* :mod:`superres.serve.engine`: one job: ``superres.io`` in, ``superres.inference`` over it,
  ``superres.io`` out (the same calls as ``superres upscale``);
* :mod:`superres.serve.app`: the endpoints, the error format, the page in ``static/``.

The server sits at the top layer beside ``cli`` and ``demo``: it imports the modules below it and
nothing imports it but the CLI.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import sys

from superres.errors import SuperresError

__all__ = ["ServeConfig", "create_app", "run_server", "is_loopback"]


def __getattr__(name: str):
    if name in ("ServeConfig", "create_app"):
        from superres.serve import app

        return getattr(app, name)
    raise AttributeError(name)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _require_deps() -> None:
    missing = []
    for module in ("fastapi", "uvicorn", "python_multipart"):
        try:
            __import__(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise SuperresError(f"superres serve needs {', '.join(missing)}: pip install 'superres[serve]'")


def run_server(config) -> None:  # noqa: ANN001 - a ServeConfig
    """Start uvicorn with the app for ``config`` and serve until interrupted."""
    _require_deps()
    import torch
    import uvicorn

    from superres.serve.app import create_app

    if not is_loopback(config.host):
        if not config.token:
            config.token = secrets.token_urlsafe(24)
            generated = True
        else:
            generated = False
        print(
            f"superres serve: warning: listening on {config.host}, reachable from other machines; "
            "every API call needs 'Authorization: Bearer TOKEN'"
            + (f" (generated token: {config.token})" if generated else ""),
            file=sys.stderr,
        )
    threads = config.threads or max(1, (os.cpu_count() or 1) // config.workers)
    torch.set_num_threads(threads)
    from superres.io import set_max_pixels

    set_max_pixels(config.max_pixels)  # the readers refuse it too, should a header ever understate the size
    app = create_app(config)
    shown = f"[{config.host}]" if ":" in config.host else config.host
    print(
        f"superres serve: http://{shown}:{config.port}/ ({config.workers} worker(s) x {threads} thread(s), "
        f"queue depth {config.queue_depth}, device {app.state.catalog.device})",
        file=sys.stderr, flush=True,
    )
    try:
        uvicorn.run(app, host=config.host, port=config.port, log_level="warning", timeout_graceful_shutdown=5,
                    limit_concurrency=256, timeout_keep_alive=5)
    finally:
        set_max_pixels(None)  # back to the default for whatever runs next in this process
