"""`swe-srl report RUN_DIR`: plots and a markdown summary of a training run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..report import write_report


def report_command(
    run_dir: Path = typer.Argument(..., help="A `swe-srl train` run folder."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Where to write. Default: RUN_DIR/report."),
) -> None:
    """Plot reward, filter rate, reward histogram and completion length; write summary.md."""
    report = write_report(run_dir, out)
    typer.echo(f"wrote {report.summary} and {len(report.plots)} plots")


def register(app: typer.Typer) -> None:
    """Add ``report`` to the CLI."""
    app.command("report")(report_command)
