"""The training loop (``superres train``).

Read it top to bottom: :func:`train_from_cli` turns the command line into a config and a run folder.
:func:`train` sets up the process (device, DDP, determinism) and runs :class:`Trainer`, which builds
everything, optionally restores ``last.pt``, then loops over iterations. Each iteration sets the
learning rate, takes its batch (a pure function of seed and iteration), does forward, loss, backward,
clipping and the optimizer step, updates the EMA, then logs, validates and saves when due (with
``train.cuda_graph`` the batch and the step run as one CUDA graph, :mod:`superres.training.graph_step`;
the EMA, logging, validation and saving stay outside it). At the
end (last iteration, or ``train.max_seconds`` of wall time) it validates, saves ``last.pt`` and
exports the model.

Adversarial training (a ``discriminator`` section plus one ``{type: adversarial}`` loss term) is
the same loop. The adversarial term is taken out of the loss list (:func:`superres.losses.split_adversarial`)
and handled by :class:`superres.training.gan.GANTraining`: the generator step adds
``weight * G_adv`` computed through the frozen discriminator, then the discriminator takes its own
step on real HR vs the detached SR. The discriminator's weights, optimizer and scaler go into
``last.pt`` next to the generator's. ``model.init_from`` starts the generator from a model file
(e.g. the PSNR-oriented SRResNet before SRGAN), see :func:`superres.modelfile.load_initial_weights`.

A run folder holds::

    config.yaml          the resolved config (absolute paths); load_config() reads it back
    last.pt              checkpoint for --resume (atomic; weights_only-loadable); with a
                         discriminator, also its weights and optimizer state
    model.safetensors    the final model (EMA weights when train.ema is set), with metadata
    best.safetensors     the best model by validation PSNR-Y (when data.val is set)
    metrics.csv          losses, learning rate, validation and bicubic scores
    curves.png           loss and validation PSNR curves
    tensorboard/         event files, when tensorboard is installed

Exactness. On the CPU, a seeded run is bit-reproducible. A run that is interrupted at any point
(even by SIGKILL) and resumed ends with exactly the weights of an uninterrupted run. This holds
because batches and learning rates depend only on (seed, iteration), and the checkpoint holds
every other piece of state. Runs with ``max_seconds`` stop at a time-dependent iteration, and their
learning rate follows the clock too, so they are not reproducible in that sense. Checkpoints are taken every ``save_every`` iterations and
at the end, so an interrupted run repeats at most ``save_every - 1`` iterations when resumed.

Wall time (``elapsed_s``, ``max_seconds``) counts the loop, validation included, from the first
iteration, and accumulates across resumes. Start-up (reading the images) is not counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from superres.config import (
    Config,
    TrainConfig,
    config_to_dict,
    load_config,
    resolve_paths,
    save_config,
    val_set_name,
)
from superres.devices import cpu_has_native_bf16, cpu_name
from superres.errors import SuperresError
from superres.losses import build_loss, split_adversarial
from superres.modelfile import first_non_finite, load_initial_weights, save_model, warm_start_metadata
from superres.models import build
from superres.training import distributed
from superres.training.batches import IterationItems, build_train_dataset, training_batches
from superres.training.checkpoint import capture_rng, load_checkpoint, restore_rng, save_checkpoint
from superres.training.device_data import select_device_batches
from superres.training.ema import EMA
from superres.training.gan import GANTraining
from superres.training.graph_step import GraphStep
from superres.training.logging import RunLog
from superres.training.optim import build_optimizer, learning_rate, load_optimizer_state, set_learning_rate
from superres.training.runlock import RunLock
from superres.training.validation import Validator, check_val_folder

#: Called after every iteration on every rank with ``(iteration, model)`` (the unwrapped training
#: model, not the EMA copy): a hook for notebooks and tests (custom logging, early stopping by raising).
Callback = Callable[[int, nn.Module], None]


# --------------------------------------------------------------------------- entry points
def train_from_cli(
    config_path: str | Path, overrides: Sequence[str], *, resume: str | None, out: str | None
) -> Path:
    """``superres train``: load and override the config, pick the run folder, train; return the run folder.

    The run folder is ``--out``, else the folder given to ``--resume``, else the config's ``out``,
    else ``runs/<name>``, with relative paths resolved against the current directory.
    """
    config = load_config(config_path, overrides)
    resume_dir = None if resume in (None, "auto") else Path(resume)
    if resume_dir is not None and out is not None and Path(out).resolve() != resume_dir.resolve():
        raise SuperresError(f"--resume {resume} and --out {out} name different run folders; give one of them")
    run_dir = Path(out) if out is not None else resume_dir or Path(config.out or Path("runs") / config.name)
    train(config, run_dir=run_dir, resume=resume is not None)
    return run_dir.resolve()


def train(
    config: Config, *, run_dir: str | Path, resume: bool = False, callback: Callback | None = None
) -> Path:
    """Train ``config`` in ``run_dir``; return the exported model file (``<run_dir>/model.safetensors``).

    ``resume=True`` continues from ``<run_dir>/last.pt``; ``resume=False`` refuses a folder that
    already holds a checkpoint (so that a finished run is never overwritten by accident). The run
    folder is locked for the whole run (:mod:`superres.training.runlock`): a second training into the
    same folder is refused while this one runs. Relative
    paths in ``config`` are resolved against the current directory. Under ``torchrun`` every process
    calls this; only rank 0 writes files, and every rank returns the same path.

    Process-wide side effects: torch's global RNG is seeded with ``train.seed`` (the model's initial
    weights), and on CUDA the cuDNN flags are set from ``train.deterministic``.
    """
    run_dir = Path(run_dir).resolve()
    config = resolve_paths(dataclasses.replace(config, out=str(run_dir)))
    ctx = distributed.setup(config.train.device)
    previous_determinism = torch.are_deterministic_algorithms_enabled()
    try:
        _configure_determinism(config.train.deterministic, ctx.device)
        # One writer per run folder (rank 0 holds the lock for the whole distributed run).
        with RunLock(run_dir, enabled=ctx.is_main) as lock:
            trainer = Trainer(config, run_dir, ctx, resume=resume, callback=callback)
            if lock.note:
                trainer.log.message(lock.note)
            return trainer.run()
    finally:
        torch.use_deterministic_algorithms(previous_determinism)
        ctx.close()


def _configure_determinism(deterministic: bool, device: torch.device) -> None:
    """Ask torch for deterministic kernels (warn where one has none) or let cuDNN pick the fastest."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic


