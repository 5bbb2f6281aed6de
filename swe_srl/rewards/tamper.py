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

Paths are read as git apply and patch read them (:func:`patch_paths`): C-quoted names
(``"tests/conf\\164est.py"`` is tests/conftest.py), names with spaces, whatever one-component
prefix ``-p1`` strips, rename and copy headers, binary patches, context diffs and ``Index:``
lines; every name a header gives is screened.

The results channel (see ``swe_srl/sandbox/guard/``): one line per pytest report,
``<hmac-sha256 hex> <json>`` (a call-phase line also carries the fingerprint of the function
pytest called and whether it returned), and a last ``final`` line (exit status, tampering or a
denied operation seen in-process); :func:`read_channel` turns it into statuses or into the
reason it cannot be trusted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import posixpath
import re
from dataclasses import dataclass, field

TAMPER_NAMES = frozenset({"conftest.py", "sitecustomize.py", "usercustomize.py"})
RUNNER_MODULES = frozenset({"pytest", "_pytest", "pluggy", "py"})
PYTEST_CONFIG_NAMES = frozenset({"pytest.ini", ".pytest.ini", "tox.ini", "setup.cfg", "pyproject.toml"})

_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}
_BINARY = re.compile(r"^Binary files (.+) and (.+) differ$")
_CONTEXT_HUNK = re.compile(r"^(\*\*\*|---) \d+(,\d+)? (\*\*\*\*|----)$")  # a context diff's hunk ranges


@dataclass(frozen=True)
class PatchPath:
    """A path a patch writes (the new side of a change; a deletion's old path)."""

    path: str
    new_file: bool = False
    deleted: bool = False


def unquote_c(text: str) -> tuple[str, str]:
    """Git's C-style quoted name at the start of ``text`` (``"tests/conf\\164est.py"``: octal
    escapes are bytes, so a UTF-8 name arrives in pieces) and the text after it. Unquoted text
    comes back whole."""
    if not text.startswith('"'):
        return text, ""
    out, i = bytearray(), 1
    while i < len(text):
        c = text[i]
        if c == '"':
            return bytes(out).decode("utf-8", errors="surrogateescape"), text[i + 1:]
        if c == "\\" and i + 1 < len(text):
            nxt = text[i + 1]
            if nxt in "0123" and re.match(r"[0-7]{3}", text[i + 1:i + 4]):
                out.append(int(text[i + 1:i + 4], 8))
                i += 4
                continue
            out.append(_ESCAPES.get(nxt, ord(nxt)))
            i += 2
            continue
        out += c.encode("utf-8", errors="surrogateescape")
        i += 1
    return text, ""  # unbalanced: git would refuse the line; keep it as written for screening


def _names(side: str) -> list[str]:
    """The paths ``side`` (one name of a header line) may write: the name after ``-p1`` strips
    its first component, as git apply and patch do; a name with no component to strip is kept
    as it stands. /dev/null gives none."""
    name = unquote_c(side.strip())[0] if side.strip().startswith('"') else side.split("\t", 1)[0].rstrip("\r")
    if name == "/dev/null" or not name:
        return []
    found = [name.split("/", 1)[1]] if "/" in name.strip("/") else [name]
    return [posixpath.normpath(n.lstrip("/")) for n in found if n.strip("/")]


def _git_header(rest: str) -> tuple[str | None, str | None]:
    """The two names of ``diff --git A B`` (quoted, or unquoted with spaces: git takes the split
    where both halves name the same file once their prefix is stripped)."""
    if rest.startswith('"'):
        first, tail = unquote_c(rest)
        tail = tail.lstrip(" ")
        second = unquote_c(tail)[0] if tail.startswith('"') else tail
        return first, second
    if ' "' in rest:
        first, _, tail = rest.partition(' "')
        return first, unquote_c('"' + tail)[0]
    for i, c in enumerate(rest):
        if c == " ":
            a, b = rest[:i], rest[i + 1:]
            if a.partition("/")[2] and a.partition("/")[2] == b.partition("/")[2]:
                return a, b
    a, _, b = rest.rpartition(" ")
    return a or None, b or None


