"""synthgen: swe-srl's generator of SYNTHETIC expert trajectories (stdlib only, deterministic).

Run it through ``trajectories/generate_synthetic.py``; see ``trajectories/synthetic/README.md``.

A task is a small Python package made from word lists (:mod:`.words`) with one seeded bug of
a kind from :mod:`.kinds_logic` / :mod:`.kinds_values`, correct helper functions around it, a
test suite that passes before and after the fix (the bug is not covered, which is why it is a
bug), an issue text and a README (:mod:`.tasks`). Its expert trajectory (:mod:`.expert`) is
the usual bug-fix session, with varied tools, order and length (5-12 steps).

Observations are not invented: the repository is kept in memory and every action runs against
it (:mod:`.sandbox`): views come from the current file text, grep/sed/ls/find from its files and
lines, reproduction scripts and test functions are executed, ``git diff`` is difflib with git's
headers (blob ids, function context). Simplifications, deterministic on purpose: tracebacks have
the Python 3.10 shape (no carets), pytest durations are drawn from the seed, grep and the
editor's tree view list files sorted.

Randomness comes only from ``random.Random`` seeded with strings naming the seed and the task,
so the same arguments give the same records on any machine and Python version.
"""

from __future__ import annotations

import gzip
import io
import json

from .expert import expert_session
from .sandbox import git_diff
from .tasks import Task, make_tasks

DEFAULT_TASKS = 250
DEFAULT_SEED = 0
GENERATOR = "trajectories/generate_synthetic.py"
GENERATOR_VERSION = 1

__all__ = ["DEFAULT_SEED", "DEFAULT_TASKS", "generate", "make_tasks", "record", "to_bytes"]


def record(task: Task, seed: int = DEFAULT_SEED) -> dict:
    """The expert trajectory of ``task`` as a ``Trajectory.to_dict()`` record (format swe-srl),
    marked synthetic: ``model``, ``source`` and ``metadata`` say so."""
    session = expert_session(task, seed)
    return {
        "schema_version": 1,
        "task_id": task.task_id,
        "problem_statement": task.problem_statement,
        "steps": session.steps,
        "source_format": "swe-srl",
        "source": f"synthetic ({GENERATOR})",
        "trajectory_id": f"{task.task_id}.synthetic",
        "resolved": True,
        "final_patch": git_diff(task.files, session.files),
        "exit_status": "submitted",
        "model": "synthetic-expert",
        "metadata": {"synthetic": True, "generator": GENERATOR, "generator_version": GENERATOR_VERSION,
                     "seed": seed, "bug_kind": task.bug.kind, "bug_variant": task.bug.variant,
                     "files": sorted(task.files)},
    }


def generate(n: int = DEFAULT_TASKS, seed: int = DEFAULT_SEED) -> list:
    """The records of ``n`` tasks, in task order."""
    return [record(task, seed) for task in make_tasks(n, seed)]


def to_bytes(records: list) -> bytes:
    """JSONL, gzip-compressed with mtime 0 and no file name: the same records give the same bytes."""
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as gz:
        gz.write(text.encode("utf-8"))
    return buffer.getvalue()
