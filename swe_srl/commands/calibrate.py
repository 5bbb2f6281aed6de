"""`swe-srl env calibrate`: which tasks are stable, flaky or broken (gold and empty patches
graded N times each in fresh containers)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from .. import paths
from ..calibration import VERDICTS, TaskCalibration
from ..config_loader import load_config
from ..evaluate import EvalConfig
from ..tasks import load_tasks

_COLOUR = {"stable": "green", "flaky": "yellow", "broken": "red", "unknown": "magenta"}


def calibrate_command(
    tasks: str = typer.Option("demo", "--tasks", help="'demo' (bundled tasks), a task folder, a SWE-bench "
                                                      ".jsonl/.json/.parquet file, or a dataset name."),
    subset: str | None = typer.Option(None, "--subset", help="Named id list, e.g. verified-mini, demo."),
    ids: str | None = typer.Option(None, "--ids", help="Comma-separated instance ids."),
    filter_: str | None = typer.Option(None, "--filter", help="Regex searched in instance ids."),
    runs: int = typer.Option(5, "--runs", "-n", help="Gradings of the gold patch, and of the empty patch, per task."),
    workers: int = typer.Option(1, "-j", "--workers", help="Gradings in parallel (each in its own container)."),
    out: Path = typer.Option(paths.DEFAULT_CALIBRATION, "-o", "--out", help="The calibration file (JSON); an existing "
                                                                            "one is resumed."),
    config: str | None = typer.Option(None, "--config", "-c", help="A preset name or YAML file: its `eval:` section's "
                                                                   "harness.grading is used."),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Dotted override of the eval config, e.g. --set "
                                                                "harness.grading.test_timeout=120"),
) -> None:
    """Grade each task's gold patch and an empty patch N times in fresh containers and write
    per-task pass rates and a verdict: stable, flaky or broken (see README)."""
    from ..sandbox.calibrate import calibrate_tasks  # the engine's client only when it runs

    grading = load_config(EvalConfig, config, overrides, section="eval").harness.grading
    selected = load_tasks(tasks, ids=tuple(i.strip() for i in ids.split(",") if i.strip()) if ids else None,
                          filter=filter_, subset=subset)
    console = Console()
    table = Table(title=f"calibration ({runs} runs per patch)")
    for column in ("task", "verdict", "gold resolved", "empty resolved", "infra", "s/run", "why"):
        table.add_column(column, overflow="fold")

    def show(entry: TaskCalibration, resumed: bool) -> None:
        gold, empty = entry.gold, entry.empty
        seconds = (gold.seconds + empty.seconds) / max(gold.runs + empty.runs, 1)
        table.add_row(entry.instance_id + (" (earlier)" if resumed else ""),
                      f"[{_COLOUR[entry.verdict]}]{entry.verdict}[/]", f"{gold.resolved}/{gold.graded}",
                      f"{empty.resolved}/{empty.graded}", str(gold.infra_failures + empty.infra_failures),
                      f"{seconds:.2f}", "; ".join(entry.reasons)[:200])
        if not resumed:
            console.print(f"{entry.instance_id}: [{_COLOUR[entry.verdict]}]{entry.verdict}[/]")

    calibration = calibrate_tasks(selected, out, runs=runs, workers=workers, grading=grading, on_task=show)
    console.print(table)
    mine = [calibration.entries[t.instance_id] for t in selected]
    counts = {v: sum(e.verdict == v for e in mine) for v in VERDICTS}
    console.print(", ".join(f"{n} {v}" for v, n in counts.items()) + f"; written to {out}")
    if counts["unknown"]:
        typer.secho(f"{counts['unknown']} task(s) got no verdict (infrastructure failures only): "
                    "fix the engine and rerun to retry them", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
