"""The upscaling factors superres knows: one definition for the CLI, configs, evaluation and models.

An architecture may support fewer (its descriptor's ``scales``); these are the factors a benchmark
folder, a config or ``--scale`` may name at all.
"""

from __future__ import annotations

__all__ = ["SCALES"]

#: Every integer upscaling factor the toolkit accepts anywhere (benchmark sets ship 2, 3 and 4).
SCALES: tuple[int, ...] = (2, 3, 4, 8)
