"""Decontamination: drop training trajectories whose task is an instance of the evaluation set.

A public SFT set was found to hold half of SWE-bench Verified's issues; a model trained on it
and evaluated on Verified is graded on its training data. Three ways a trajectory can be an
eval instance, checked in this order (the first that holds is the reason):

* ``instance_id``: its task id is an eval id (case-insensitive; a dump's ``_k`` run suffix,
  as in ``django__django-11999_0``, is ignored);
* ``repo_commit``: its repository and base commit (from the record, or a SWE-smith id's
  commit prefix) are an eval instance's, whatever its id;
* ``issue_text``: its problem statement is a near-duplicate of an eval issue: the Jaccard
  similarity of their word 3-gram shingle sets, estimated with MinHash LSH (datasketch) and then
  computed exactly for the candidates, is at least ``threshold``. Needs eval rows that carry a
  ``problem_statement``; the bundled Verified list has ids, repositories and commits only.

Eval sets: ``verified`` (the bundled 500 SWE-bench Verified instances,
``swe_srl/data/swebench_verified.jsonl``), or a file: ids one a line, a JSON list of ids or of
SWE-bench-style rows, JSONL rows, or Parquet rows.
"""

from __future__ import annotations

import hashlib
import json
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputError
from .formats._origin import id_origin
from .paths import PACKAGE_DIR
from .schemas import Trajectory

VERIFIED = "verified"
OFF = frozenset({"off", "none", "no", "false", ""})
VERIFIED_FILE = PACKAGE_DIR / "data" / "swebench_verified.jsonl"
REASONS = ("instance_id", "repo_commit", "issue_text")
SHINGLE_WORDS = 3
NUM_PERM = 128
EXAMPLES_PER_REASON = 3
# LSH proposes candidates from this share of the threshold; the exact Jaccard decides. Lower
# finds more of the pairs just above the threshold and costs only candidates (recall per factor:
# benchmarks/decontam.py --issue-texts docstrings).
CANDIDATE_FACTOR = 0.6
_WORD_RE = re.compile(r"\w+")


@dataclass(frozen=True)
class EvalInstance:
    """One instance of an evaluation set (only ``instance_id`` is required)."""

    instance_id: str
    repo: str = ""
    base_commit: str = ""
    problem_statement: str = ""


@dataclass(frozen=True)
class EvalSet:
    """A named evaluation set and the sha256 of the file it came from."""

    name: str
    sha256: str
    instances: tuple[EvalInstance, ...]

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "sha256": self.sha256, "instances": len(self.instances),
                "with_issue_text": sum(1 for i in self.instances if i.problem_statement)}


def parse_specs(spec: str) -> list[str]:
    """``"verified,evalset.jsonl"`` -> the eval sets it names; ``"off"`` -> none."""
    parts = [p.strip() for p in str(spec).split(",")]
    if any(p.lower() in OFF for p in parts):
        if len([p for p in parts if p]) > 1:
            raise ConfigError(f"decontaminate {spec!r}: 'off' cannot be combined with eval sets")
        return []
    return list(dict.fromkeys(parts))


def load_eval_sets(spec: str) -> list[EvalSet]:
    """Every eval set ``spec`` names (comma-separated ``verified`` / files; ``off``: none)."""
    return [load_eval_set(name) for name in parse_specs(spec)]


def load_eval_set(name: str) -> EvalSet:
    """``verified`` or a file of eval instances (see the module docstring)."""
    path = VERIFIED_FILE if name.lower() == VERIFIED else Path(name)
    if not path.is_file():
        raise InputError(f"--decontaminate: no such file: {name} (give 'verified', 'off' or a file of eval instances)")
    data = path.read_bytes()
    rows = _rows(path, data)
    instances = tuple(_instance(row, path, k) for k, row in enumerate(rows))
    if not instances:
        raise InputError(f"--decontaminate: {path} holds no eval instances")
    label = VERIFIED if path == VERIFIED_FILE else str(path)
    return EvalSet(name=label, sha256=hashlib.sha256(data).hexdigest(), instances=instances)