# --------------------------------------------------------------------------- precision
@dataclasses.dataclass(frozen=True)
class PrecisionPolicy:
    """How a run computes its training steps (:func:`precision_policy`)."""

    autocast_dtype: torch.dtype | None  #: the autocast dtype of the forward pass; None: no autocast
    channels_last: bool  #: the model and its input batches in channels_last memory format
    grad_scaler: bool  #: fp16's gradient (loss) scaler is on
    notes: tuple[str, ...] = ()  #: why a requested setting is ignored on this device, for the run log


def precision_policy(train_cfg: TrainConfig, device: torch.device) -> PrecisionPolicy:
    """The precision and memory layout of ``train_cfg`` (``amp``, ``channels_last``) on ``device``.

    On CUDA: bf16/fp16 autocast (fp16 with the gradient scaler), channels_last unless switched off.
    On the CPU: bf16 autocast only where the CPU computes bf16 natively (AVX512-BF16 or AMX:
    oneDNN's bf16 convolutions are then about 2x faster than fp32; elsewhere they are slower),
    and then channels_last too (oneDNN's preferred layout); ``channels_last: true`` forces it.
    Elsewhere ``amp`` is ignored, with a note saying why. Pure: it only reads the config, the
    device and what the CPU supports.
    """
    t = train_cfg
    cuda = device.type == "cuda"
    cpu_bf16 = device.type == "cpu" and t.amp == "bf16" and cpu_has_native_bf16()
    notes = []
    if cuda:
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.amp)
    else:
        amp_dtype = torch.bfloat16 if cpu_bf16 else None
        if t.amp != "none" and not cpu_bf16:
            if device.type != "cpu":
                why = "autocast is used on CUDA and the CPU only"
            elif t.amp == "fp16":
                why = "fp16 autocast is CUDA only (bf16 runs on CPUs with native bf16)"
            else:
                why = "this CPU has no native bf16 (AVX512-BF16 or AMX)"
            notes.append(f"train.amp={t.amp} ignored on {device.type}: {why}")
    channels_last = t.channels_last is True or (t.channels_last == "auto" and (cuda or cpu_bf16))
    return PrecisionPolicy(
        autocast_dtype=amp_dtype, channels_last=channels_last, grad_scaler=cuda and t.amp == "fp16", notes=tuple(notes)
    )


