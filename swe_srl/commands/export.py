"""`swe-srl export`: a training checkpoint (ddp, sharded fsdp, LoRA) as a plain model folder."""

from __future__ import annotations

from pathlib import Path

import typer


def export_command(
    run: Path = typer.Argument(..., help="A training run folder, or one of its checkpoint folders."),
    step: int | None = typer.Option(None, "--step", help="The checkpoint of this step [default: the latest]."),
    out: Path = typer.Option(..., "--out", "-o", help="The model folder to write (new or empty)."),
) -> None:
    """Write a checkpoint as a save_pretrained folder (LoRA merged) for --model and eval."""
    from transformers.utils import logging as hf_logging

    from ..rl.export import export_checkpoint  # torch loads only when the command runs

    hf_logging.disable_progress_bar()
    path = export_checkpoint(run, out, step=step)
    typer.echo(f"exported {run}{'' if step is None else f' step {step}'} to {path}")


def register(app: typer.Typer) -> None:
    """Add ``export`` to the CLI."""
    app.command("export")(export_command)
