"""Training: the loop, checkpoints and resume, EMA, DDP, progress and metrics.

* :func:`train` (Python) and :func:`train_from_cli` (``superres train``): :mod:`.trainer`.
* :mod:`.batches`: batches as a pure function of (seed, iteration), which makes runs reproducible
  and resumable bit for bit; :mod:`.device_data`: the same batches cut on the training device from
  uint8 images kept there (``data.device_resident``).
* :mod:`.gan`: the optional discriminator (``discriminator`` config section) and its updates.
* :mod:`.optim`: Adam/AdamW and the warm-up + cosine/multistep schedule.
* :mod:`.checkpoint`: atomic ``last.pt`` and RNG states; :mod:`.ema`: weight averaging.
* :mod:`.distributed`: torchrun/DDP set-up; :mod:`.validation`: protocol PSNR/SSIM vs bicubic;
  :mod:`.logging`: progress bar, ``metrics.csv``, TensorBoard, ``curves.png``.
"""

from __future__ import annotations

from superres.training.trainer import Callback, Trainer, train, train_from_cli

__all__ = ["train", "train_from_cli", "Trainer", "Callback"]
