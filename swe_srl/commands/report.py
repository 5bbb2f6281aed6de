"""`swe-srl report RUN_DIR`: plots, a markdown summary and the provenance of a training run;
`swe-srl report RUN_A RUN_B ...`: their curves overlaid in one PNG and one markdown table."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from ..errors import InputError
from ..paths import RUNS_DIR
from ..provenance import PROVENANCE_FILE, describe, read_provenance
from ..report import write_report
from ..rl.run_log import METRICS_FILE

DEFAULT_COMPARE_DIR = RUNS_DIR / "compare"


def _provenance_of(folder: Path) -> dict | None:
    """A run's or dataset's provenance.json, or an eval folder's summary.json provenance."""
    found = read_provenance(folder)
    if found is not None:
        return found
    for name in ("summary.json", "steps_summary.json"):
        try:
            summary = json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(summary, dict) and isinstance(summary.get("provenance"), dict):
            return summary["provenance"]
    return None


def report_command(
    runs: list[Path] = typer.Argument(..., help="A `swe-srl train` run folder (a dataset or eval folder: its "
                                                "provenance only), or several runs to compare."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Where to write. Default: RUN_DIR/report, "
                                       "or runs/compare for several runs."),
) -> None:
    """Plot reward, filter rate, reward histogram and completion length; write summary.md; print
    where the run came from. With several runs: compare.png and compare.md."""
    for run in runs:
        if not run.is_dir():
            raise InputError(f"no such run folder: {run}")
    if len(runs) > 1:
        from ..compare import compare_runs

        png, md = compare_runs(runs, out or DEFAULT_COMPARE_DIR)
        typer.echo(md.read_text(encoding="utf-8").split("\n\n- ")[0].split("\n\n", 2)[-1])
        typer.echo(f"wrote {png} and {md}")
        return
    run = runs[0]
    provenance = _provenance_of(run)
    if (run / METRICS_FILE).exists() or provenance is None:
        report = write_report(run, out)
        if provenance:
            with report.summary.open("a", encoding="utf-8") as fh:
                fh.write("\n## Provenance\n\n```\n" + "\n".join(describe(provenance)) + "\n```\n")
        typer.echo(f"wrote {report.summary} and {len(report.plots)} plots")
    typer.echo("provenance:" if provenance else f"provenance: none recorded ({run / PROVENANCE_FILE} is missing)")
    for line in describe(provenance) if provenance else ():
        typer.echo("  " + line)


def register(app: typer.Typer) -> None:
    """Add ``report`` to the CLI."""
    app.command("report")(report_command)