def patch_paths(patch: str) -> list[PatchPath]:  # noqa: C901 - one state machine over diff headers (git, ---/+++, rename, copy)
    """Every path ``patch`` creates, changes, renames or copies to or from, or deletes, read as
    git apply and patch read them: git and plain unified diffs, context diffs, C-quoted names,
    names with spaces, rename / copy headers, binary patches and ``Index:`` lines. Screening
    errs toward more names: every name a header gives counts."""
    blocks: list[dict] = []

    def block() -> dict:
        blocks.append({"names": [], "old": [], "header_new": [], "new": set(), "deleted": set(), "plus": False})
        return blocks[-1]

    cur: dict | None = None
    for line in patch.splitlines():
        if line.startswith("diff --git "):
            cur = block()
            first, second = _git_header(line[len("diff --git "):])
            cur["old"], cur["header_new"] = _names(first or ""), _names(second or "")
            cur["names"] += cur["old"] + cur["header_new"]
        elif line.startswith("Index: "):
            cur = block()
            cur["names"].append(posixpath.normpath(line[len("Index: "):].strip()))
        elif cur is not None and line.startswith("new file mode"):
            cur["new"].update(cur["header_new"])
        elif cur is not None and line.startswith("deleted file mode"):
            cur["deleted"].update(cur["old"])
        elif cur is not None and line.startswith(("rename from ", "copy from ")):
            name = posixpath.normpath(unquote_c(line.split(" from ", 1)[1])[0])
            cur["names"].append(name)
            if line.startswith("rename"):
                cur["deleted"].add(name)
        elif cur is not None and line.startswith(("rename to ", "copy to ")):
            name = posixpath.normpath(unquote_c(line.split(" to ", 1)[1])[0])
            cur["names"].append(name)
            cur["new"].add(name)
        elif line.startswith(("--- ", "*** ")) and not _CONTEXT_HUNK.match(line):
            if cur is None or cur["plus"]:
                cur = block()
            if line.startswith("--- ") and cur.get("context") and not cur["plus"]:
                cur["names"] += _names(line[4:])  # a context diff's new name
                cur["plus"] = True
            else:
                cur["old"] = _names(line[4:])
                cur["names"] += cur["old"]
                cur["context"] = line.startswith("*** ")
        elif cur is not None and line.startswith("+++ "):
            target = _names(line[4:])
            if not target:
                cur["deleted"].update(cur["old"])
            else:
                cur["names"] += target
                if not cur["old"]:
                    cur["new"].update(target)
            cur["plus"] = True
        else:
            match = _BINARY.match(line)
            if match:
                if cur is None:
                    cur = block()
                cur["names"] += _names(match.group(1)) + _names(match.group(2))
    found: dict[str, PatchPath] = {}
    for item in blocks:
        for path in dict.fromkeys(item["names"]):
            new, deleted = path in item["new"], path in item["deleted"] and path not in item["new"]
            prev = found.get(path)
            if prev is not None:  # written in one block, deleted in another: written wins
                new, deleted = new or prev.new_file, deleted and prev.deleted
            found[path] = PatchPath(path, new, deleted)
    return list(found.values())


def screen_patch(patch: str, *, max_bytes: int) -> str | None:
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
    """Statuses read from a guarded run, or ``problem``: why none of them can be trusted.
    ``calls``: per test, its call-phase record (the fingerprint of the function pytest called,
    whether it returned, xfail); ``final``: the run's closing record."""

    statuses: dict = field(default_factory=dict)
    problem: str | None = None
    exitstatus: int | None = None
    calls: dict = field(default_factory=dict)
    final: dict = field(default_factory=dict)


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
    calls: dict[str, dict] = {}
    final = None
    for number, line in enumerate(text.splitlines()):
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
        if record["when"] == "call":
            calls[record["nodeid"]] = record
    if final is None:
        return ChannelResult(problem="the test run ended before the runner reported "
                                     "(killed, os._exit, or a crash of the test process)")
    if final.get("denied"):
        return ChannelResult(problem=f"tampering (runtime: {final['denied']})", exitstatus=final.get("exitstatus"),
                             final=final)
    if final.get("tampered"):
        return ChannelResult(problem=f"test runner modified in-process: {final['tampered']}",
                             exitstatus=final.get("exitstatus"), final=final)
    return ChannelResult(statuses={node: _phase_status(p) for node, p in phases.items()},
                         exitstatus=final.get("exitstatus"), calls=calls, final=final)
