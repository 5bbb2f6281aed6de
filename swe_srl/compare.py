"""`swe-srl report RUN_A RUN_B ...`: several training runs' curves overlaid in one PNG, and
one markdown table of their first/last values and where each run came from.

An SFT warm start and the SRL run after it, or SFT vs SRL at equal compute, are then one
command. Panels: train reward (sampled), held-out reward (greedy), format errors (held-out
solid, sampled dashed), distinct held-out answers, response length and training loss. A run
that did not log a metric has no line in that panel (SFT logs no reward), and a panel no run
logged says so.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import InputError
from .provenance import read_provenance
from .report import _pyplot, _series
from .rl.run_log import METRICS_FILE, read_jsonl

COMPARE_PNG = "compare.png"
COMPARE_MD = "compare.md"
# (panel title, y label, [(metric key, line style)])
PANELS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("train reward (sampled)", "mean reward", (("reward/mean", "-"),)),
    ("held-out reward (greedy)", "mean reward", (("val/reward", "-"),)),
    ("format errors", "share (solid: held-out, dashed: sampled)",
     (("val/format_error_rate", "-"), ("reward/format_error_rate", "--"))),
    ("distinct held-out answers", "share of targets", (("val/distinct_answers", "-"),)),
    ("response length", "mean completion tokens", (("completion_len/mean", "-"),)),
    ("training loss", "loss", (("train/loss", "-"),)),
)
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")  # runs whose curves coincide stay visible
TABLE_KEYS = ("reward/mean", "val/reward", "val/format_error_rate", "val/distinct_answers",
              "completion_len/mean", "train/loss")


@dataclass(frozen=True)
class Run:
    """One run's label, logged metrics, config and provenance."""

    path: Path
    label: str
    metrics: list[dict[str, Any]]
    config: dict[str, Any]
    provenance: dict[str, Any] | None


def labels(paths: Sequence[Path]) -> list[str]:
    """The shortest path suffixes that tell the runs apart (seed-0/sft vs seed-1/sft)."""
    parts = [p.resolve().parts for p in paths]
    for n in range(1, max(len(p) for p in parts) + 1):
        names = ["/".join(p[-n:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


def load_runs(paths: Sequence[str | os.PathLike]) -> list[Run]:
    folders = [Path(p) for p in paths]
    for folder in folders:
        if not (folder / METRICS_FILE).is_file():
            raise InputError(f"{folder} has no {METRICS_FILE}: not a training run folder (or nothing logged yet)")
    if len({f.resolve() for f in folders}) != len(folders):
        raise InputError("the same run is named twice")
    runs = []
    for folder, label in zip(folders, labels(folders)):
        config = {}
        if (folder / "config.yaml").is_file():
            config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}
        metrics = read_jsonl(folder / METRICS_FILE)
        if not metrics:
            raise InputError(f"{folder}/{METRICS_FILE} is empty: nothing logged yet")
        runs.append(Run(folder, label, metrics, config, read_provenance(folder)))
    return runs


def plot(runs: Sequence[Run], path: Path) -> Path:
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, ylabel, keys) in zip(axes.flat, PANELS):
        drawn = 0
        for k, run in enumerate(runs):
            for key, style in keys:
                xs, ys = _series(run.metrics, key)
                if xs:
                    # earlier runs drawn wider and below, so an identical later curve shows on top
                    ax.plot(xs, ys, style, color=colors[k % len(colors)], zorder=2 + k,
                            linewidth=1.2 + 1.5 * (len(runs) - 1 - k) / max(len(runs) - 1, 1),
                            marker=MARKERS[k % len(MARKERS)] if len(xs) < 30 else None, markersize=4)
                    drawn += 1
        if not drawn:
            ax.text(0.5, 0.5, "not logged by these runs", ha="center", va="center", transform=ax.transAxes,
                    color="gray")
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    handles = [plt.Line2D([], [], color=colors[k % len(colors)], marker=MARKERS[k % len(MARKERS)], label=run.label)
               for k, run in enumerate(runs)]
    fig.legend(handles=handles, loc="upper center", ncol=min(len(runs), 4), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _first_last(run: Run, key: str) -> str:
    _, ys = _series(run.metrics, key)
    if not ys:
        return "-"
    return f"{ys[0]:.3g} -> {ys[-1]:.3g}" if len(ys) > 1 else f"{ys[0]:.3g}"


def table(runs: Sequence[Run]) -> str:
    """The markdown table: per run, method, steps, data and code, then each metric first -> last."""
    head = ["run", "method", "steps", "dataset hash", "code", *TABLE_KEYS]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for run in runs:
        prov = run.provenance or {}
        dataset = (prov.get("dataset") or {}).get("hash")
        code = (prov.get("code") or {}).get("git_commit")
        steps = max((int(r["step"]) for r in run.metrics if "step" in r), default=0)
        row = [f"`{run.label}`", str(run.config.get("method") or prov.get("method") or "?"), str(steps),
               dataset[:12] if dataset else "-", code[:10] if code else "-",
               *(_first_last(run, key) for key in TABLE_KEYS)]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def compare_runs(paths: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """Write ``compare.png`` and ``compare.md`` for the runs into ``out_dir``."""
    if len(paths) < 2:
        raise InputError("compare needs at least two runs")
    runs = load_runs(paths)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = plot(runs, out / COMPARE_PNG)
    text = ["# Runs side by side", "", "Each metric as first -> last logged value (val/*: held-out step targets, "
            "greedy; reward/*: the sampled training completions).", "", table(runs), "",
            *(f"- `{run.label}`: {run.path}" for run in runs), "", f"![curves]({png.name})", ""]
    md = out / COMPARE_MD
    md.write_text("\n".join(text), encoding="utf-8")
    return png, md
