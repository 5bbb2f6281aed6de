"""What a training run records in its directory, and what it shows while it runs.

* ``metrics.jsonl``   one JSON object per logged step (scalars only; ``step`` always present)
* ``rollouts.jsonl``  per step: the step-target ids drawn (in order), their rewards and
                      completion lengths; the report's histograms and the resume check read it
* ``tensorboard/``    event files (torch.utils.tensorboard), when enabled
* Weights & Biases    when enabled and the ``wandb`` package is installed

Only rank 0 writes. On ``--resume`` from step k, lines the killed run wrote after step k are
dropped first, so the files read as one uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..config import RunConfig

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
ROLLOUTS_FILE = "rollouts.jsonl"


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a torn last line (a killed writer) is skipped."""
    rows: list[dict[str, Any]] = []
    p = Path(path)
    if not p.exists():
        return rows
    with p.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def truncate_after(path: Path, step: int) -> None:
    """Keep only rows with ``step <= step`` (atomically rewritten)."""
    if not path.exists():
        return
    kept = [row for row in read_jsonl(path) if int(row.get("step", 0)) <= step]
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in kept:
            fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(value):
            out[key] = float(value)
    return out


class RunLogger:
    """Metrics sink of one run (a no-op on ranks other than 0). With ``resume_step`` k, rows
    logged after step k are dropped first (-1 drops all: a fresh start in a used folder)."""

    def __init__(self, run_dir: str | os.PathLike, config: RunConfig, *, enabled: bool = True,
                 resume_step: int | None = None, hparams: Mapping[str, Any] | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._tb = None
        self._wandb = None
        self._files: dict[str, Any] = {}
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            for name in (METRICS_FILE, ROLLOUTS_FILE):
                truncate_after(self.run_dir / name, resume_step)
        for name in (METRICS_FILE, ROLLOUTS_FILE):
            self._files[name] = open(self.run_dir / name, "a", encoding="utf-8")
        if config.tensorboard:
            self._tb = self._open_tensorboard(resume_step)
        if config.wandb:
            self._wandb = self._open_wandb(config, hparams or {})

    def _open_tensorboard(self, resume_step: int | None) -> Any:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is in the train extra; the run goes on without it
            log.warning("tensorboard is not installed; writing metrics.jsonl only")
            return None
        # purge_step hides the events a killed run wrote after its last checkpoint.
        purge = None if resume_step is None else resume_step + 1
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"), purge_step=purge)

    def _open_wandb(self, config: RunConfig, hparams: Mapping[str, Any]) -> Any:
        try:
            import wandb
        except ImportError:
            log.warning("run.wandb is on but the wandb package is not installed; skipping it")
            return None
        return wandb.init(project=config.wandb_project, dir=str(self.run_dir), config=dict(hparams),
                          name=self.run_dir.name, resume="allow")

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        """Record one step's scalars."""
        if not self.enabled:
            return
        row = {"step": step, "time": round(time.time(), 3), **_scalars(metrics)}
        self._write(METRICS_FILE, row)
        scalars = _scalars(metrics)
        if self._tb is not None:
            for key, value in scalars.items():
                self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)

    def log_rollouts(self, step: int, record: Mapping[str, Any]) -> None:
        """Record what one step drew and scored (ids, rewards, lengths)."""
        if self.enabled:
            self._write(ROLLOUTS_FILE, {"step": step, **record})

    def _write(self, name: str, row: Mapping[str, Any]) -> None:
        fh = self._files[name]
        fh.write(json.dumps(row) + "\n")
        fh.flush()

    def flush(self) -> None:
        """Make what was logged durable (called before each checkpoint)."""
        for fh in self._files.values():
            fh.flush()
            os.fsync(fh.fileno())
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        self.flush()
        for fh in self._files.values():
            fh.close()
        self._files.clear()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ProgressView:
    """A rich progress bar on a terminal; one plain line per logged step elsewhere (CI logs)."""

    def __init__(self, total: int, start: int, *, enabled: bool, label: str) -> None:
        self.enabled = enabled
        self._bar = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._console = Console(stderr=True)
        if self._console.is_terminal:
            self._bar = Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(),
                                 TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                                 console=self._console)
            self._task = self._bar.add_task(label, total=total, completed=start, info="")
            self._bar.start()

    def update(self, step: int, info: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        text = "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items())
        if self._bar is not None:
            self._bar.update(self._task, completed=step, info=text)
        else:
            self._console.print(f"step {step}  {text}", highlight=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
