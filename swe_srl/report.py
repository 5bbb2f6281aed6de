"""`swe-srl report RUN_DIR`: plots and a markdown summary of a training run.

Reads ``metrics.jsonl`` and ``rollouts.jsonl`` (written by :mod:`swe_srl.rl.run_log`) and writes
into ``RUN_DIR/report/``: ``reward.png`` (train reward per step and greedy val reward; the loss
for SFT runs), ``filter_rate.png`` (share of groups dropped by dynamic sampling),
``reward_hist.png`` (rewards of the first and last quarter of the run), ``length.png`` (mean
completion length) and ``summary.md``. Plots need matplotlib (the ``train`` extra); it runs
headless (Agg backend).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, InputError
from .rl.run_log import METRICS_FILE, ROLLOUTS_FILE, read_jsonl

REPORT_DIR = "report"


@dataclass(frozen=True)
class RunReport:
    """Where the report went and the numbers it states."""

    summary: Path
    plots: tuple[Path, ...]
    headline: dict[str, float] = field(default_factory=dict)


def _series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    pairs = [(int(r["step"]), float(r[key])) for r in rows if key in r]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise ConfigError("swe-srl report needs matplotlib: pip install 'swe-srl[train]'") from exc
    matplotlib.use("Agg")  # headless: no display on training machines
    import matplotlib.pyplot as plt

    return plt


def _line_plot(path: Path, title: str, ylabel: str,
               curves: Sequence[tuple[str, list[int], list[float]]]) -> Path | None:
    curves = [c for c in curves if c[1]]
    if not curves:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, xs, ys in curves:
        ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=label)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(curves) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _reward_histogram(path: Path, rollouts: Sequence[dict[str, Any]]) -> Path | None:
    steps = [r for r in rollouts if r.get("rewards")]
    if not steps:
        return None
    quarter = max(1, len(steps) // 4)
    parts = [("first quarter", steps[:quarter]), ("last quarter", steps[-quarter:])]
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = [i / 20 for i in range(-20, 21)]
    for label, chunk in parts if len(steps) > 1 else parts[:1]:
        values = [v for r in chunk for group in r["rewards"] for v in group if v is not None]
        ax.hist(values, bins=bins, alpha=0.6, label=f"{label} ({len(values)})")
    ax.set_title("reward distribution of sampled completions")
    ax.set_xlabel("reward (-1 = format error)")
    ax.set_ylabel("completions")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _first_last(rows: Sequence[dict[str, Any]], key: str) -> tuple[float | None, float | None]:
    _, ys = _series(rows, key)
    return (ys[0], ys[-1]) if ys else (None, None)


def _summary(run_dir: Path, metrics: list[dict], rollouts: list[dict], plots: list[Path]) -> tuple[str, dict]:
    config = {}
    if (run_dir / "config.yaml").exists():
        config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) or {}
    method = config.get("method", "?")
    steps = max((int(r["step"]) for r in metrics), default=0)
    lines = [f"# Training run `{run_dir.name}`", "", f"- method: **{method}**, steps: **{steps}**"]
    for section, keys in (("grpo", ("num_generations", "temperature", "beta")),
                          ("reward", ("similarity", "compare", "tool_mismatch")),
                          ("optim", ("lr", "batch_size", "schedule")), ("model", ("path",))):
        values = config.get(section, {}) or {}
        if values:
            lines.append(f"- {section}: " + ", ".join(f"{k} {values.get(k)}" for k in keys if k in values))
    headline: dict[str, float] = {}
    table = ["", "| metric | first | last |", "|---|---|---|"]
    for key in ("val/reward", "val/format_error_rate", "val/similarity", "val/exact_match", "reward/mean",
                "reward/format_error_rate", "filter_rate", "completion_len/mean", "train/loss",
                "train/grad_norm", "tokens_per_s", "step_time"):
        first, last = _first_last(metrics, key)
        if first is None:
            continue
        table.append(f"| {key} | {_fmt(first)} | {_fmt(last)} |")
        headline[f"{key}/first"], headline[f"{key}/last"] = first, last
    lines += table
    if rollouts:
        drawn = sum(len(r.get("ids", [])) for r in rollouts)
        lines += ["", f"{drawn} step targets drawn over {len(rollouts)} steps "
                      f"(last data position {rollouts[-1].get('data_position')})."]
    lines += [""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n", headline


def write_report(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> RunReport:
    """Write the plots and ``summary.md`` of a run (into ``RUN_DIR/report`` by default)."""
    run = Path(run_dir)
    metrics = read_jsonl(run / METRICS_FILE)
    if not metrics:
        raise InputError(f"{run} has no {METRICS_FILE}: not a training run folder (or nothing logged yet)")
    rollouts = read_jsonl(run / ROLLOUTS_FILE)
    out = Path(out_dir) if out_dir is not None else run / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    plots = [
        _line_plot(out / "reward.png", "reward", "mean reward",
                   [("train (sampled)", *_series(metrics, "reward/mean")),
                    ("val (greedy)", *_series(metrics, "val/reward"))]),
        _line_plot(out / "loss.png", "training loss", "loss", [("loss", *_series(metrics, "train/loss"))]),
        _line_plot(out / "filter_rate.png", "groups dropped by dynamic sampling", "share of groups",
                   [("filter rate", *_series(metrics, "filter_rate"))]),
        _reward_histogram(out / "reward_hist.png", rollouts),
        _line_plot(out / "length.png", "completion length", "tokens",
                   [("mean completion tokens", *_series(metrics, "completion_len/mean"))]),
    ]
    written = [p for p in plots if p is not None]
    text, headline = _summary(run, metrics, rollouts, written)
    summary = out / "summary.md"
    summary.write_text(text, encoding="utf-8")
    return RunReport(summary=summary, plots=tuple(written), headline=headline)