# --------------------------------------------------------------------------- the trainer
class Trainer:
    """One run: everything built in ``__init__``, the loop in :meth:`run`."""

    def __init__(
        self,
        config: Config,
        run_dir: Path,
        ctx: distributed.DistContext,
        *,
        resume: bool,
        callback: Callback | None,
    ) -> None:
        self.config = config
        self.run_dir = run_dir
        self.ctx = ctx
        self.callback = callback
        self.device = ctx.device
        self.checkpoint_path = run_dir / "last.pt"
        checkpoint = self._check_run_folder(resume)
        self.precision = precision_policy(config.train, self.device)
        self.cuda_graph = config.train.cuda_graph
        notes = [*self.precision.notes, *self._check_cuda_graph()]
        notes.append(self._build_data())
        self._build_model(warm_start=checkpoint is None)
        self._build_objective()
        # Progress state (restored from the checkpoint when resuming).
        self.iteration = 0
        self.elapsed = 0.0
        self.best: dict[str, Any] = {}
        self.last_scores: dict[str, Any] = {}
        self.window: dict[str, Any] = {"loss_sum": 0.0, "count": 0}  # losses since the last metrics row
        if checkpoint is not None:
            self._restore(checkpoint)
        self._wrap_for_step()
        self._build_validators()
        self.log = RunLog(run_dir, enabled=ctx.is_main, resume_from=self.iteration if checkpoint is not None else None)
        if ctx.is_main:
            save_config(config, run_dir / "config.yaml")
        for note in notes:
            self.log.message(note)

    # ----------------------------------------------------------------- building the run
    def _check_cuda_graph(self) -> list[str]:
        """Refuse ``train.cuda_graph`` with a setting it does not work with; the note for a device
        without CUDA graphs (on the CPU: the same step function, without a graph)."""
        if not self.cuda_graph:
            return []
        cuda = self.device.type == "cuda"
        conflict = _cuda_graph_conflict(self.config, distributed=self.ctx.enabled, cuda=cuda)
        if conflict is not None:
            raise SuperresError(f"train.cuda_graph: true does not work with {conflict}; set train.cuda_graph: false")
        if cuda:
            return []
        return [
            f"train.cuda_graph on {self.device.type}: the step runs as it would be captured, "
            "without a graph (CUDA graphs are CUDA only)"
        ]

    def _build_data(self) -> str:
        """Seed torch (the model's initial weights, built next) and set up the data: one global batch
        per iteration, of which this rank computes its shard. Returns the note on the data path."""
        config, seed = self.config, self.config.train.seed
        torch.manual_seed(seed)  # the model's initial weights (DDP also broadcasts rank 0's)
        dataset = build_train_dataset(config.data, scale=config.model.scale, in_channels=config.model.in_channels, seed=seed)
        self.items = IterationItems(dataset, batch_size=config.data.batch_size, seed=seed)
        self.slots = distributed.shard(config.data.batch_size, self.ctx)
        # The same batches either way: images kept on the device, or a DataLoader (data.device_resident).
        self.device_batches, data_note = select_device_batches(config.data, dataset, seed=seed, device=self.device)
        return data_note

    def _build_model(self, *, warm_start: bool) -> None:
        """The model (warm-started from ``model.init_from`` when ``warm_start``, i.e. in a fresh run),
        in the precision policy's memory format, and its EMA copy."""
        config = self.config
        self.model: nn.Module = build(
            config.model.name, scale=config.model.scale, in_channels=config.model.in_channels, **config.model.options
        ).to(self.device)
        # Where the starting weights came from (recorded in the exported model's metadata).
        self.parent: dict[str, Any] | None = None
        if config.model.init_from is not None and warm_start:
            self.parent = load_initial_weights(self.model, config.model.init_from, arch=config.model.name)
        if self.precision.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.ema = EMA(self.model, config.train.ema) if config.train.ema is not None else None

    def _build_objective(self) -> None:
        """Loss, optimizer and gradient scaler; with a discriminator, the adversarial side (built after
        the generator, whose initial weights therefore do not depend on whether one is configured)."""
        config, cuda = self.config, self.device.type == "cuda"
        content_terms, adversarial = split_adversarial(config.loss)
        self.loss_fn = build_loss(content_terms).to(self.device)
        self.optimizer = build_optimizer(
            config.optim, self.model.parameters(), self.device, capturable=self.cuda_graph and cuda
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision.grad_scaler)
        self.gan: GANTraining | None = None
        if config.discriminator is not None:
            if adversarial is None:
                raise SuperresError("discriminator: is set but the loss has no adversarial term")
            self.gan = GANTraining(
                config,
                adversarial,
                ctx=self.ctx,
                autocast=self._autocast,
                channels_last=self.precision.channels_last,
                fp16_scaler=self.scaler.is_enabled(),
            )
        elif adversarial is not None:
            raise SuperresError("loss: an adversarial term needs a 'discriminator' section")

    def _wrap_for_step(self) -> None:
        """What the model is wrapped in for training steps (DDP, ``torch.compile``) and the captured
        step of ``train.cuda_graph``; validation and export use ``self.model`` or the EMA copy."""
        t = self.config.train
        cuda = self.device.type == "cuda"
        self.step_model: nn.Module = self.model
        if self.ctx.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            self.step_model = DDP(self.model, device_ids=[self.device.index] if cuda else None)
        if t.compile:
            self.step_model = torch.compile(self.step_model, mode=None if t.compile is True else t.compile)
        # CUDA-graph modes: tell torch where each step begins, so that a replay may reuse the memory of
        # the last step's outputs (nothing keeps them past their step)
        self.mark_steps = cuda and t.compile in ("reduce-overhead", "max-autotune")
        self.graph_step: GraphStep | None = None
        if self.cuda_graph:
            self.graph_step = GraphStep(self._graph_body, device=self.device, capture=cuda)

    def _build_validators(self) -> None:
        """The validators of ``data.val`` and ``data.val_extra`` (on rank 0; the folders are checked
        on every rank, so that all fail together instead of hanging)."""
        config = self.config
        self.validator: Validator | None = None
        self.extra_validators: dict[str, Validator] = {}  # data.val_extra, by val_set_name()
        if config.data.val is not None:  # on every rank: fail together, not hang
            check_val_folder(config.data.val, config.model.scale)
        for folder in config.data.val_extra:
            check_val_folder(folder, config.model.scale, key="data.val_extra")
        if config.data.val is not None and self.ctx.is_main:
            self.validator, *extra = [
                Validator(folder, scale=config.model.scale, in_channels=config.model.in_channels,
                          limit=config.data.val_limit, device=self.device, perceptual=config.train.val_perceptual)
                for folder in [config.data.val, *config.data.val_extra]
            ]
            self.extra_validators = {val_set_name(v.root): v for v in extra}

    # ----------------------------------------------------------------- the loop
    def run(self) -> Path:
        t = self.config.train
        total = t.iterations
        loader = training_batches(
            self.items,
            self.device_batches,
            start=self.iteration + 1,
            stop=total,
            slots=self.slots,
            workers=self.config.data.workers,
            pin_memory=self.device.type == "cuda",
            descriptors=self.graph_step is not None,  # a captured step makes its own batch
        )
        self.log.start_progress(total=total, initial=self.iteration, max_seconds=t.max_seconds, elapsed=self.elapsed)
        if self.iteration > 0:
            self.log.message(f"resumed from {self.checkpoint_path} at iteration {self.iteration}")
        for v in [self.validator, *self.extra_validators.values()] if self.validator is not None else []:
            self.log.message(
                f"validation on {v.root} ({len(v.names)} images): "
                f"bicubic PSNR-Y {v.bicubic['psnr_y']:.2f} dB / SSIM-Y {v.bicubic['ssim_y']:.4f}"
            )
        started = time.monotonic() - self.elapsed
        saved_at = validated_at = -1
        self.model.train()
        limit = t.max_seconds
        lr = learning_rate(self.config.optim, self.config.schedule, self.iteration, total)
        for batch in loader:
            time_fraction = 0.0
            if limit is not None:
                now = self.ctx.from_main(time.monotonic() - started)  # one clock for all ranks
                if now >= limit:
                    break
                time_fraction = now / limit
            self.iteration += 1
            i = self.iteration
            lr = learning_rate(self.config.optim, self.config.schedule, i - 1, total, time_fraction)
            set_learning_rate(self.optimizer, lr)
            if self.gan is not None:
                self.gan.set_learning_rate(i - 1, total, time_fraction)
            loss = self._train_step(batch)
            self._track_divergence(loss, i)
            self.window["loss_sum"] += loss
            self.window["count"] += 1
            self.elapsed = time.monotonic() - started

            if i % t.log_every == 0 or i == total:
                self._log_training(lr)
            if self.validator is not None and i % t.val_every == 0:
                self._validate()
                validated_at = i
            if i % t.save_every == 0:
                self._save()
                saved_at = i
            self.log.advance(time.monotonic() - started)
            if self.callback is not None:
                self.callback(i, self.model)
        del loader  # stops worker processes, if any
        self.log.finish()  # the bar ends where the run stopped, iterations or max_seconds

        # The end, by iterations or by time: validate, checkpoint, export.
        self.elapsed = time.monotonic() - started
        if self.window["count"]:
            self._log_training(lr)
        if self.validator is not None and validated_at != self.iteration:
            self._validate()
        if saved_at != self.iteration:
            self._save()
        model_path = self.run_dir / "model.safetensors"
        if self.ctx.is_main:
            self._export(model_path, self.last_scores)
            self.log.plot(self.validator.bicubic["psnr_y"] if self.validator else None)
            self.log.message(self._summary(model_path))
        self.log.close()
        self.ctx.barrier()
        return model_path

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        """A fresh autocast context for the configured AMP dtype (a null context without AMP).
        Under ``train.cuda_graph`` without its cache of casted weights, which a graph must not keep."""
        dtype = self.precision.autocast_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype, cache_enabled=not self.cuda_graph)

    def _train_step(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        """One iteration's training step on ``batch`` (``(lr, hr)``, or ``(meta,)`` crop descriptors
        when the captured step makes its own batch), then the EMA update; returns the detached loss."""
        if self.graph_step is not None:
            (loss,) = self.graph_step(*batch)
        else:
            loss = self._step(*batch)
        if self.ema is not None:
            self.ema.update(self.model)
        return loss

    def _graph_body(self, *inputs: torch.Tensor) -> tuple[torch.Tensor]:
        """The step that ``train.cuda_graph`` captures: the batch from the crop descriptors (device-
        resident data) or the batch itself (DataLoader path), then :meth:`_step`."""
        if self.device_batches is not None:
            lr_batch, hr_batch = self.device_batches.batch_from(inputs[0])
        else:
            lr_batch, hr_batch = inputs
        return (self._step(lr_batch, hr_batch),)

    def _step(self, lr_batch: torch.Tensor, hr_batch: torch.Tensor) -> torch.Tensor:
        """One optimizer step on this rank's shard (then the discriminator's, in a GAN run);
        returns the (detached) generator loss."""
        t = self.config.train
        lr_batch = lr_batch.to(self.device, non_blocking=True)
        hr_batch = hr_batch.to(self.device, non_blocking=True)
        if self.precision.channels_last:
            lr_batch = lr_batch.contiguous(memory_format=torch.channels_last)
        if self.mark_steps:
            torch.compiler.cudagraph_mark_step_begin()
        with self._autocast():
            sr = self.step_model(lr_batch)
        loss = self.loss_fn(sr.float(), hr_batch)  # losses in float32 whatever the autocast dtype
        if self.gan is not None and self.gan.active(self.iteration):
            loss = loss + self.gan.generator_loss(sr, hr_batch)  # through the frozen discriminator
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if t.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.gan is not None:
            self.gan.discriminator_step(sr, hr_batch)  # real HR vs this iteration's SR, detached
        return loss.detach()

    # ----------------------------------------------------------------- logging, validation
    def _log_training(self, lr: float) -> None:
        count = self.window["count"]
        mean = float(self.window["loss_sum"]) / count
        self.window = {"loss_sum": 0.0, "count": 0}
        if not math.isfinite(mean):
            at = self._diverged_iteration() or self.iteration
            raise SuperresError(
                f"training diverged: the loss became {mean} at iteration {at}; "
                "lower optim.lr, set train.grad_clip, or use train.amp: bf16 instead of fp16"
            )
        values = {"elapsed_s": round(self.elapsed, 3), "lr": lr, "loss": mean}
        values.update({f"loss_{k}": v for k, v in self.loss_fn.last_values.items()})
        postfix = {"loss": f"{mean:.4g}", "lr": f"{lr:.2e}"}
        if self.gan is not None:
            values.update(self.gan.log_values())
            if "d_loss" in values:
                postfix["d_loss"] = f"{values['d_loss']:.4g}"
        self.log.record(self.iteration, values)
        self.log.set_postfix(postfix)

    def _eval_model(self) -> nn.Module:
        """The model that is validated and exported: the EMA copy when enabled."""
        return self.ema.module if self.ema is not None else self.model

    def _validate(self) -> None:
        assert self.validator is not None
        model = self._eval_model()
        scores = self.validator.score(model)
        extra = {name: v.score(model) for name, v in self.extra_validators.items()}
        b = self.validator.bicubic
        self.last_scores = {**scores, "iteration": self.iteration, "extra": extra}
        values = {
            "elapsed_s": round(self.elapsed, 3),
            "val_psnr_y": scores["psnr_y"],
            "val_ssim_y": scores["ssim_y"],
            "bicubic_psnr_y": b["psnr_y"],
            "bicubic_ssim_y": b["ssim_y"],
        }
        for name, s in extra.items():
            values[f"val_{name}_psnr_y"] = s["psnr_y"]
            values[f"val_{name}_ssim_y"] = s["ssim_y"]
        metric = self.validator.metric.metric_name if self.validator.metric is not None else None
        if metric:  # train.val_perceptual
            values.update({f"val_{metric}": scores[metric], f"bicubic_{metric}": b[metric]})
            values.update({f"val_{name}_{metric}": s[metric] for name, s in extra.items()})
        self.log.record(self.iteration, values)
        improved = not self.best or scores["psnr_y"] > self.best["psnr_y"]
        also = "".join(f"; {name} {s['psnr_y']:.2f} dB / {s['ssim_y']:.4f}" for name, s in extra.items())
        self.log.message(
            f"iteration {self.iteration}: PSNR-Y {scores['psnr_y']:.2f} dB / SSIM-Y {scores['ssim_y']:.4f} "
            f"({scores['psnr_y'] - b['psnr_y']:+.2f} dB over bicubic){' best' if improved else ''}{also}"
        )
        if improved:
            self.best = dict(self.last_scores)
            self._export(self.run_dir / "best.safetensors", self.best)
        self.log.plot(b["psnr_y"])

    # ----------------------------------------------------------------- files
    def _check_run_folder(self, resume: bool) -> dict[str, Any] | None:
        """Load ``last.pt`` when resuming; refuse to start a fresh run over an existing checkpoint."""
        if resume:
            return load_checkpoint(self.checkpoint_path, map_location="cpu")  # load_state_dict moves to the device
        if self.checkpoint_path.exists():
            raise SuperresError(
                f"{self.run_dir} already holds a training checkpoint (last.pt); "
                "pass --resume to continue it, or choose another run folder with --out"
            )
        return None

    def _state(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "elapsed": self.elapsed,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": capture_rng(),
            "best": self.best,
            "last_scores": self.last_scores,
            "window": {"loss_sum": float(self.window["loss_sum"]), "count": int(self.window["count"])},
            "gan": self.gan.state_dict() if self.gan is not None else None,
            "config": config_to_dict(self.config),
            "parent": self.parent,
        }

    def _restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint; one that is damaged or from an incompatible run (missing keys,
        wrong shapes, wrong types) is refused with a message naming it, never a traceback."""
        try:
            self._restore_state(state)
        except SuperresError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as exc:
            reason = f"missing {exc}" if isinstance(exc, KeyError) else " ".join(str(exc).split())
            if len(reason) > 200:
                reason = reason[:197] + "..."
            raise SuperresError(
                f"{self.checkpoint_path}: cannot resume from this checkpoint ({type(exc).__name__}: {reason}); "
                "it is damaged or from another run: start a new run folder with --out"
            ) from None

    def _restore_state(self, state: dict[str, Any]) -> None:
        # init_from only matters when a run starts, so it may differ (or move) on resume.
        saved_model = {k: v for k, v in state["config"]["model"].items() if k != "init_from"}
        current_model = {k: v for k, v in config_to_dict(self.config)["model"].items() if k != "init_from"}
        if saved_model != current_model:
            raise SuperresError(
                f"{self.checkpoint_path}: was trained with model {saved_model}, "
                f"not {current_model}; resume with the same model settings"
            )
        saved_gan = state.get("gan")
        if (saved_gan is None) != (self.gan is None):
            raise SuperresError(
                f"{self.checkpoint_path}: was trained {'with' if saved_gan is not None else 'without'} a discriminator; "
                "resume with the same 'discriminator' section (start a new run to add or remove one)"
            )
        if self.gan is not None:
            self.gan.load_state_dict(saved_gan, source=str(self.checkpoint_path))
        self.model.load_state_dict(state["model"])
        self.parent = state.get("parent")  # absent in checkpoints from before it was recorded
        load_optimizer_state(self.optimizer, state["optimizer"])
        if self.ema is not None:
            if state["ema"] is None:
                raise SuperresError(f"{self.checkpoint_path}: has no EMA state; resume with train.ema: null")
            self.ema.load_state_dict(state["ema"])
        if self.scaler.is_enabled() and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        if isinstance(state["iteration"], bool) or not isinstance(state["iteration"], int) or state["iteration"] < 0:
            raise TypeError(f"'iteration' must be an integer >= 0, got {state['iteration']!r}")
        self.iteration = int(state["iteration"])
        self.elapsed = float(state["elapsed"])
        self.best = dict(state["best"])
        self.last_scores = dict(state["last_scores"])
        self.window = {"loss_sum": float(state["window"]["loss_sum"]), "count": int(state["window"]["count"])}
        restore_rng(state["rng"])

    #: The first iteration whose loss was NaN or infinite (0: none yet), kept on the training device so
    #: that tracking it costs no synchronisation per step; read only when something is about to be saved.
    _diverged_at: torch.Tensor | None = None

    def _track_divergence(self, loss: torch.Tensor, iteration: int) -> None:
        if self._diverged_at is None:
            self._diverged_at = torch.zeros((), dtype=torch.int64, device=loss.device)
        bad = ~torch.isfinite(loss.detach()) & (self._diverged_at == 0)
        self._diverged_at = torch.where(bad, iteration, self._diverged_at)

    def _diverged_iteration(self) -> int:
        return 0 if self._diverged_at is None else int(self._diverged_at)

    def _check_finite(self, target: Path, *, all_ranks: bool = False) -> None:
        """Refuse to write ``target`` from a run that diverged: a non-finite loss so far, or NaN/Inf in
        the weights (the model's or the EMA's). Checked before every save, so ``last.pt`` and the model
        files only ever hold the state of a healthy run. ``all_ranks``: called on every rank, which
        then decide together (rank 0's loss record; the weights are the same on every rank)."""
        at = self._diverged_iteration()
        if all_ranks:
            at = int(self.ctx.from_main(float(at)))
        bad = first_non_finite(self.model.state_dict())
        if bad is None and self.ema is not None:
            bad = first_non_finite(self.ema.module.state_dict())
        if not at and bad is None:
            return
        where = f"at iteration {at}" if at else f"by iteration {self.iteration}"
        what = "the loss became non-finite" if at else f"the weights hold NaN/Inf (first in {bad!r})"
        raise SuperresError(
            f"training diverged {where}: {what}; {target.name} was not written (the files in {self.run_dir} "
            "keep the last healthy state); lower optim.lr, set train.grad_clip, or use train.amp: bf16 instead of fp16"
        )

    def _save(self) -> None:
        """Write ``last.pt`` on rank 0; every rank waits until it is complete."""
        self._check_finite(self.checkpoint_path, all_ranks=True)  # on every rank: fail together, not hang
        if self.ctx.is_main:
            save_checkpoint(self.checkpoint_path, self._state())
        self.ctx.barrier()

    def _export(self, path: Path, scores: dict[str, Any]) -> None:
        self._check_finite(path)
        c = self.config
        metadata: dict[str, Any] = {
            "name": c.name,
            "config": config_to_dict(c),
            "data": list(c.data.train) if c.data.train_pairs is None else [c.data.train_pairs],
            "iterations": self.iteration,
            "wall_time_s": round(self.elapsed, 3),
            "ema": c.train.ema is not None,
            "hardware": _hardware(self.device),
        }
        if self.parent is not None:
            metadata.update(warm_start_metadata(self.parent, self.iteration, self.elapsed))
        if self.validator is not None and scores:
            set_name = val_set_name(str(self.validator.root))
            sets = {set_name: (self.validator, scores)}
            sets.update({name: (v, scores.get("extra", {}).get(name)) for name, v in self.extra_validators.items()})
            metadata["scores"] = {
                name: {
                    "psnr_y": s["psnr_y"],
                    "ssim_y": s["ssim_y"],
                    "bicubic_psnr_y": v.bicubic["psnr_y"],
                    "bicubic_ssim_y": v.bicubic["ssim_y"],
                    "iteration": scores["iteration"],
                    "images": len(v.names),
                }
                for name, (v, s) in sets.items()
                if s is not None
            }
            metadata["validation"] = {"set": str(self.validator.root), "scale": c.model.scale}
        model = self._eval_model()
        args = {"scale": c.model.scale, "in_channels": c.model.in_channels, **c.model.options}
        save_model(path, _contiguous_copy(model), arch=c.model.name, args=args, metadata=metadata)

    def _summary(self, model_path: Path) -> str:
        text = f"done: {self.iteration} iterations in {self.elapsed:.0f} s; model {model_path}"
        if self.last_scores and self.validator is not None:
            gain = self.last_scores["psnr_y"] - self.validator.bicubic["psnr_y"]
            text += f"; PSNR-Y {self.last_scores['psnr_y']:.2f} dB ({gain:+.2f} over bicubic)"
        return text


def _cuda_graph_conflict(config: Config, *, distributed: bool, cuda: bool) -> str | None:
    """The setting that rules out ``train.cuda_graph`` (``None`` when there is none): each needs the
    host in the middle of a step (fp16's loss scaler reads back whether gradients overflowed; DDP
    and a discriminator step run their own host logic), or captures graphs of its own (``compile``)."""
    t = config.train
    if t.compile:
        return f"train.compile: {t.compile} (reduce-overhead already replays CUDA graphs; use one or the other)"
    if cuda and t.amp == "fp16":
        return "train.amp: fp16 (its loss scaler synchronises with the host every step; use bf16)"
    if config.discriminator is not None:
        return "a discriminator (adversarial training)"
    if distributed:
        return "multi-process (DDP) training"
    return None


def _hardware(device: torch.device) -> str:
    """Where a run trained, for the model's metadata: the GPU's name, or the CPU model and torch's
    thread count (wall times mean little without it)."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return f"{cpu_name()}, {torch.get_num_threads()} torch thread(s)"


def _contiguous_copy(model: nn.Module) -> nn.Module:
    """``model`` itself, or a copy in the default memory format when it was trained channels_last
    (safetensors stores contiguous tensors; save_model makes them contiguous anyway, this keeps the
    exported model usable as a plain module too)."""
    if any(p.dim() == 4 and not p.is_contiguous() for p in model.parameters()):
        import copy

        return copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    return model