def _rows(path: Path, data: bytes) -> list[Any]:
    if data[:2] == b"\x1f\x8b":  # gzip, whatever the name
        import gzip

        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise InputError(f"--decontaminate: {path} is a damaged gzip file ({exc})") from exc
    if data[:4] == b"PAR1":
        import io

        import pyarrow.parquet as pq

        try:
            return pq.read_table(io.BytesIO(data)).to_pylist()
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise InputError(f"--decontaminate: {path} is not a readable Parquet file ({exc})") from exc
    text = data.decode("utf-8", errors="replace")
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"--decontaminate: {path} is not valid JSON ({exc})") from exc
        return parsed if isinstance(parsed, list) else [parsed]
    if stripped.startswith("{"):
        try:
            parsed = json.loads(text)  # one JSON object: {"instances": [...]} or one row
            return parsed.get("instances", [parsed]) if isinstance(parsed, dict) else [parsed]
        except json.JSONDecodeError:
            pass
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InputError(f"--decontaminate: {path}:{lineno}: not a JSON row ({exc.msg})") from exc
        return rows
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _instance(row: Any, path: Path, index: int) -> EvalInstance:
    if isinstance(row, str):
        return EvalInstance(instance_id=row.strip())
    if not isinstance(row, dict) or not str(row.get("instance_id") or "").strip():
        raise InputError(f"--decontaminate: {path} row {index}: neither an id nor a row with an instance_id")
    return EvalInstance(instance_id=str(row["instance_id"]).strip(), repo=str(row.get("repo") or "").lower(),
                        base_commit=str(row.get("base_commit") or "").lower(),
                        problem_statement=str(row.get("problem_statement") or ""))


def shingles(text: str, size: int = SHINGLE_WORDS) -> set[str]:
    """Lower-cased word ``size``-grams of ``text`` (the whole text when it is shorter)."""
    words = _WORD_RE.findall(text.lower())
    if len(words) <= size:
        return {" ".join(words)} if words else set()
    if size == 3:  # the default, 15% faster than the general form
        return {f"{a} {b} {c}" for a, b, c in zip(words, words[1:], words[2:])}
    return {" ".join(words[i:i + size]) for i in range(len(words) - size + 1)}


def _minhash(items: set[str], into=None):
    """The MinHash of a shingle set (``into``: a MinHash to reuse, cleared first). crc32 hashes
    the shingles: MinHash needs a 32-bit hash that is uniform enough, not a cryptographic one
    (sha1 per shingle cost a third of the time), and crc32 is the same in every process."""
    from datasketch import MinHash

    m = into if into is not None else MinHash(num_perm=NUM_PERM, seed=1, hashfunc=zlib.crc32)
    m.clear()
    m.update_batch([s.encode("utf-8") for s in items])
    return m


def _norm_id(task_id: str) -> str:
    return task_id.strip().lower()


@dataclass(frozen=True)
class Match:
    """Why a trajectory is an eval instance."""

    reason: str
    instance_id: str
    eval_set: str
    similarity: float | None = None


class Decontaminator:
    """Matches trajectories against eval sets; build once, call :meth:`match` per trajectory."""

    def __init__(self, sets: Sequence[EvalSet], threshold: float = 0.5,
                 candidate_factor: float = CANDIDATE_FACTOR) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ConfigError("near_duplicate_threshold must be in (0, 1]")
        self.sets = list(sets)
        self.threshold, self.candidate_factor = threshold, candidate_factor
        self.by_id: dict[str, tuple[str, str]] = {}
        self.by_repo: dict[str, list[tuple[str, str, str]]] = {}
        self.texts: dict[str, tuple[set[str], str, str]] = {}
        for eval_set in self.sets:
            for inst in eval_set.instances:
                self.by_id.setdefault(_norm_id(inst.instance_id), (inst.instance_id, eval_set.name))
                repo = inst.repo or id_origin(inst.instance_id).get("repo", "")
                if repo and len(inst.base_commit) >= 7:
                    self.by_repo.setdefault(repo, []).append((inst.base_commit, inst.instance_id, eval_set.name))
                if inst.problem_statement.strip():
                    key = f"{eval_set.name}\0{inst.instance_id}"
                    self.texts[key] = (shingles(inst.problem_statement), inst.instance_id, eval_set.name)
        # Every eval shingle: a text can reach Jaccard >= t with an eval text only if at least
        # t of its own shingles are among them (|A & B| >= t |A | B| >= t |A|). Texts that fail
        # this exact, necessary test skip MinHash and LSH; the index (and datasketch, which
        # imports scipy) is built at the first text that passes.
        self._eval_shingles: set[str] = set().union(*(items for items, _, _ in self.texts.values()))
        self.lsh = self._probe = None
        self._seen: dict[bytes, Match | None] = {}

    def _index(self):
        if self.lsh is None:
            from datasketch import MinHashLSH

            # Candidates from a Jaccard well below the threshold (CANDIDATE_FACTOR), then the
            # exact Jaccard decides: LSH never decides alone.
            self.lsh = MinHashLSH(threshold=max(0.05, self.threshold * self.candidate_factor), num_perm=NUM_PERM)
            # One MinHash reused for every insert and query (the index keeps band hashes, not the
            # object): drawing its permutations costs as much as hashing a whole issue.
            self._probe = _minhash(set())
            for key, (items, _, _) in self.texts.items():
                if items:
                    self.lsh.insert(key, _minhash(items, self._probe))
        return self.lsh

    @property
    def active(self) -> bool:
        return bool(self.sets)

    def match(self, traj: Trajectory) -> Match | None:
        """The first reason ``traj`` is an eval instance, or None."""
        from_id = id_origin(traj.task_id)
        for candidate in (traj.task_id, from_id.get("instance_id", "")):
            hit = self.by_id.get(_norm_id(candidate)) if candidate else None
            if hit:
                return Match("instance_id", hit[0], hit[1])
        repo = str(traj.metadata.get("repo") or from_id.get("repo") or "").lower()
        commit = str(traj.metadata.get("base_commit") or from_id.get("base_commit") or "").lower()
        if repo and len(commit) >= 7:
            for base, instance_id, name in self.by_repo.get(repo, ()):
                if base.startswith(commit) or commit.startswith(base):
                    return Match("repo_commit", instance_id, name)
        if self.texts:
            # Datasets hold many trajectories of one issue (SWE-Gym, nebius: several runs per
            # task): each distinct text is matched once.
            key = hashlib.blake2b(traj.problem_statement.encode("utf-8"), digest_size=16).digest()
            if key not in self._seen:
                self._seen[key] = self._text_match(traj.problem_statement)
            return self._seen[key]
        return None

    def _text_match(self, text: str) -> Match | None:
        items = shingles(text)
        if not items or len(items & self._eval_shingles) < self.threshold * len(items):
            return None
        best: Match | None = None
        for key in self._index().query(_minhash(items, self._probe)):
            other, instance_id, name = self.texts[key]
            jaccard = len(items & other) / len(items | other)
            if jaccard >= self.threshold and (best is None or jaccard > (best.similarity or 0)):
                best = Match("issue_text", instance_id, name, round(jaccard, 4))
        return best


