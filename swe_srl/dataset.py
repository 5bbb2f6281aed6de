"""Trajectories -> SRL step targets (the paper's step-wise training instances).

For a trajectory with steps 1..N, step k gives one :class:`StepTarget`:

* context = the problem statement + the last ``context_rounds`` (action, observation) rounds
  before step k. Step 1 therefore sees the problem statement alone (convention "issue-only").
* target = the canonical text of expert action k (XML function-call syntax, or a fenced bash
  block for bash-only scaffolds).
* the final submit action is a target like any other unless ``include_submit`` is off.

Observations are truncated to a character budget, keeping head and tail. Trajectories known
to have failed are dropped by default; unknown outcomes are kept unless ``require_resolved``.
Train/val are split by a hash of the task id (or trajectory id), never by step, so no
trajectory (and by default no task) lands in both splits. Trajectories with a leaky step (one
that reads the fix from outside the task, see :mod:`swe_srl.leaks`) are dropped by default.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from . import dataset_io
from .actions import is_submit, render_bash_block, render_xml
from .dataset_io import SplitWriter, jsonl_to_parquet, step_target_arrow_schema  # noqa: F401 (public here too)
from .dataset_stats import DatasetStats, LeakStats
from .decontam import Decontaminator, DecontamStats, load_eval_sets, parse_specs, task_keys
from .errors import ConfigError, InputError
from .formats import read_trajectories
from .formats._io import iter_files
from .leaks import Leak, scan_trajectory
from .provenance import code_version, dataset_fingerprint, dataset_hash, input_digests, sha256_file
from .schemas import ContextRound, StepTarget, Trajectory

TargetSyntax = Literal["xml", "bash_block"]
SplitBy = Literal["task", "trajectory"]
OutputFormat = Literal["jsonl", "parquet", "both"]
LeakMode = Literal["drop", "flag", "keep"]
StepLeaks = Sequence[Sequence[Leak]]  # per step of a trajectory, the leaks of its action

LEAKY = "leaky"  # the drop reason of a trajectory with a leaky step
EVAL_INSTANCE = "eval instance"  # the drop reason of a trajectory whose task is in the eval set

TRUNCATION_MARKER = "\n[... {omitted} characters omitted ...]\n"


@dataclass(frozen=True)
class DatasetConfig:
    """How trajectories are cut into step targets."""

    context_rounds: int = 2
    """K: earlier (action, observation) rounds shown before the target step (paper: 2)."""
    observation_budget: int = 2000
    """Characters kept of each observation in the context (head and tail; 0 = no limit)."""
    resolved_only: bool = True
    """Drop trajectories whose outcome is known to be unresolved."""
    require_resolved: bool = False
    """Also drop trajectories whose outcome is unknown."""
    include_submit: bool = True
    """Keep the final submit action as a target."""
    val_fraction: float = 0.05
    """Share of tasks (or trajectories) put in the validation split."""
    split_by: SplitBy = "task"
    """Hash unit of the split: 'task' keeps all trajectories of one task on one side."""
    seed: int = 0
    """Salt of the split hash: a different seed gives a different, still deterministic split."""
    syntax: TargetSyntax = "xml"
    """Rendering of target and context actions."""
    min_steps: int = 1
    """Trajectories with fewer usable steps are dropped."""
    leaks: LeakMode = "drop"
    """Steps that read the fix from outside the task (git log --all, a future commit, the
    project's next release): 'drop' the whole trajectory, 'flag' the step targets (their
    ``leaks`` field) and keep them, or 'keep' without scanning."""
    decontaminate: str = "verified"
    """Eval sets whose instances are dropped (by id, repo + base commit, near-duplicate issue
    text): 'verified' (the bundled SWE-bench Verified list), files of eval instances, several
    comma-separated, or 'off'."""
    near_duplicate_threshold: float = 0.5
    """Jaccard similarity of word 3-gram shingles (MinHash LSH) at which a problem statement is
    the eval issue's near-duplicate."""

    def __post_init__(self) -> None:
        if self.context_rounds < 0:
            raise ConfigError("context_rounds must be >= 0")
        if self.observation_budget < 0:
            raise ConfigError("observation_budget must be >= 0 (0 = no limit)")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError("val_fraction must be in [0, 1)")
        if self.syntax not in ("xml", "bash_block"):
            raise ConfigError(f"unknown target syntax {self.syntax!r}: use xml or bash_block")
        if self.split_by not in ("task", "trajectory"):
            raise ConfigError(f"unknown split unit {self.split_by!r}: use task or trajectory")
        if self.leaks not in ("drop", "flag", "keep"):
            raise ConfigError(f"unknown leak mode {self.leaks!r}: use drop, flag or keep")
        if not 0.0 < self.near_duplicate_threshold <= 1.0:
            raise ConfigError("near_duplicate_threshold must be in (0, 1]")
        parse_specs(self.decontaminate)


