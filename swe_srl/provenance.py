"""Where a dataset, a training run and an evaluation came from (``provenance.json``).

* A dataset folder: the sha256 of every input file, the options, the eval sets it was
  decontaminated against, swe-srl's version and git commit, the sha256 of each output file and
  the tasks it holds (id, repository, base commit, split).
* A training run: the dataset's hash and provenance, the config, the seeds, the code version,
  and the provenance of the model it started from when that model is itself a run's (SFT then
  SRL: both datasets count as trained on).
* eval's summary.json: the model's provenance, a hash of the evaluated ids, and their overlap
  with every task the model was trained on.

A run that moves keeps its story: each provenance embeds the one before it.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import __version__
from .decontam import overlap, task_keys
from .paths import REPO_ROOT

PROVENANCE_FILE = "provenance.json"
DATA_FILES = ("train.jsonl", "val.jsonl", "train.parquet", "val.parquet")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def sha256_json(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def code_version() -> dict[str, Any]:
    """swe-srl's version, and the git commit of its source tree when it is a git checkout
    (``dirty``: uncommitted changes to tracked files)."""
    out: dict[str, Any] = {"swe_srl": __version__, "git_commit": None, "git_dirty": None}
    if not (REPO_ROOT / ".git").exists():
        return out
    try:
        head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10)
        status = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return out
    if head.returncode == 0:
        out["git_commit"] = head.stdout.strip()
        out["git_dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    return out


def input_digests(files: Iterable[Path]) -> dict[str, str]:
    """``{path: sha256}`` of the input files (as listed by the trajectory reader)."""
    return {str(p): sha256_file(p) for p in files}


def dataset_fingerprint(digests: dict[str, str], options: dict[str, Any]) -> str:
    """What makes a dataset this dataset: its inputs' contents and its options (not where the
    inputs lie, not the code version)."""
    return sha256_json({"inputs": sorted(digests.values()), "options": options})


def dataset_hash(files: dict[str, str]) -> str:
    """One hash of a dataset's output files (``{name: sha256}``)."""
    return sha256_json(sorted(files.items()))


def read_provenance(folder: str | os.PathLike) -> dict[str, Any] | None:
    path = Path(folder) / PROVENANCE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def dataset_folder_of(data: str | os.PathLike) -> Path:
    """The dataset folder of ``--data`` (a folder, or one of its files)."""
    path = Path(data)
    return path if path.is_dir() else path.parent


def run_provenance(config_mapping: dict[str, Any], data: str, start_model: Path | None,
                   tasks: list[dict] | None = None) -> dict[str, Any]:
    """A training run's provenance (``tasks``: the tasks rlvr / hybrid episodes draw)."""
    dataset = read_provenance(dataset_folder_of(data)) if data else None
    parent = find_model_provenance(start_model) if start_model is not None else None
    run = config_mapping.get("run", {}) or {}
    return {
        "kind": "training-run",
        "method": config_mapping.get("method"),
        "dataset": {"path": str(data), "hash": (dataset or {}).get("dataset_hash"), "provenance": dataset},
        "episode_tasks": tasks,
        "config": config_mapping,
        "seeds": {"run": run.get("seed"), "dataset_split": ((dataset or {}).get("options") or {}).get("seed")},
        "code": code_version(),
        "start_model": str(start_model) if start_model is not None else None,
        "start_model_provenance": parent,
    }


def find_model_provenance(model: str | os.PathLike | None) -> dict[str, Any] | None:
    """The training run's provenance of a model folder, a checkpoint in a run, or a run."""
    if model is None:
        return None
    path = Path(model).resolve()
    for folder in (path, *list(path.parents)[:3]):
        found = read_provenance(folder)
        if found is not None and found.get("kind") == "training-run":
            return found
    return None


def trained_tasks(provenance: dict[str, Any] | None) -> list[dict]:
    """Every task a model saw in training, over its whole chain of runs."""
    out: list[dict] = []
    while provenance:
        dataset = (provenance.get("dataset") or {}).get("provenance") or {}
        out += [t for t in dataset.get("tasks") or [] if t.get("split", "train") == "train"]
        out += provenance.get("episode_tasks") or []
        provenance = provenance.get("start_model_provenance")
    return out


