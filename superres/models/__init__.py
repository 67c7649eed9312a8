"""Super-resolution architectures and the registry that names them.

``build(name, scale=..., in_channels=..., **options)`` makes a model; ``names()`` lists them;
``REGISTRY`` is the explicit name -> builder dict (see :mod:`superres.models.registry`); every model
satisfies the contract in :mod:`superres.models.contract` (``describe(model)`` reads it).
Model files (save/load with metadata) live in :mod:`superres.modelfile`; parameter/FLOP counting in
:mod:`superres.models.complexity`.
"""

from __future__ import annotations

from superres.models.baseline import Baseline
from superres.models.enhanced import Enhanced
from superres.models.contract import ModelContract, SRModel, describe
from superres.models.registry import DISCRIMINATORS, REGISTRY, build, contract, fold, names, options

__all__ = [
    "DISCRIMINATORS", "REGISTRY", "build", "contract", "describe", "fold", "names", "options",
    "ModelContract", "SRModel", "Baseline", "Enhanced",
]