def truncate_middle(text: str, budget: int) -> str:
    """Keep the head and tail of ``text`` within ``budget`` characters, marking the cut."""
    if budget <= 0 or len(text) <= budget:
        return text
    omitted = len(text) - budget
    marker = TRUNCATION_MARKER.format(omitted=omitted)
    head = (budget * 2) // 3
    tail = budget - head
    return text[:head] + marker + text[len(text) - tail:]


def split_of(key: str, val_fraction: float, seed: int = 0) -> str:
    """Deterministic split for a task/trajectory key, stable across runs and machines."""
    if val_fraction <= 0:
        return "train"
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return "val" if int.from_bytes(digest, "big") / 2**64 < val_fraction else "train"


def drop_reason(traj: Trajectory, config: DatasetConfig) -> str | None:
    """Why a whole trajectory is left out, or None when it is used."""
    if traj.resolved is False and config.resolved_only:
        return "unresolved"
    if traj.resolved is None and config.require_resolved:
        return "outcome unknown"
    usable = usable_steps(traj, config)
    if usable < max(config.min_steps, 1):
        return "no usable steps" if usable == 0 else f"fewer than {config.min_steps} steps"
    return None


def usable_steps(traj: Trajectory, config: DatasetConfig) -> int:
    """How many step targets ``traj`` gives under ``config``."""
    return sum(1 for s in traj.steps if config.include_submit or not is_submit(s.action))


def step_targets(traj: Trajectory, config: DatasetConfig, leaks: StepLeaks | None = None) -> Iterator[StepTarget]:
    """The step targets of one (already accepted) trajectory; ``leaks`` (per step) fills
    each target's ``leaks`` field with the rule names its action matched."""
    render = render_xml if config.syntax == "xml" else render_bash_block
    key = traj.task_id if config.split_by == "task" else traj.trajectory_id
    split = split_of(key, config.val_fraction, config.seed)
    actions = [render(step.action) for step in traj.steps]
    rounds = [
        ContextRound(action=text, observation=truncate_middle(step.observation, config.observation_budget))
        for text, step in zip(actions, traj.steps)
    ]
    n = len(traj.steps)
    for k, step in enumerate(traj.steps):
        if not config.include_submit and is_submit(step.action):
            continue
        start = max(0, k - config.context_rounds) if config.context_rounds else k
        yield StepTarget(
            id=f"{traj.trajectory_id}#{k}",
            trajectory_id=traj.trajectory_id,
            task_id=traj.task_id,
            step_index=k,
            num_steps=n,
            problem_statement=traj.problem_statement,
            context=tuple(rounds[start:k]),
            target=actions[k],
            target_tool=step.action.tool,
            expert_thought=step.thought,
            source_format=traj.source_format,
            resolved=traj.resolved,
            split=split,
            leaks=tuple(dict.fromkeys(leak.rule for leak in leaks[k])) if leaks else (),
        )


def load_step_targets(path: str | os.PathLike) -> list[StepTarget]:
    """Read step targets written by ``swe-srl build-dataset`` (a .jsonl or .parquet file,
    or a dataset directory, whose train.jsonl is read)."""
    return list(iter_step_targets(path))