def eval_provenance(model_provenance: dict[str, Any] | None, evaluated: list[dict]) -> dict[str, Any]:
    """summary.json's ``provenance``: the model's, the evaluated ids' hash, and the overlap."""
    ids = sorted(t["task_id"] for t in evaluated)
    found = overlap(trained_tasks(model_provenance), evaluated) if model_provenance else []
    return {
        "model": model_provenance,
        "evaluated_ids_sha256": sha256_json(ids),
        "evaluated": len(ids),
        "overlap": {"checked": model_provenance is not None, "count": len(found), "instances": found},
        "code": code_version(),
    }


def task_entries(tasks: Iterable[Any]) -> list[dict]:
    """Overlap keys of Task records (eval's and rlvr's task lists)."""
    return [task_keys(t.instance_id, {"repo": t.repo, "base_commit": t.base_commit}) for t in tasks]


def _short(sha: str | None, n: int = 12) -> str:
    return sha[:n] if sha else "-"


def _code_line(code: dict | None) -> str:
    code = code or {}
    commit = _short(code.get("git_commit"))
    dirty = " (uncommitted changes)" if code.get("git_dirty") else ""
    return f"swe-srl {code.get('swe_srl', '?')}, git {commit}{dirty}"


def describe(provenance: dict[str, Any], indent: str = "") -> list[str]:
    """Lines a person reads: what a dataset, run or evaluation came from (``swe-srl report``)."""
    kind = provenance.get("kind")
    if kind == "dataset":
        options = provenance.get("options") or {}
        sets = ", ".join(f"{s['name']} ({s['instances']})" for s in provenance.get("eval_sets") or []) or "off"
        tasks = provenance.get("tasks") or []
        return [f"{indent}dataset {_short(provenance.get('dataset_hash'))}: {len(provenance.get('inputs') or {})} "
                f"input files, {sum(t.get('split') == 'train' for t in tasks)} train / "
                f"{sum(t.get('split') == 'val' for t in tasks)} val tasks",
                f"{indent}  decontaminated against: {sets}; leaks {options.get('leaks')}, "
                f"context_rounds {options.get('context_rounds')}, split seed {options.get('seed')}",
                f"{indent}  built by {_code_line(provenance.get('code'))}"]
    if kind == "training-run":
        dataset = provenance.get("dataset") or {}
        lines = [f"{indent}{provenance.get('method')} run: seeds {provenance.get('seeds')}, "
                 f"{_code_line(provenance.get('code'))}",
                 f"{indent}  started from {provenance.get('start_model') or 'the default model'}"]
        if provenance.get("episode_tasks") is not None:
            lines.append(f"{indent}  episodes on {len(provenance['episode_tasks'])} tasks")
        if dataset.get("path"):
            lines.append(f"{indent}  data {dataset['path']} (hash {_short(dataset.get('hash'))})")
            if dataset.get("provenance"):
                lines += describe(dataset["provenance"], indent + "    ")
            else:
                lines.append(f"{indent}    (the dataset has no provenance.json)")
        if provenance.get("start_model_provenance"):
            lines.append(f"{indent}  the start model's own run:")
            lines += describe(provenance["start_model_provenance"], indent + "    ")
        return lines
    if "evaluated_ids_sha256" in provenance:
        overlap_ = provenance.get("overlap") or {}
        lines = [f"{indent}evaluation of {provenance.get('evaluated')} tasks (ids sha256 "
                 f"{_short(provenance['evaluated_ids_sha256'])}), {_code_line(provenance.get('code'))}",
                 f"{indent}  overlap with the model's training data: "
                 + (f"{overlap_.get('count')}" if overlap_.get("checked") else "not checked (no model provenance)")]
        if provenance.get("model"):
            lines += describe(provenance["model"], indent + "  ")
        return lines
    return [f"{indent}(unknown provenance record)"]
