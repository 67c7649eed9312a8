"""What a run reports: progress bar, ``metrics.csv``, TensorBoard events, ``curves.png``.

Only rank 0 reports; other ranks get a :class:`RunLog` with ``enabled=False`` and every method is
a no-op.

``metrics.csv`` has one row per logged iteration. Columns:

* ``iteration`` and ``elapsed_s``: training wall time, accumulated across resumes;
* ``lr``: the learning rate of that iteration;
* ``loss``: mean total loss over the iterations since the previous row;
* ``loss_<term>``: the unweighted value of each loss term at that iteration (for example
  ``loss_l1`` or ``loss_perceptual``);
* ``val_psnr_y``, ``val_ssim_y``, ``bicubic_psnr_y``, ``bicubic_ssim_y``: on validation rows.

The whole file is rewritten through an atomic rename at each row. This is a few hundred rows for a
typical run, and a killed run never leaves a torn file. On resume, rows after the checkpoint's
iteration are dropped, because the resumed run writes them again.

TensorBoard events go to ``<run>/tensorboard`` when ``torch.utils.tensorboard`` imports (that is,
when the ``tensorboard`` package is installed); otherwise this step is skipped without a message.
Event files are append-only logs and are not written atomically. ``curves.png`` (matplotlib, Agg
backend) plots the loss and the validation PSNR against the iteration, with the bicubic PSNR as a
dashed line. It is redrawn at each validation and at the end of the run.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from pathlib import Path
from typing import Any

from superres.io import atomic_write
FIXED_COLUMNS = ("iteration", "elapsed_s", "lr", "loss")
VAL_COLUMNS = ("val_psnr_y", "val_ssim_y", "bicubic_psnr_y", "bicubic_ssim_y")


def expected_stop(iteration: int, elapsed: float, *, since: tuple[int, float], iterations: int,
                  max_seconds: float) -> int:
    """The iteration a run with a time budget is expected to stop at: ``iterations``, or the one
    reached at ``max_seconds`` if sooner, at the rate measured since ``since`` (an ``(iteration,
    elapsed)`` pair: this process's start). Never below ``iteration`` (reached already); before any
    time has passed, ``iterations``."""
    done, spent = iteration - since[0], elapsed - since[1]
    if done <= 0 or spent <= 0:
        return iterations
    projected = iteration + done / spent * max(0.0, max_seconds - elapsed)
    return max(iteration, min(iterations, math.ceil(projected)))


class RunLog:
    """Rank 0's reporter for one run folder."""

    def __init__(self, run_dir: Path, *, enabled: bool, resume_from: int | None = None) -> None:
        self.enabled = enabled
        self.run_dir = Path(run_dir)
        self.csv_path = self.run_dir / "metrics.csv"
        self.rows: dict[int, dict[str, Any]] = {}
        self._bar: Any = None
        self._iterations = 0
        self._max_seconds: float | None = None
        self._since = (0, 0.0)
        self._tb: Any = None
        if not enabled:
            return
        if resume_from is not None and self.csv_path.is_file():
            self.rows = {it: row for it, row in read_metrics(self.csv_path).items() if it <= resume_from}
            self._write_csv()
        self._tb = _tensorboard_writer(self.run_dir / "tensorboard", purge_step=(resume_from or 0) + 1)

    # ----------------------------------------------------------------- progress
    def start_progress(self, *, total: int, initial: int, max_seconds: float | None = None,
                       elapsed: float = 0.0) -> None:
        """A tqdm bar over iterations (shows it/s and the ETA), on stderr.

        ``total`` is ``train.iterations``. With a time budget (``max_seconds``; ``elapsed`` is the
        wall time already spent, e.g. before a resume) the run may stop earlier, so the bar's total
        is the iteration the run is expected to stop at: ``total``, or sooner the iteration reached
        at ``max_seconds`` at the rate measured so far (re-estimated at each :meth:`advance`). The
        ETA is then the time to whichever end comes first, and :meth:`finish` makes the bar end at
        the real stop."""
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        self._iterations = total
        self._max_seconds = max_seconds
        self._since = (initial, elapsed)
        self._bar = tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True, mininterval=1.0, file=sys.stderr)

    def advance(self, elapsed: float | None = None) -> None:
        """One iteration done; ``elapsed`` is the run's wall time now (needed with a time budget)."""
        if self._bar is None:
            return
        self._bar.update(1)
        if self._max_seconds is not None and elapsed is not None:
            self._bar.total = expected_stop(self._bar.n, elapsed, since=self._since,
                                            iterations=self._iterations, max_seconds=self._max_seconds)

    def finish(self) -> None:
        """The run stopped (by iterations or by time): the bar ends at the iteration reached, 100%."""
        if self._bar is not None and self._bar.total != self._bar.n:
            self._bar.total = self._bar.n
            self._bar.refresh()

    def set_postfix(self, values: dict[str, str]) -> None:
        """Show ``values`` (loss, lr) after the bar; set at each metrics row, not every iteration,
        so that reading the loss does not synchronise with the GPU every step."""
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def message(self, text: str) -> None:
        """One line on stderr that does not break the progress bar."""
        if not self.enabled:
            return
        from tqdm.auto import tqdm

        tqdm.write(text, file=sys.stderr)

    # ----------------------------------------------------------------- metrics
    def record(self, iteration: int, values: dict[str, float]) -> None:
        """Merge ``values`` into the row of ``iteration``, rewrite ``metrics.csv``, send to TensorBoard."""
        if not self.enabled:
            return
        row = self.rows.setdefault(iteration, {"iteration": iteration})
        row.update(values)
        self._write_csv()
        if self._tb is not None:
            for key, value in values.items():
                if key not in ("iteration", "elapsed_s") and value is not None and math.isfinite(value):
                    self._tb.add_scalar(_tb_tag(key), value, iteration)
            self._tb.flush()

    def _write_csv(self) -> None:
        columns = list(FIXED_COLUMNS)
        extra = [k for row in self.rows.values() for k in row if k not in FIXED_COLUMNS and k not in VAL_COLUMNS]
        columns += list(dict.fromkeys(extra)) + list(VAL_COLUMNS)
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for it in sorted(self.rows):
            writer.writerow({k: _fmt(v) for k, v in self.rows[it].items()})
        with atomic_write(self.csv_path) as tmp:
            Path(tmp).write_text(buf.getvalue(), encoding="utf-8")

    # ----------------------------------------------------------------- curves
    def plot(self, bicubic_psnr: float | None = None) -> None:
        """Write ``curves.png``: loss (log scale) and validation PSNR-Y against the iteration."""
        if not self.enabled or not self.rows:
            return
        from matplotlib.figure import Figure  # no pyplot: renders with Agg, leaves a notebook's backend alone

        its = sorted(self.rows)
        loss = [(i, self.rows[i]["loss"]) for i in its if _finite(self.rows[i].get("loss"))]
        val = [(i, self.rows[i]["val_psnr_y"]) for i in its if _finite(self.rows[i].get("val_psnr_y"))]
        fig = Figure(figsize=(10, 4), dpi=100)
        ax_loss, ax_val = fig.subplots(1, 2)
        if loss:
            ax_loss.plot(*zip(*loss), lw=1.2, color="tab:blue")
            if all(v > 0 for _, v in loss):
                ax_loss.set_yscale("log")
        ax_loss.set(xlabel="iteration", ylabel="training loss", title="loss")
        ax_loss.grid(True, alpha=0.3)
        if val:
            ax_val.plot(*zip(*val), marker="o", ms=3, lw=1.2, color="tab:red", label="model")
        if bicubic_psnr is not None:
            ax_val.axhline(bicubic_psnr, ls="--", color="gray", label=f"bicubic {bicubic_psnr:.2f} dB")
        ax_val.set(xlabel="iteration", ylabel="PSNR-Y (dB)", title="validation")
        ax_val.grid(True, alpha=0.3)
        if val or bicubic_psnr is not None:
            ax_val.legend(loc="lower right")
        fig.subplots_adjust(left=0.1, right=0.98, bottom=0.13, top=0.9, wspace=0.28)  # tight_layout costs ~1 s
        with atomic_write(self.run_dir / "curves.png") as tmp:
            fig.savefig(tmp, format="png")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._tb is not None:
            self._tb.close()
            self._tb = None


def read_metrics(path: Path) -> dict[int, dict[str, Any]]:
    """``metrics.csv`` as ``{iteration: {column: float}}`` (empty cells left out)."""
    rows: dict[int, dict[str, Any]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            if not raw.get("iteration"):
                continue
            it = int(raw["iteration"])
            row: dict[str, Any] = {"iteration": it}
            for key, value in raw.items():
                if key != "iteration" and value not in (None, ""):
                    row[key] = float(value)
            rows[it] = row
    return rows


def _tensorboard_writer(log_dir: Path, purge_step: int) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # tensorboard is optional: not installed (ImportError) or broken install
        return None
    try:
        return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
    except Exception:
        return None


def _tb_tag(key: str) -> str:
    return ("val/" if key.startswith(("val_", "bicubic_")) else "train/") + key


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    return value