def iter_step_targets(path: str | os.PathLike) -> Iterator[StepTarget]:
    p = Path(path)
    if p.is_dir():
        p = p / "train.jsonl"
    if not p.exists():
        raise InputError(f"step-target file not found: {p} (run `swe-srl build-dataset` first)")
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        for batch in pq.ParquetFile(p).iter_batches(batch_size=2048):
            for row in batch.to_pylist():
                yield StepTarget.from_dict(row)
        return
    with p.open("r", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield StepTarget.from_dict(json.loads(line))
            except (json.JSONDecodeError, ValueError) as exc:
                raise InputError(f"{p}:{lineno}: not a step target ({exc})") from exc


# --------------------------------------------------------------------------- building


def iter_accepted(trajectories: Iterable[Trajectory], config: DatasetConfig, stats,
                  decontaminator: Decontaminator | None = None) -> Iterator[tuple[Trajectory, StepLeaks | None]]:
    """Trajectories that pass the filters, with their per-step leaks (None when not scanned:
    ``leaks='keep'``); every drop and every leak is counted in ``stats``. Only trajectories
    that pass the other filters are checked against the eval sets, and only those that pass
    that are scanned for leaks."""
    for traj in trajectories:
        reason = drop_reason(traj, config)
        found = None
        if reason is None and decontaminator is not None and decontaminator.active:
            match = decontaminator.match(traj)
            stats.decontamination.count(traj, match, usable_steps(traj, config) if match else 0)
            reason = EVAL_INSTANCE if match else None
        if reason is None and config.leaks != "keep":
            found = scan_trajectory(traj)
            drop = config.leaks == "drop" and any(found)
            stats.leaks.count(traj, found, dropped_targets=usable_steps(traj, config) if drop else 0)
            reason = LEAKY if drop else None
        stats.count_trajectory(traj, reason)
        if reason is None:
            yield traj, found


@dataclass(frozen=True)
class BuildResult:
    """What `build-dataset` produced."""

    out_dir: Path
    files: dict
    stats: dict


def build_dataset(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    config: DatasetConfig = DatasetConfig(),
    *,
    fmt: str = "auto",
    output: OutputFormat = "both",
    strict: bool = False,
    resolved_ids: set[str] | None = None,
    on_trajectory=None,
    overwrite: bool = False,
) -> BuildResult:
    """Read trajectories from ``inputs`` (files or folders, any supported format), cut them
    into step targets, and write ``train``/``val`` (.jsonl and/or .parquet), stats.json and
    provenance.json into ``out_dir``, all at once at the end (see :mod:`swe_srl.dataset_io`).
    A folder holding another dataset is replaced only with ``overwrite``. Unreadable records are
    skipped and listed in stats.json (``strict``: the first one is an error). Raises InputError
    when nothing usable was found."""
    out = Path(out_dir)
    files_in = iter_files(list(inputs))  # InputError for a missing path, before anything else
    options = {k: getattr(config, k) for k in config.__dataclass_fields__} | {
        "format": fmt, "output": output, "resolved_ids": sorted(resolved_ids) if resolved_ids is not None else None}
    digests = input_digests(files_in)
    fingerprint = dataset_fingerprint(digests, options)
    dataset_io.recover(out)
    dataset_io.check_target(out, fingerprint, overwrite, [str(p) for p in inputs], options)
    eval_sets = load_eval_sets(config.decontaminate)
    stats = DatasetStats(leaks=LeakStats(mode=config.leaks),
                         decontamination=DecontamStats(sets=[e.describe() for e in eval_sets],
                                                       threshold=config.near_duplicate_threshold))
    decontaminator = Decontaminator(eval_sets, config.near_duplicate_threshold)

    def on_skip(skip) -> None:
        if strict:
            where = f"{skip.file}" + (f" row {skip.row}" if skip.row is not None else "")
            raise InputError(f"{where}: {skip.reason} (--strict)")
        stats.count_skip(skip)

    trajectories = read_trajectories(list(inputs), fmt=fmt, on_skip=on_skip)
    if resolved_ids is not None:
        trajectories = (_with_known_outcome(t, resolved_ids) for t in trajectories)
    stage = dataset_io.staging_folder(out)
    tasks: dict[tuple[str, str], dict] = {}
    writer = None
    try:
        writer = SplitWriter(stage)
        for traj, leaks in iter_accepted(trajectories, config, stats, decontaminator):
            split = None
            for target in step_targets(traj, config, leaks if config.leaks == "flag" else None):
                writer.write(target)
                stats.count_target(target)
                split = target.split
            if split is not None:
                tasks.setdefault((traj.task_id, split), task_keys(traj.task_id, traj.metadata) | {"split": split})
            if on_trajectory is not None:
                on_trajectory(traj)
        if stats.num_targets == 0:
            raise InputError(_empty_reason(stats, inputs))
        files = _write_outputs(writer, stage, output)
        summary = stats.to_dict() | {
            "config": {k: getattr(config, k) for k in config.__dataclass_fields__},
            "conventions": {
                "first_step": "context is the problem statement alone (no earlier rounds)",
                "submit": "included as a target" if config.include_submit else "excluded",
                "target_syntax": config.syntax,
                "split": f"by {config.split_by} hash (blake2b, seed {config.seed})",
            },
            "inputs": [str(p) for p in inputs],
            "files": {k: str(out / k) for k in files},
        }
        dataset_io.write_json_atomic(stage / "stats.json", summary)
        hashes = {name: sha256_file(stage / name) for name in sorted(files)}
        dataset_io.write_json_atomic(stage / dataset_io.PROVENANCE_FILE, {
            "kind": "dataset", "fingerprint": fingerprint, "dataset_hash": dataset_hash(hashes),
            "inputs": digests, "options": options, "eval_sets": stats.decontamination.sets,
            "code": code_version(), "files": hashes, "tasks": list(tasks.values()),
        })
        dataset_io.publish(stage, out)
    except BaseException:
        if writer is not None:
            writer.abort()  # closes the split files (committed ones are already closed)
        dataset_io.discard(stage)
        raise
    return BuildResult(out_dir=out, files={k: out / k for k in files}, stats=summary)


def _write_outputs(writer: SplitWriter, stage: Path, output: str) -> list[str]:
    """Publish the jsonl splits inside the staging folder and convert them as ``output`` asks."""
    names = [f"{k}.jsonl" for k in writer.commit()]
    if output in ("parquet", "both"):
        for split in ("train", "val"):
            jsonl_to_parquet(stage / f"{split}.jsonl", stage / f"{split}.parquet")
            names.append(f"{split}.parquet")
    if output == "parquet":
        for split in ("train", "val"):
            (stage / f"{split}.jsonl").unlink()
            names.remove(f"{split}.jsonl")
    return names


def _with_known_outcome(traj: Trajectory, resolved_ids: set[str]) -> Trajectory:
    import dataclasses

    if traj.resolved is not None:
        return traj
    return dataclasses.replace(traj, resolved=traj.task_id in resolved_ids)


def _empty_reason(stats, inputs) -> str:
    if stats.skipped_count and not stats.by_format:
        top = stats.skipped_by_reason.most_common(1)[0][0]
        return (f"no trajectory could be read from {', '.join(map(str, inputs))} "
                f"({stats.skipped_count} records skipped, mostly: {top})")
    if not stats.by_format:
        return f"no trajectories found in {', '.join(map(str, inputs))}"
    dropped = ", ".join(f"{n} {r}" for r, n in stats.dropped.items())
    hint = ("--keep-unresolved" + (", --leaks flag" if LEAKY in stats.dropped else "")
            + (", --decontaminate" if EVAL_INSTANCE in stats.dropped else ""))
    return f"no step targets: every trajectory was dropped ({dropped}); see --help for {hint}"
