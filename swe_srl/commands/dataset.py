"""`swe-srl build-dataset`: agent trajectories (any supported format) -> SRL step targets."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from ..config_loader import load_config
from ..dataset import DatasetConfig, build_dataset
from ..errors import InputError
from ..paths import DEFAULT_DATASET_DIR, SAMPLES_DIR, default_trajectory_inputs


def _load_resolved_ids(path: Path) -> set[str]:
    """Ids known to be resolved: a text file (one id a line), a JSON list, a SWE-bench
    report with ``resolved_ids``, or a mapping id -> {"resolved": bool} / bool."""
    if not path.is_file():
        raise InputError(f"--resolved-ids: no such file: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}
    if isinstance(data, dict) and "resolved_ids" in data:
        data = data["resolved_ids"]
    if isinstance(data, list):
        return {str(x) for x in data}
    if isinstance(data, dict):
        return {k for k, v in data.items() if (v.get("resolved") if isinstance(v, dict) else bool(v))}
    raise InputError(f"--resolved-ids: {path} is neither a list of ids nor a report")


def build_dataset_command(
    inputs: list[Path] | None = typer.Argument(
        None, help="Trajectory files or folders (json, jsonl, traj, parquet). Default: the bundled samples, demo "
                   "expert runs and synthetic expert trajectories."),
    out: Path = typer.Option(None, "-o", "--out", help="Output folder.", show_default="runs/dataset"),
    fmt: str = typer.Option("auto", "--format", help="Source format, or 'auto' to detect it per record."),
    config_source: str | None = typer.Option(
        None, "--config", "-c", metavar="PRESET_OR_YAML",
        help="A preset name or YAML file; its `dataset:` section is read. Without it: the defaults below."),
    overrides: list[str] = typer.Option(
        [], "--set", "-s", help="Override of the dataset config, repeatable: --set context_rounds=3"),
    # The options below are DatasetConfig fields: None = not given (the config's value stands);
    # a given one wins over --set. The defaults shown are DatasetConfig's (typer's show_default:
    # brackets in a help text are eaten as rich markup).
    context_rounds: int | None = typer.Option(None, "-k", "--context-rounds", help="K earlier (action, observation) "
            "rounds in the context.", show_default="2"),
    observation_budget: int | None = typer.Option(None, help="Characters kept per observation (head+tail); 0 = all.",
                                                  show_default="2000"),
    resolved_only: bool | None = typer.Option(None, "--resolved-only/--keep-unresolved", help="Drop trajectories "
            "known to have failed.", show_default="resolved-only"),
    require_resolved: bool | None = typer.Option(None, help="Also drop trajectories whose outcome is unknown.",
                                                 show_default="no-require-resolved"),
    resolved_ids: Path | None = typer.Option(None, help="File of resolved instance ids; fills in unknown outcomes."),
    include_submit: bool | None = typer.Option(None, "--include-submit/--exclude-submit", help="Keep the final submit "
            "step as a target.", show_default="include-submit"),
    val_fraction: float | None = typer.Option(None, help="Share of tasks put in the val split.", show_default="0.05"),
    split_by: str | None = typer.Option(None, help="Split unit: task or trajectory.", show_default="task"),
    seed: int | None = typer.Option(None, help="Salt of the deterministic split.", show_default="0"),
    syntax: str | None = typer.Option(None, help="Target syntax: xml (canonical) or bash_block.", show_default="xml"),
    leaks: str | None = typer.Option(
        None, help="Trajectories with a step that reads the fix from outside the task (git log --all, a future "
                   "commit, the project's next release): drop them, flag the step targets, or keep them unscanned.",
        show_default="drop"),
    decontaminate: list[str] = typer.Option(
        [], "--decontaminate", metavar="EVAL_SET",
        help="Drop trajectories whose task is an eval instance (by id, repo + base commit, near-duplicate issue "
             "text): 'verified' (the bundled SWE-bench Verified list), a file of eval instances (ids one a line, "
             "or SWE-bench-style rows: json, jsonl, parquet), repeatable; 'off' turns it off.",
        show_default="verified"),
    no_decontaminate: bool = typer.Option(False, "--no-decontaminate", help="Same as --decontaminate off."),
    near_duplicate_threshold: float | None = typer.Option(
        None, help="Jaccard similarity (word 3-grams, MinHash) at which an issue text is an eval issue's duplicate.",
        show_default="0.5"),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the dataset that -o already holds."),
    output: str = typer.Option("both", help="Write jsonl, parquet or both."),
    strict: bool = typer.Option(False, help="Fail on the first unreadable record instead of skipping it."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="No progress or table."),
) -> None:
    """Cut agent trajectories into step targets: context = issue + last K rounds, target = the expert's next action."""
    if output not in ("jsonl", "parquet", "both"):
        raise InputError(f"--output must be jsonl, parquet or both, not {output!r}")
    given = {"context_rounds": context_rounds, "observation_budget": observation_budget,
             "resolved_only": resolved_only, "require_resolved": require_resolved,
             "include_submit": include_submit, "val_fraction": val_fraction, "split_by": split_by,
             "seed": seed, "syntax": syntax, "leaks": leaks, "near_duplicate_threshold": near_duplicate_threshold,
             "decontaminate": "off" if no_decontaminate else (",".join(decontaminate) if decontaminate else None)}
    if no_decontaminate and decontaminate:
        raise InputError("--no-decontaminate and --decontaminate contradict each other: give one")
    cfg = load_config(DatasetConfig, config_source, overrides, section="dataset",
                      flags={k: v for k, v in given.items() if v is not None})
    if not inputs:
        if not SAMPLES_DIR.is_dir():
            raise InputError(f"no INPUT given and the bundled samples are missing ({SAMPLES_DIR})")
        inputs = default_trajectory_inputs()
    ids = _load_resolved_ids(resolved_ids) if resolved_ids else None
    out_dir = out or DEFAULT_DATASET_DIR
    with _progress(quiet) as tick:
        result = build_dataset(inputs, out_dir, cfg, fmt=fmt, output=output,  # type: ignore[arg-type]
                               strict=strict, resolved_ids=ids, on_trajectory=tick, overwrite=overwrite)
    if not quiet:
        print_summary(result)


