"""What a patch may not touch, and the results channel of a guarded test run: the pure half of
grading's defences against a policy that games it (no docker, no sandbox).

Screening (before any container starts): a patch is rejected, not resolved, when it

- is larger than the configured maximum (``patch too large``);
- adds or changes a ``conftest.py`` (pytest hooks can rewrite any outcome), a
  ``sitecustomize.py`` / ``usercustomize.py`` or a ``.pth`` file (code that runs at interpreter
  start): ``tampered: <path>``;
- adds a module that could stand in for the test runner (``pytest.py``, ``pytest/``,
  ``_pytest/``, ``pluggy``, ``py.py``) that the base commit lacks: ``test runner replaced:
  <path>`` (:func:`runner_shadows`, checked in the container). Pytest's own repository may
  change and add files of its ``_pytest`` package.

pytest's configuration files (``pytest.ini``, ``tox.ini``, ``setup.cfg``, ``pyproject.toml``)
are not rejected: grading puts them back to the base commit before the tests run.

The results channel (see ``swe_srl/sandbox/guard/run_pytest.py``): one line per pytest report,
``<hmac-sha256 hex> <json>``, and a last ``final`` line; :func:`read_channel` turns it into
statuses or into the reason it cannot be trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import posixpath
import re
from dataclasses import dataclass, field
from typing import Optional

TAMPER_NAMES = frozenset({"conftest.py", "sitecustomize.py", "usercustomize.py"})
RUNNER_MODULES = frozenset({"pytest", "_pytest", "pluggy", "py"})
PYTEST_CONFIG_NAMES = frozenset({"pytest.ini", ".pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml"})

_DIFF_GIT = re.compile(r"^diff --git (\S+) (\S+)$")


@dataclass(frozen=True)
class PatchPath:
    """A path a patch writes (the new side of a change; a deletion's old path)."""

    path: str
    new_file: bool = False
    deleted: bool = False


def _strip(side: str) -> Optional[str]:
    side = side.strip().split("\t", 1)[0]
    if side == "/dev/null":
        return None
    if side.startswith('"') and side.endswith('"'):
        side = side[1:-1]
    return side[2:] if side[:2] in ("a/", "b/") else side


def patch_paths(patch: str) -> list[PatchPath]:
    """Every path ``patch`` creates, changes, renames to or deletes (git and plain unified diffs)."""
    found: dict[str, PatchPath] = {}
    old: Optional[str] = None
    pending: Optional[str] = None  # a git header's path, until the block's +++ line says more
    new_file = False

    def add(path: Optional[str], *, new: bool = False, deleted: bool = False) -> None:
        if path:
            path = posixpath.normpath(path)
            prev = found.get(path)
            if prev is not None:  # written in one block, deleted in another: written wins
                new, deleted = new or prev.new_file, deleted and prev.deleted
            found[path] = PatchPath(path, new, deleted)

    for line in patch.splitlines():
        match = _DIFF_GIT.match(line)
        if match:
            add(pending, new=new_file)  # a block without ---/+++ (mode change, binary, pure rename)
            old, new_file, pending = _strip(match.group(1)), False, _strip(match.group(2))
        elif line.startswith("new file mode"):
            new_file = True
        elif line.startswith(("rename to ", "copy to ")):
            add(line.split(" to ", 1)[1], new=True)
            pending = None
        elif line.startswith("--- "):
            old = _strip(line[4:])
        elif line.startswith("+++ "):
            target = _strip(line[4:])
            if target is None:
                add(old, deleted=True)
            else:
                add(target, new=new_file or old is None)
            pending = None
    add(pending, new=new_file)
    return list(found.values())


def screen_patch(patch: str, *, max_bytes: int) -> Optional[str]:
    """Why ``patch`` is rejected before it is applied, or None (see the module docstring)."""
    size = len(patch.encode("utf-8", errors="replace"))
    if size > max_bytes:
        return f"patch too large: {size} bytes > {max_bytes}"
    for item in patch_paths(patch):
        parts = item.path.split("/")
        name = parts[-1]
        if name in TAMPER_NAMES or name.endswith(".pth"):
            return f"tampered: {item.path}"
    return None


def runner_shadows(patch: str) -> list[str]:
    """For each file ``patch`` adds inside or as a module named like the test runner, the path
    of that module (``pkg/pytest.py``, ``src/_pytest``): grading rejects the patch as ``test
    runner replaced`` unless that path exists at the base commit (pytest's own repository)."""
    found = []
    for item in patch_paths(patch):
        if not item.new_file or item.deleted:
            continue
        parts = item.path.split("/")
        for i, part in enumerate(parts):
            module = part[:-3] if i == len(parts) - 1 and part.endswith(".py") else part
            if module in RUNNER_MODULES and (i < len(parts) - 1 or part.endswith(".py")):
                found.append("/".join(parts[:i + 1]))
                break
    return sorted(set(found))


def config_files_to_reset(patch: str) -> list[str]:
    """The pytest configuration files ``patch`` touches: grading restores them to the base."""
    return sorted({p.path for p in patch_paths(patch) if posixpath.basename(p.path) in PYTEST_CONFIG_NAMES})


def cap_patch(patch: str, max_bytes: int) -> str:
    """``patch`` itself when within ``max_bytes``; else its head and a note with its size and
    sha256: what result files keep of an oversized patch."""
    data = patch.encode("utf-8", errors="replace")
    if len(data) <= max_bytes:
        return patch
    keep = data[:min(max_bytes, 4096)].decode("utf-8", errors="ignore")
    return (f"{keep}\n[swe-srl: patch truncated: {len(data)} bytes, "
            f"sha256 {hashlib.sha256(data).hexdigest()}]\n")


# ---------------------------------------------------------------- the results channel


@dataclass
class ChannelResult:
    """Statuses read from a guarded run, or ``problem``: why none of them can be trusted."""

    statuses: dict = field(default_factory=dict)
    problem: Optional[str] = None
    exitstatus: Optional[int] = None


def _phase_status(phases: dict[str, tuple[str, bool]]) -> str:
    for when in ("setup", "teardown", "collect"):
        outcome = phases.get(when, ("passed", False))[0]
        if outcome == "failed":
            return "ERROR"
    call = phases.get("call")
    setup = phases.get("setup", ("passed", False))
    if call is None:
        if setup[0] == "skipped":
            return "XFAIL" if setup[1] else "SKIPPED"
        return "ERROR"  # set up, never called: the run was cut short
    outcome, xfail = call
    if outcome == "failed":
        return "FAILED"
    if outcome == "skipped":
        return "XFAIL" if xfail else "SKIPPED"
    return "PASSED"


def read_channel(text: str, key: bytes) -> ChannelResult:
    """Statuses from a guarded pytest run's channel file; fails closed on anything unexpected."""
    phases: dict[str, dict[str, tuple[str, bool]]] = {}
    final = None
    lines = text.splitlines()
    for number, line in enumerate(lines):
        mac, _, body = line.partition(" ")
        expected = hmac.new(key, body.encode("utf-8"), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            return ChannelResult(problem="results channel forged: a line without the run's signature")
        record = json.loads(body)
        if final is not None:
            return ChannelResult(problem="results channel forged: lines after the final record")
        if record.get("final"):
            if record.get("lines") != number:
                return ChannelResult(problem="results channel forged: lines missing before the final record")
            final = record
            continue
        phases.setdefault(record["nodeid"], {})[record["when"]] = (record["outcome"], bool(record.get("xfail")))
    if final is None:
        return ChannelResult(problem="the test run ended before the runner reported "
                                     "(killed, os._exit, or a crash of the test process)")
    if final.get("tampered"):
        return ChannelResult(problem=f"test runner modified in-process: {final['tampered']}",
                             exitstatus=final.get("exitstatus"))
    return ChannelResult(statuses={node: _phase_status(p) for node, p in phases.items()},
                         exitstatus=final.get("exitstatus"))
