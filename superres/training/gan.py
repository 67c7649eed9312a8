"""Adversarial training (SRGAN, ESRGAN) as an optional part of the shared trainer.

The trainer owns the generator's step. When the config has a ``discriminator`` section, it builds
one :class:`GANTraining`. This object holds everything adversarial: the discriminator, its optimizer
and gradient scaler, the adversarial loss, and the discriminator's logging window. Each iteration
then runs as follows:

1. **Generator step** (trainer): ``loss = content terms + weight * G_adv``. The adversarial part,
   ``G_adv``, comes from :meth:`GANTraining.generator_loss`. It scores ``D(sr)`` (and ``D(hr)``
   for the relativistic kind) with the discriminator *frozen* (``requires_grad_(False)``): its
   gradient reaches the generator through D, but D's weights get none. Before iteration
   ``start_iteration + 1`` the term is left out.
2. **Discriminator step** (:meth:`GANTraining.discriminator_step`): ``updates_per_step`` times, D is
   unfrozen and trained on the real HR batch against the generator's output of this iteration,
   *detached* (computed before the generator's update, as ESRGAN does; the detach keeps D's loss
   from reaching the generator). Real and fake go through D as two batches, so batch-norm
   statistics never mix real and fake images.

Both steps run under the same autocast as the generator (CUDA bf16/fp16), and losses are computed
in float32. With fp16 the discriminator has its own ``GradScaler``, because its loss has its own
scale. Under DDP the discriminator is wrapped too. Only the D step runs through the wrapper, so only
that step all-reduces D's gradients. The G step calls the plain module, because it needs no D
gradients.

The discriminator's learning rate follows its own schedule (``discriminator.optim`` /
``discriminator.schedule``, null = the generator's), computed by the same pure function of the step
as the generator's (:mod:`superres.training.optim`). It therefore needs no scheduler state on resume.
:meth:`GANTraining.state_dict` holds D's weights (batch-norm buffers included), its optimizer and
scaler state, and the logging window. That is all the trainer needs to put in ``last.pt`` for an
exact resume.

Logged per metrics row: ``loss_adversarial`` (the unweighted generator term at the last
iteration), and ``d_loss``, ``d_real``, ``d_fake`` (the discriminator loss and the mean real/fake
logits, averaged over the discriminator updates since the previous row) and ``d_lr``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, ContextManager

import torch
from torch import nn

from superres.config import Config
from superres.errors import SuperresError
from superres.losses import AdversarialLoss
from superres.models import DISCRIMINATORS
from superres.training import distributed
from superres.training.optim import build_optimizer, learning_rate, set_learning_rate

#: Returns a fresh autocast context (or a null context) each time it is called.
AutocastFactory = Callable[[], ContextManager[Any]]


def build_discriminator(name: str, *, in_channels: int, options: dict[str, Any]) -> nn.Module:
    """``DISCRIMINATORS[name](in_channels=..., **options)``, with config-level errors.

    An unknown name lists the known ones, and an unknown option lists the discriminator's options.
    A value the class rejects (e.g. a width < 1) becomes a :class:`SuperresError` naming
    ``discriminator``.
    """
    builder = DISCRIMINATORS.get(name)
    if builder is None:
        known = ", ".join(sorted(DISCRIMINATORS))
        raise SuperresError(f"discriminator.name: unknown discriminator {name!r}; known: {known}")
    accepted = [k for k in inspect.signature(builder).parameters if k not in ("self", "in_channels")]
    for key in options:
        if key not in accepted:
            raise SuperresError(
                f"discriminator.options: {name!r} has no option {key!r}; its options: {', '.join(accepted) or 'none'}"
            )
    try:
        return builder(in_channels=in_channels, **options)
    except (TypeError, ValueError) as exc:
        raise SuperresError(f"discriminator {name!r}: {exc}") from exc


class GANTraining:
    """The discriminator side of a run: built by the trainer when ``config.discriminator`` is set."""

    def __init__(
        self,
        config: Config,
        adversarial: tuple[float, AdversarialLoss],
        *,
        ctx: distributed.DistContext,
        autocast: AutocastFactory,
        channels_last: bool,
        fp16_scaler: bool,
    ) -> None:
        d = config.discriminator
        if d is None:
            raise ValueError("GANTraining needs config.discriminator")
        self.section = d
        self.optim_config = d.optim if d.optim is not None else config.optim
        self.schedule_config = d.schedule if d.schedule is not None else config.schedule
        self.weight, self.loss = adversarial
        self.autocast = autocast
        device = ctx.device

        self.discriminator: nn.Module = build_discriminator(
            d.name, in_channels=config.model.in_channels, options=d.options
        ).to(device)
        if channels_last:
            self.discriminator = self.discriminator.to(memory_format=torch.channels_last)
        _check_patch_size(self.discriminator, config.model.in_channels, config.data.patch_size, device)
        self.discriminator.train()
        self.optimizer = build_optimizer(self.optim_config, self.discriminator.parameters(), device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16_scaler)
        self.step_discriminator: nn.Module = self.discriminator
        if ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.step_discriminator = DDP(self.discriminator, device_ids=[device.index] if device.type == "cuda" else None)
        self.lr = self.optim_config.lr
        self._last_generator: torch.Tensor | None = None
        self.window: dict[str, Any] = _empty_window()

    # ----------------------------------------------------------------- schedule
    def active(self, iteration: int) -> bool:
        """Whether the generator's adversarial term applies at 1-based ``iteration``."""
        return iteration > self.section.start_iteration

    def set_learning_rate(self, step: int, iterations: int, time_fraction: float = 0.0) -> float:
        """Apply the discriminator's learning rate of 0-based ``step``; return it."""
        self.lr = learning_rate(self.optim_config, self.schedule_config, step, iterations, time_fraction)
        set_learning_rate(self.optimizer, self.lr)
        return self.lr

    # ----------------------------------------------------------------- the two steps
    def generator_loss(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        """``weight * G_adv(D(sr), D(hr))`` with D frozen; backpropagates into ``sr`` only."""
        self.discriminator.requires_grad_(False)
        with self.autocast():
            fake = self.discriminator(sr)
            real = None
            if self.loss.needs_real_for_generator:
                with torch.no_grad():
                    real = self.discriminator(hr)
        value = self.loss.generator_loss(fake.float(), None if real is None else real.float())
        self._last_generator = value.detach()
        return self.weight * value

    def discriminator_step(self, sr: torch.Tensor, hr: torch.Tensor) -> None:
        """``updates_per_step`` optimizer steps of D on real ``hr`` vs ``sr`` (detached here)."""
        self.discriminator.requires_grad_(True)
        fake_input = sr.detach()
        for _ in range(self.section.updates_per_step):
            with self.autocast():
                real = self.step_discriminator(hr)
                fake = self.step_discriminator(fake_input)
            loss = self.loss.discriminator_loss(real.float(), fake.float())
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            w = self.window
            w["d_loss"] = w["d_loss"] + loss.detach()
            w["d_real"] = w["d_real"] + real.detach().float().mean()
            w["d_fake"] = w["d_fake"] + fake.detach().float().mean()
            w["count"] += 1

    # ----------------------------------------------------------------- logging
    def log_values(self) -> dict[str, float]:
        """The metrics row's adversarial columns (window means); starts a new window."""
        values: dict[str, float] = {}
        if self._last_generator is not None:
            values["loss_adversarial"] = float(self._last_generator)
        count = self.window["count"]
        if count:
            for key in ("d_loss", "d_real", "d_fake"):
                values[key] = float(self.window[key]) / count
        values["d_lr"] = self.lr
        self.window = _empty_window()
        return values

    # ----------------------------------------------------------------- checkpoint
    def state_dict(self) -> dict[str, Any]:
        """Everything ``last.pt`` needs for an exact resume (tensors and plain values only)."""
        w = self.window
        return {
            "name": self.section.name,
            "options": dict(self.section.options),
            "model": self.discriminator.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "last_generator": None if self._last_generator is None else float(self._last_generator),
            "window": {k: (float(w[k]) if k != "count" else int(w[k])) for k in w},
        }

    def load_state_dict(self, state: dict[str, Any], *, source: str) -> None:
        """Restore :meth:`state_dict`; the discriminator must be the one the checkpoint was made with."""
        saved = (state["name"], state["options"])
        current = (self.section.name, dict(self.section.options))
        if saved != current:
            raise SuperresError(
                f"{source}: was trained with discriminator {saved[0]!r} {saved[1]}, not {current[0]!r} {current[1]}; "
                "resume with the same discriminator settings"
            )
        self.discriminator.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler.is_enabled() and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        last = state["last_generator"]
        self._last_generator = None if last is None else torch.tensor(float(last))
        self.window = {k: (float(v) if k != "count" else int(v)) for k, v in state["window"].items()}


def _check_patch_size(discriminator: nn.Module, channels: int, patch_size: int, device: torch.device) -> None:
    """Score one blank training-sized patch, so that a discriminator that cannot take the patch size
    (``srgan`` built for another ``input_size``) fails before training with the keys to change. The
    probe runs in eval mode without gradient, so batch-norm statistics and the RNG are untouched."""
    discriminator.eval()
    try:
        with torch.no_grad():
            discriminator(torch.zeros(1, channels, patch_size, patch_size, device=device))
    except (ValueError, RuntimeError) as exc:
        raise SuperresError(
            f"discriminator: cannot score data.patch_size={patch_size} patches ({exc}); "
            "set discriminator.options to match (srgan: input_size = data.patch_size)"
        ) from None


def _empty_window() -> dict[str, Any]:
    return {"d_loss": 0.0, "d_real": 0.0, "d_fake": 0.0, "count": 0}
