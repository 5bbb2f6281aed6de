"""`swe-srl train`: SFT baseline or SRL (step-wise GRPO) on step targets; RLVR / hybrid
(GRPO over whole agent episodes in Docker, rewarded by the task's tests)."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from ..config import TrainConfig
from ..config_loader import load_config
from ..paths import DEFAULT_TRAIN_DIR


class MethodChoice(str, Enum):
    sft = "sft"
    srl = "srl"
    rlvr = "rlvr"
    hybrid = "hybrid"


def train_command(
    method: MethodChoice | None = typer.Option(
        None, "--method", "-m", help="sft (supervised baseline), srl (GRPO with the step-wise similarity "
        "reward), rlvr (GRPO over Docker episodes, test reward) or hybrid (episodes, test reward + per-action "
        "similarity to the expert); default: the config's (srl)."),
    data: Path | None = typer.Option(
        None, "--data", "-d", help="Step targets: a build-dataset folder or a train .jsonl/.parquet file. "
        "Default: the build-dataset output (runs/dataset)."),
    model: Path | None = typer.Option(
        None, "--model", help="Model folder, or a run folder (its latest checkpoint: SFT then SRL, SRL then "
        "RLVR), to start from. Default: the tiny offline model (created when missing)."),
    tasks: str | None = typer.Option(
        None, "--tasks", help="rlvr/hybrid: task source ('demo', a task folder or a SWE-bench rows file); "
        "default: the config's episodes.tasks (demo)."),
    config: str = typer.Option(
        "tiny-cpu", "--config", "-c", help="A preset name (tiny-cpu, paper) or a YAML file."),
    overrides: list[str] = typer.Option(
        [], "--set", "-s", help="Dotted override, repeatable: --set grpo.num_generations=4"),
    out: Path | None = typer.Option(None, "--out", "-o", help="Run folder. Default: runs/train."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out from its last checkpoint."),
    image_budget_gb: float | None = typer.Option(
        None, "--image-budget-gb", help="rlvr/hybrid: disk budget of the project's images (GB); least recently "
        "used task images are evicted to stay within it. Default: the config's episodes.harness.image_budget_gb."),
) -> None:
    """Train a policy on step targets or on sandboxed episodes; writes config, metrics,
    TensorBoard events and checkpoints."""
    from ..rl.trainer import train  # here, not at the top: torch loads only when a run starts

    # Options win over --set; their values are passed as mappings, so a path never goes
    # through YAML (where "123" or "true" would stop being a string).
    flags: dict[str, object] = {"run.out_dir": str(out if out is not None else DEFAULT_TRAIN_DIR)}
    if method is not None:
        flags["method"] = method.value
    if data is not None:
        flags["data.train"] = str(data)
    if model is not None:
        flags["model.path"] = str(model)
    if tasks is not None:
        flags["episodes.tasks"] = tasks
    if image_budget_gb is not None:
        flags["episodes.harness.image_budget_gb"] = image_budget_gb
    cfg = load_config(TrainConfig, config, overrides, flags=flags)
    result = train(cfg, resume=resume)
    val = "  ".join(f"{k} {v:.4g}" for k, v in result.val_metrics.items() if k != "val/n")
    typer.echo(f"{cfg.method}: {result.steps} steps in {result.run_dir}"
               + (f"  ({val})" if val else "")
               + (f"\nlatest checkpoint: {result.final_checkpoint}" if result.final_checkpoint else ""))


def register(app: typer.Typer) -> None:
    """Add ``train`` to the CLI."""
    app.command("train")(train_command)