class _progress:
    """A rich spinner counting trajectories; silent when quiet or not on a terminal."""
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet
        self.count = 0

    def __enter__(self):
        console = Console(stderr=True)
        if self.quiet or not console.is_terminal:
            return lambda traj: None
        self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"),
                                 TextColumn("{task.completed} trajectories"), TimeElapsedColumn(),
                                 console=console, transient=True)
        self.progress.start()
        task = self.progress.add_task("reading", total=None)

        def tick(traj) -> None:
            self.count += 1
            if self.count % 50 == 0:
                self.progress.update(task, completed=self.count)
        return tick

    def __exit__(self, *exc) -> None:
        if getattr(self, "progress", None) is not None:
            self.progress.stop()


def print_summary(result) -> None:
    stats = result.stats
    table = Table(title=f"step targets -> {result.out_dir}", title_justify="left")
    for col in ("format", "trajectories", "used", "steps", "step targets"):
        table.add_column(col, justify="left" if col == "format" else "right")
    for fmt, row in stats["by_format"].items():
        table.add_row(fmt, *(str(row.get(k, 0)) for k in ("trajectories", "used", "steps", "step_targets")))
    console = Console()
    console.print(table)
    splits = stats["step_targets"]
    console.print(f"train {splits.get('train', 0)} / val {splits.get('val', 0)} step targets; "
                  f"target chars p50 {stats['target_chars']['p50']}, context chars p50 {stats['context_chars']['p50']}")
    if stats["dropped_trajectories"]:
        dropped = stats["dropped_trajectories"].items()
        console.print("dropped trajectories: " + ", ".join(f"{r} {n}" for r, n in dropped))
    skipped = stats["skipped_records"]
    if skipped["count"]:
        console.print(f"[yellow]skipped {skipped['count']} unreadable records[/] (listed in stats.json): "
                      + ", ".join(f"{r} {n}" for r, n in skipped["by_reason"].items()))
    _print_decontamination(console, stats["decontamination"])
    _print_leaks(console, stats["leaks"])
    console.print(f"wrote {', '.join(sorted(result.files))}, stats.json and provenance.json")


def _print_leaks(console: Console, leaks: dict) -> None:
    """The leak scan's line, and a table of the rules that matched (one example each)."""
    if leaks["mode"] == "keep":
        console.print("leak scan: off (--leaks keep)")
        return
    line = (f"leak scan ({leaks['mode']}): {leaks['leaky_trajectories']} of {leaks['trajectories_scanned']} "
            f"trajectories leaky ({leaks['leaky_steps']} steps)")
    if leaks["mode"] == "drop":
        line += f", {leaks['dropped_trajectories']} dropped ({leaks['dropped_step_targets']} step targets)"
    console.print(line if not leaks["leaky_trajectories"] else f"[yellow]{line}[/]")
    if not leaks["by_rule"]:
        return
    table = Table(title="leaky steps by rule", title_justify="left")
    for col in ("rule", "trajectories", "steps", "example"):
        table.add_column(col, justify="right" if col in ("trajectories", "steps") else "left")
    examples = {}
    for example in leaks["examples"]:
        examples.setdefault(example["rule"], example["text"])
    for rule, row in leaks["by_rule"].items():
        example = examples.get(rule, "")
        table.add_row(rule, str(row["trajectories"]), str(row["steps"]),
                      example if len(example) <= 60 else example[:57] + "...")
    console.print(table)


def _print_decontamination(console: Console, found: dict) -> None:
    """The eval-set check's line, and a table of what it dropped by reason (one example each)."""
    if not found["enabled"]:
        console.print("decontamination: off")
        return
    sets = ", ".join(f"{s['name']} ({s['instances']} instances, {s['with_issue_text']} with issue text)"
                     for s in found["eval_sets"])
    line = (f"decontamination against {sets}: {found['dropped_trajectories']} of {found['trajectories_scanned']} "
            f"trajectories dropped ({found['dropped_step_targets']} step targets, "
            f"{found['eval_instances_matched']} eval instances)")
    console.print(line if not found["dropped_trajectories"] else f"[yellow]{line}[/]")
    if not found["dropped_trajectories"]:
        return
    table = Table(title="eval instances dropped by reason", title_justify="left")
    for col in ("reason", "trajectories", "example"):
        table.add_column(col, justify="right" if col == "trajectories" else "left")
    examples = {}
    for example in found["examples"]:
        sim = f" (Jaccard {example['similarity']})" if example.get("similarity") is not None else ""
        examples.setdefault(example["reason"], f"{example['task_id']} = {example['eval_instance']}{sim}")
    for reason, n in found["by_reason"].items():
        if n:
            table.add_row(reason, str(n), examples.get(reason, ""))
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("build-dataset")(build_dataset_command)