@dataclass
class DecontamStats:
    """What decontamination dropped, by reason, with a few examples (stats.json ``decontamination``)."""

    sets: list = field(default_factory=list)
    threshold: float = 0.5
    scanned: int = 0
    dropped_trajectories: int = 0
    dropped_targets: int = 0
    by_reason: dict = field(default_factory=lambda: {r: 0 for r in REASONS})
    instances: set = field(default_factory=set)
    examples: list = field(default_factory=list)

    def count(self, traj: Trajectory, match: Match | None, dropped_targets: int) -> None:
        self.scanned += 1
        if match is None:
            return
        self.dropped_trajectories += 1
        self.dropped_targets += dropped_targets
        self.by_reason[match.reason] += 1
        self.instances.add(match.instance_id)
        if sum(e["reason"] == match.reason for e in self.examples) < EXAMPLES_PER_REASON:
            self.examples.append({"trajectory_id": traj.trajectory_id, "task_id": traj.task_id,
                                  "reason": match.reason, "eval_instance": match.instance_id,
                                  "eval_set": match.eval_set, "similarity": match.similarity,
                                  "source": traj.source})

    def to_dict(self) -> dict[str, Any]:
        return {"enabled": bool(self.sets), "eval_sets": self.sets, "near_duplicate_threshold": self.threshold,
                "trajectories_scanned": self.scanned, "dropped_trajectories": self.dropped_trajectories,
                "dropped_step_targets": self.dropped_targets, "by_reason": dict(self.by_reason),
                "eval_instances_matched": len(self.instances), "examples": self.examples}


def task_keys(task_id: str, metadata: dict | None = None) -> dict[str, str]:
    """The keys a task is known by (id, SWE-bench id, repo@commit) for overlap checks."""
    meta = metadata or {}
    origin = id_origin(task_id)
    out = {"task_id": task_id}
    if origin.get("instance_id"):
        out["instance_id"] = origin["instance_id"]
    repo = str(meta.get("repo") or origin.get("repo") or "").lower()
    commit = str(meta.get("base_commit") or origin.get("base_commit") or "").lower()
    if repo:
        out["repo"] = repo
    if commit:
        out["base_commit"] = commit
    return out


def overlap(trained: Iterable[dict], evaluated: Iterable[dict]) -> list[dict]:
    """Evaluated tasks that were trained on, by id or by repo + base commit: one entry per
    evaluated task, with the trained task it matches and why."""
    sets = [EvalSet("evaluated", "", tuple(EvalInstance(e["task_id"], e.get("repo", ""), e.get("base_commit", ""))
                                            for e in evaluated))]
    finder = Decontaminator(sets)
    found: dict[str, dict] = {}
    for task in trained:
        traj = Trajectory(task_id=task["task_id"], problem_statement="", steps=(), source_format="provenance",
                          metadata={k: task[k] for k in ("repo", "base_commit") if task.get(k)})
        hit = finder.match(traj)
        if hit is not None and hit.instance_id not in found:
            found[hit.instance_id] = {"evaluated": hit.instance_id, "trained": task["task_id"], "reason": hit.reason}
    return sorted(found.values(), key=lambda e: e["evaluated"])
