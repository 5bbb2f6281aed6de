"""Where a trajectory's task comes from: its repository and base commit, wherever the record's
format keeps them (a SWE-bench row's top level, OpenHands' ``instance``, the resolver's ``issue``,
SWE-agent's ``replay_config``), and what its instance id says.

Decontamination matches trajectories against an evaluation set by id, by (repository, base
commit) and by issue text; the readers of every format fill the first two through
:func:`with_origin`, so a new format gets them without code of its own when it keeps them in
one of these places.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

from ..schemas import Trajectory
from . import _common as c

_SHA_RE = re.compile(r"^[0-9a-f]{7,40}$")
# SWE-bench ids: owner__name-123; dumps append _<k> per sampled run (SWE-Gym, nebius).
_SWEBENCH_ID_RE = re.compile(r"^(?P<owner>[\w.-]+?)__(?P<name>[\w.-]+)-(?P<number>\d+)(?:_\d+)?$")
# SWE-smith ids: owner__name.<8-hex commit>.<bug id>.
_SWE_SMITH_ID_RE = re.compile(r"^(?P<owner>[\w-]+)__(?P<name>[\w-]+(?:\.[\w-]+)*?)\.(?P<commit>[0-9a-f]{8})\.[\w.-]+$")
_GITHUB_RE = re.compile(r"github\.com[/:](?P<repo>[\w.-]+/[\w.-]+?)(?:\.git)?/?$")


def _sha(value: Any) -> str | None:
    text = c.optional_str(value)
    return text.strip().lower() if text and _SHA_RE.match(text.strip().lower()) else None


def _repo(value: Any) -> str | None:
    text = c.optional_str(value)
    if not text or "/" not in text:
        return None
    match = _GITHUB_RE.search(text)
    return (match.group("repo") if match else text.strip()).lower()


def record_origin(record: Mapping[str, Any]) -> dict[str, str]:
    """``{"repo": "owner/name", "base_commit": sha}`` (either may be missing) from the places
    published formats keep them."""
    instance = c.as_dict(c.maybe_json(record.get("instance")))
    issue = c.as_dict(c.maybe_json(record.get("issue")))
    replay = c.as_dict(c.maybe_json(record.get("replay_config")))
    replay_repo = c.as_dict(c.as_dict(replay.get("env")).get("repo"))
    repo = (_repo(record.get("repo")) or _repo(instance.get("repo")) or _repo(replay_repo.get("github_url"))
            or _repo(replay_repo.get("repo_name")))
    if repo is None and issue.get("owner") and issue.get("repo"):
        repo = f"{issue['owner']}/{issue['repo']}".lower()
    commit = (_sha(record.get("base_commit")) or _sha(instance.get("base_commit"))
              or _sha(replay_repo.get("base_commit")))
    return c.compact({"repo": repo, "base_commit": commit})


def id_origin(task_id: str) -> dict[str, str]:
    """What an instance id says of its task: the SWE-bench id it names (``owner__name-N``,
    without a dump's ``_k`` run suffix), its repository, and for SWE-smith ids the commit."""
    match = _SWE_SMITH_ID_RE.match(task_id)
    if match:
        return {"repo": f"{match['owner']}/{match['name']}".lower(), "base_commit": match["commit"]}
    match = _SWEBENCH_ID_RE.match(task_id)
    if match:
        return {"repo": f"{match['owner']}/{match['name']}".lower(),
                "instance_id": f"{match['owner']}__{match['name']}-{match['number']}"}
    return {}


def with_origin(traj: Trajectory, record: Mapping[str, Any]) -> Trajectory:
    """``traj`` with ``metadata['repo']`` and ``metadata['base_commit']`` filled from the
    record where the reader did not set them."""
    found = record_origin(record)
    missing = {k: v for k, v in found.items() if k not in traj.metadata}
    if not missing:
        return traj
    return dataclasses.replace(traj, metadata=traj.metadata | missing)
