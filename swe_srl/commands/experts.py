"""`swe-srl record-experts`: replay the expert scripts of tasks through the agent loop in
Docker, verify each one resolves its task, and write the trajectories (swe-srl JSONL)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from ..evaluate import InstanceResult
from ..experts import DEFAULT_OUTPUT, SCRIPTS_DIR, RecordConfig, record_experts
from ..tasks import load_tasks


def record_experts_command(
    tasks: str = typer.Option("demo", help="'demo' (bundled tasks) or a task folder."),
    ids: str | None = typer.Option(None, help="Comma-separated instance ids [default: every task]."),
    scripts: Path | None = typer.Option(None, help="Folder of expert scripts <instance_id>.json "
                                           "[default: trajectories/expert/scripts]."),
    out: Path | None = typer.Option(None, "-o", "--out",
                                       help="Output JSONL [default: trajectories/expert/demo-experts.jsonl]."),
    workers: int = typer.Option(1, "-j", "--workers", help="Tasks replayed in parallel."),
    work_dir: Path | None = typer.Option(None, help="Keep the evaluation files here (a rerun resumes) "
                                            "[default: a temporary folder]."),
) -> None:
    """Record verified expert trajectories: each script is replayed in a sandbox and graded by tests."""
    console = Console()
    selected = tuple(i.strip() for i in ids.split(",") if i.strip()) if ids else None
    task_list = load_tasks(tasks, ids=selected)
    config = RecordConfig(workers=workers, work_dir=work_dir)

    def show(record: InstanceResult) -> None:
        verdict = "[red]infra failure[/]" if record.infra_error else (
            "[green]resolved[/]" if record.resolved else "[red]NOT resolved[/]")
        console.print(f"{record.instance_id}: {verdict} ({record.steps} steps, {record.wall_time:.1f}s)")

    recording = record_experts(task_list, out or DEFAULT_OUTPUT, scripts_dir=scripts or SCRIPTS_DIR,
                               config=config, on_result=show)
    steps = sum(len(t.steps) for t in recording.trajectories)
    console.print(f"{len(recording.trajectories)} expert trajectories ({steps} steps), all resolved, "
                  f"written to {recording.out_path}")


def register(app: typer.Typer) -> None:
    app.command("record-experts")(record_experts_command)
