"""`swe-srl eval`: run the policy as an agent on tasks (resolve rate), or score it on
held-out step targets (`--mode steps`)."""

from __future__ import annotations

from dataclasses import replace
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console

from .. import paths
from ..calibration import resolve_calibration
from ..config_loader import load_config
from ..costs import describe_cost
from ..dataset import load_step_targets
from ..decontam import task_keys
from ..errors import ConfigError, InputError
from ..evaluate import EvalConfig, InstanceResult, evaluate_steps, evaluate_tasks
from ..jsonio import write_json_atomic, write_jsonl_atomic
from ..policy.base import PolicyConfig, load_policy
from ..provenance import eval_provenance, find_model_provenance, task_entries
from ..rl.checkpoint import resolve_model_dir
from ..schemas import StepTarget
from ..tasks import load_tasks

# Exit codes of `swe-srl eval` (README, "Evaluation"): 0 at least one instance graded, 1 none
# (NOTHING_GRADED), 2 bad input or config (one line), 3 out of memory, 130 interrupted.
NOTHING_GRADED = 1


class Mode(str, Enum):
    tasks = "tasks"
    steps = "steps"


def eval_command(
    mode: Mode = typer.Option(Mode.tasks, help="tasks: agent episodes graded by tests; steps: similarity on step "
                                               "targets."),
    tasks: str = typer.Option("demo", help="'demo' (bundled tasks), a task folder, a SWE-bench .jsonl/.json/.parquet "
                                           "file, or a dataset name."),
    subset: str | None = typer.Option(None, help="Named id list, e.g. verified-mini, demo."),
    ids: str | None = typer.Option(None, help="Comma-separated instance ids."),
    slice_: str | None = typer.Option(None, "--slice", help="Python slice of the selected tasks, e.g. 0:10."),
    filter_: str | None = typer.Option(None, "--filter", help="Regex searched in instance ids."),
    repo: str | None = typer.Option(None, help="Only tasks of this repo (owner/name)."),
    difficulty: str | None = typer.Option(None, help="SWE-bench Verified difficulty, e.g. '<15 min fix'."),
    shuffle: bool = typer.Option(False, help="Shuffle the selected tasks (seeded)."),
    seed: int = typer.Option(0, help="Seed of --shuffle."),
    model: Path | None = typer.Option(None, help="Model dir or training run dir [default: latest runs/train "
                                                 "checkpoint, else the tiny model]."),
    backend: str = typer.Option("hf", help="Policy backend: hf, openai (any OpenAI-compatible server), vllm."),
    base_url: str = typer.Option("http://127.0.0.1:8000/v1", help="Server URL for --backend openai."),
    served_model: str | None = typer.Option(None, help="Model name the server knows (--backend openai)."),
    config: str | None = typer.Option(None, "--config", "-c", help="A preset name or YAML file; its `eval:` section "
                                                                   "is read."),
    overrides: list[str] = typer.Option([], "--set", "-s", help="Dotted override of the eval config, repeatable: "
                                                                "--set harness.agent.max_steps=10"),
    workers: int | None = typer.Option(None, "-j", "--workers", help="Instances in parallel [default: 1]."),
    hosts: str | None = typer.Option(None, "--hosts", help="Docker hosts behind Ray actors, comma-separated "
                                                           "name=docker-url "
                                                           "(a=unix:///var/run/docker.sock,b=ssh://me@box1.example); "
                                                           "sets harness.sandbox=ray."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="A running Ray cluster (auto, ray://...) "
                                                                       "[default: start a local one]."),
    max_steps: int | None = typer.Option(None, help="Policy turns per episode [default: 30]."),
    max_new_tokens: int | None = typer.Option(None, help="Tokens per policy turn [default: 512]."),
    temperature: float | None = typer.Option(None, help="0 = greedy [default: 0]."),
    sandbox: str | None = typer.Option(None, help="Where episodes run: docker (isolated), local (no isolation) or ray "
                                                  "(see --hosts) [default: docker]."),
    image_budget_gb: float | None = typer.Option(None, "--image-budget-gb", help="Disk budget of the project's images "
            "(GB): least recently used task images are evicted to stay within it [default: none]."),
    data: Path | None = typer.Option(None, help="--mode steps: step targets [default: runs/dataset/val.jsonl]."),
    limit: int = typer.Option(0, help="--mode steps: score at most this many step targets (0 = all)."),
    out: Path | None = typer.Option(None, "-o", "--out", help="Output folder [default: runs/eval]."),
    bf16: bool = typer.Option(False, "--bf16", help="hf backend: sample under bf16 autocast (float32 weights), as a "
                                                    "run trained with run.precision bf16 validates."),
    calibration: Path | None = typer.Option(None, "--calibration", help="Calibration file (swe-srl env calibrate): "
                                                                        "also report the resolve rate on stable tasks "
                                                                        "[default: runs/calibration.json, if there]."),
    refuse_overlap: bool = typer.Option(False, "--refuse-overlap", help="Stop (exit 2) when the model was trained on "
                                                                        "an evaluated task (by id or repo + base "
                                                                        "commit, from the training run's provenance), "
                                                                        "or when its provenance is unknown."),
) -> None:
    """Evaluate a policy: resolve rate on tasks in Docker, or step-level similarity."""


    console = Console()
    # The options a user gave win over --set (their values are mappings: a path never goes
    # through YAML).
    if hosts and sandbox not in (None, "ray"):
        raise ConfigError(f"--hosts runs episodes in Docker on the Ray hosts; it cannot be combined with "
                          f"--sandbox {sandbox}")
    given = {"workers": workers, "harness.agent.max_steps": max_steps, "generation.max_new_tokens": max_new_tokens,
             "generation.temperature": temperature, "harness.sandbox": "ray" if hosts else sandbox,
             "hosts.ray_address": ray_address,
             "harness.image_budget_gb": image_budget_gb,
             "calibration": str(calibration) if calibration else None,
             "hosts.hosts": [h.strip() for h in hosts.split(",") if h.strip()] if hosts else None}
    cfg = load_config(EvalConfig, config, overrides, section="eval",
                      flags={k: v for k, v in given.items() if v is not None})
    # Inputs first: a typo in a subset, regex or path must not cost a model load.
    if mode is Mode.steps:
        targets = load_step_targets(data or paths.DEFAULT_DATASET_DIR / "val.jsonl")
        if limit:
            targets = targets[:limit]
        if not targets:
            raise InputError("no step targets to score")
    else:
        task_list = load_tasks(tasks, subset=subset, ids=tuple(i.strip() for i in ids.split(",")) if ids else None,
                               slice=slice_, filter=filter_, repo=repo, difficulty=difficulty, shuffle=shuffle,
                               seed=seed)
        calibrated = resolve_calibration(cfg.calibration)
    model_dir = str(resolve_model_dir(model,
                                      fallback_runs=(paths.DEFAULT_TRAIN_DIR,))) if backend != "openai" or model else ""
    provenance = _check_overlap(console, model, model_dir, targets if mode is Mode.steps else task_list, refuse_overlap)
    policy = load_policy(PolicyConfig(backend=backend, model=model_dir, base_url=base_url,  # type: ignore[arg-type]
                                      served_model_name=served_model, autocast_bf16=bf16))
    out_dir = out or paths.DEFAULT_EVAL_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    if mode is Mode.steps:
        scores = evaluate_steps(policy, targets, generation=cfg.generation, reward=cfg.reward)
        answers = scores.pop("answers")
        write_jsonl_atomic(out_dir / "steps_answers.jsonl", answers)
        write_json_atomic(out_dir / "steps_summary.json", scores | {"provenance": provenance})
        console.print(f"{scores['step_targets']} step targets: mean reward {scores['mean_reward']:.3f}, "
                      f"mean similarity {scores['mean_similarity']:.3f}, format errors "
                      f"{scores['format_error_rate']:.1%}, "
                      f"distinct answers {scores['distinct_answers']}; answers in {out_dir / 'steps_answers.jsonl'}")
        return
    if cfg.model_name == EvalConfig.model_name:  # not named by the config: say which model ran
        cfg = replace(cfg, model_name=served_model or model_dir or backend)

    def show(record: InstanceResult) -> None:
        verdict = "[red]infra failure[/]" if record.infra_error else (
            "[green]resolved[/]" if record.resolved else "not resolved")
        console.print(f"{record.instance_id}: {verdict} ({record.exit_reason}, {record.steps} steps)")

    summary = evaluate_tasks(policy, task_list, out_dir, cfg, on_result=show,
                             thread_safe_policy=backend == "openai", calibration=calibrated, provenance=provenance)
    stable = summary["stable"]
    if stable is not None:
        rate = f"{stable['resolved_rate']:.1%}" if stable["resolved_rate"] is not None else "-"
        console.print(f"stable tasks ({stable['verdicts']['stable']} of {len(task_list)} by {stable['calibration']}): "
                      f"resolved {stable['resolved']}/{stable['graded']} ({rate})")
    rate = f"{summary['resolved_rate']:.1%}" if summary["resolved_rate"] is not None else "-"
    console.print(f"resolved {summary['resolved']}/{summary['graded']} ({rate}); "
                  f"infrastructure failures {summary['infrastructure_failures']}; "
                  f"{summary['resumed_from_previous_run']} finished earlier; results in {out_dir}")
    console.print(describe_cost(summary["cost"]))
    if not summary["graded"]:  # a resolve rate of nothing: a script must not read it as 0%
        typer.secho(f"error: nothing was graded: {summary['infrastructure_failures']} of {summary['instances']} "
                    "instance(s) ended in an infrastructure failure; fix the engine and rerun to retry them",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(NOTHING_GRADED)


def _check_overlap(console: Console, model: Path | None, model_dir: str, items: list, refuse: bool) -> dict:
    """The model's training provenance against the evaluated tasks (or step targets): printed,
    returned for the summary, and with ``refuse`` an InputError on any overlap."""
    found = find_model_provenance(model) or (find_model_provenance(model_dir) if model_dir else None)
    if items and isinstance(items[0], StepTarget):
        evaluated = [task_keys(t) for t in dict.fromkeys(t.task_id for t in items)]
    else:
        evaluated = task_entries(items)
    provenance = eval_provenance(found, evaluated)
    if found is None:
        if refuse:
            raise InputError(f"--refuse-overlap: {model or model_dir or 'the model'} has no training provenance "
                             "(provenance.json of a swe-srl train run); cannot check what it was trained on")
        return provenance
    hits = provenance["overlap"]["instances"]
    if not hits:
        console.print(f"overlap check: none of the {len(evaluated)} evaluated tasks is in the model's training data")
        return provenance
    shown = ", ".join(f"{h['evaluated']} ({h['reason']})" for h in hits[:5]) + (", ..." if len(hits) > 5 else "")
    if refuse:
        raise InputError(f"--refuse-overlap: the model was trained on {len(hits)} of the {len(evaluated)} "
                         f"evaluated tasks: {shown}")
    console.print(f"[yellow]overlap: the model was trained on {len(hits)} of the {len(evaluated)} evaluated "
                  f"tasks[/]: {shown} (summary.json provenance.overlap)")
    return provenance


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
