"""Facts about a guarded test run checked OUTSIDE the test process (pure: no docker, no sandbox).

The code under test shares pytest's process, so the statuses of the results channel say what
pytest saw, not that pytest ran the task's tests. Grading holds three facts against what the
task ships, computed before any code of the patch ran (``guard/fingerprint.py``, a clean
interpreter in the container, after the test patch is applied):

- the expected tests ran: an expected test (FAIL_TO_PASS or PASS_TO_PASS) the channel never
  reports did not pass;
- each expected test that passed ran the test file's own function: the fingerprint of the code
  object pytest called (recorded by the launcher's audit hook) is one the test file compiles to,
  under the test's own name, and that call returned (a look-alike module, a swapped module
  class, a no-op item from a collection hook, a runner that skips the call all fail here);
- XFAIL, XPASS or SKIPPED of an expected test counts as a failure unless the test file itself
  marks that test (decorator, ``pytestmark``, a skip/xfail call in its body): an xfail mark
  injected at run time or a library that calls ``pytest.xfail()`` fails here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Reference:
    """What the test files define: per file, fingerprint -> code name; the tests each marks."""

    files: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    marked: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: Mapping) -> Reference:
        files = data.get("files") if isinstance(data, Mapping) else None
        marked = data.get("marked") if isinstance(data, Mapping) else None
        return cls(files=dict(files or {}), marked=dict(marked or {}))


def _split(node_id: str) -> tuple[str, list[str]]:
    path, _, rest = node_id.partition("::")
    parts = [p for p in rest.split("::") if p]
    if parts:
        parts[-1] = parts[-1].split("[", 1)[0]
    return path, parts


def marked(reference: Reference, node_id: str) -> bool:
    """Whether the test file of ``node_id`` marks it as allowed to skip / xfail."""
    path, parts = _split(node_id)
    marks = set(reference.marked.get(path, ()))
    if "*" in marks:
        return True
    prefixes = {"::".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return bool(marks & prefixes) or (bool(parts) and any(m.split("::")[-1] == parts[-1] for m in marks))


def own_function(reference: Reference, node_id: str, code: object) -> bool:
    """Whether ``code`` (a fingerprint from the channel) is a function of the task's test files
    named as the test is (doctests are the runner's own items, checked in-process)."""
    if code == "doctest":
        return True
    if not isinstance(code, str):
        return False
    _, parts = _split(node_id)
    name = parts[-1] if parts else ""
    return any(entries.get(code) == name for entries in reference.files.values())


def check_facts(statuses: Mapping[str, str], calls: Mapping[str, Mapping], reference: Reference,
                expected: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """``statuses`` with every expected test that breaks a fact above made FAILED, and one note
    per kind of breach (for the log)."""
    out = dict(statuses)
    notes: dict[str, list[str]] = {}
    for test in dict.fromkeys(expected):
        status = out.get(test)
        if status is None:
            notes.setdefault("did not run", []).append(test)
            continue
        call = calls.get(test) or {}
        if status in ("XFAIL", "SKIPPED") or call.get("xfail"):
            if not marked(reference, test):
                out[test] = "FAILED"
                notes.setdefault("xfail/xpass/skip not marked by the test file", []).append(test)
            continue
        if status != "PASSED":
            continue
        if not own_function(reference, test, call.get("code")):
            out[test] = "FAILED"
            notes.setdefault("ran a function that is not the test file's own", []).append(test)
        elif call.get("ran") is not True:
            out[test] = "FAILED"
            notes.setdefault("its test function was not seen to run and return", []).append(test)
    lines = [f"[swe-srl] {len(tests)} expected test(s) {why}: {', '.join(tests[:3])}"
             + (" ..." if len(tests) > 3 else "") for why, tests in notes.items()]
    return out, lines
