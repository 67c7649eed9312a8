"""Progress bars on stderr for the steps a person waits for (``eval``, ``benchmark``, ``data patches``,
``data stats``, ``data degrade``).

A bar appears only once its step has run for :data:`DELAY_S` seconds: a step that ends sooner, or
stops at once with an error, prints nothing, so quick runs and one-line errors stay as they are,
while nothing longer sits silent for more than about a second. stdout is never written to (the
commands' ``--json`` output stays one JSON document).
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

from tqdm import tqdm

#: Seconds a step runs before its bar is drawn (read at each call; tests set it to 0).
DELAY_S = 1.0


def progress_bar(iterable: Iterable[Any] | None = None, *, enabled: bool = True, **options: Any) -> tqdm:
    """A tqdm bar on stderr over ``iterable`` (or ``total=``), drawn after :data:`DELAY_S` seconds;
    ``enabled=False`` gives a silent one. ``options`` go to tqdm (``desc``, ``unit``, ``leave``, ...)."""
    return tqdm(iterable, file=sys.stderr, delay=DELAY_S, disable=not enabled, dynamic_ncols=True, **options)
