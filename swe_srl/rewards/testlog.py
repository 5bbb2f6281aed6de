"""Test logs -> per-test statuses -> a score: the pure half of grading (no docker, no sandbox).

Parse a pytest ``-rA`` log, a junit xml, or a SWE-bench repo's log (swebench's own parsers,
imported lazily); merge them; cross-check them against the exit code; score FAIL_TO_PASS /
PASS_TO_PASS; build the :class:`~swe_srl.schemas.TestReport`. The harness that runs the tests
in a container is :mod:`swe_srl.sandbox.grading`.

Anti-spoofing: the code under test writes to the same stdout as the test runner, so printed
"PASSED" lines are expected. In the log a test keeps the worst status any summary block gives
it; the junit xml pytest writes to a per-run random path decides which tests ran and the log
can only make them worse; and the exit code the engine reports (not one printed in the log)
must agree: a non-zero exit with no failure in the parsed statuses voids the statuses.
Code that rewrites pytest's own results in-process (a conftest hook) is out of reach of any
log-based check, as in SWE-bench.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Literal

from ..errors import ConfigError
from ..schemas import Task, TestReport

Status = Literal["PASSED", "FAILED", "ERROR", "SKIPPED", "XFAIL"]
PASSING = frozenset({"PASSED", "XFAIL"})
# Worst first: merging two sources keeps the worse status of a test.
_SEVERITY = {"ERROR": 4, "FAILED": 3, "SKIPPED": 2, "XFAIL": 1, "PASSED": 0}
_PYTEST_WORDS = {"PASSED": "PASSED", "XPASS": "PASSED", "FAILED": "FAILED", "ERROR": "ERROR",
                 "SKIPPED": "SKIPPED", "XFAIL": "XFAIL"}
_SUMMARY_HEADER = re.compile(r"^=+ short test summary info =+$")
_SECTION_LINE = re.compile(r"^=+ .* =+$")


# ---------------------------------------------------------------- logs -> statuses


def parse_pytest_log(log: str) -> dict[str, str]:
    """Statuses from pytest's ``-rA`` short test summary blocks.

    The code under test can print a whole fake summary block (during a test, or at exit after
    pytest's real one), so every block counts and a test keeps its WORST status: printed text
    can make a test look worse, never better."""
    statuses: dict[str, str] = {}
    in_block = False
    for line in log.splitlines():
        line = line.strip()
        if _SUMMARY_HEADER.match(line):
            in_block = True
            continue
        if not in_block:
            continue
        if _SECTION_LINE.match(line):
            in_block = False
            continue
        word, _, rest = line.partition(" ")
        status = _PYTEST_WORDS.get(word)
        if status is None or not rest or rest.startswith("["):  # "SKIPPED [1] file:line: why"
            continue
        node_id = rest.split(" - ", 1)[0].strip()
        statuses[node_id] = worse(statuses.get(node_id), status)
    return statuses


def _node_id(classname: str, name: str, test_files: Sequence[str]) -> str:
    parts = classname.split(".") if classname else []
    by_module = {f[:-3].replace("/", "."): f for f in test_files if f.endswith(".py")}
    for cut in range(len(parts), 0, -1):
        path = by_module.get(".".join(parts[:cut]))
        if path is not None:
            return "::".join([path, *parts[cut:], name])
    if not parts:  # a collection error: the "name" is the module
        return by_module.get(name, name.replace(".", "/") + ".py")
    return "::".join([f"{'/'.join(parts)}.py", name])


def parse_junit_xml(text: str, test_files: Sequence[str] = ()) -> dict[str, str]:
    """Statuses from a pytest junit xml; ``test_files`` map dotted classnames back to node ids.
    Unreadable xml gives {} (the caller then relies on the log and the exit code)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return {}
    statuses: dict[str, str] = {}
    for case in root.iter("testcase"):
        node = _node_id(case.get("classname", ""), case.get("name", ""), test_files)
        tags = {child.tag for child in case}
        skipped = case.find("skipped")
        if "error" in tags:
            status = "ERROR"
        elif "failure" in tags:
            status = "FAILED"
        elif skipped is not None:
            status = "XFAIL" if skipped.get("type") == "pytest.xfail" else "SKIPPED"
        else:
            status = "PASSED"
        statuses[node] = worse(statuses.get(node), status)
    return statuses


def worse(a: str | None, b: str) -> str:
    """The worse of two statuses (``a`` may be None)."""
    return b if a is None or _SEVERITY.get(b, 4) >= _SEVERITY.get(a, 4) else a


def merge_statuses(primary: Mapping[str, str], secondary: Mapping[str, str]) -> dict[str, str]:
    """``primary`` (junit) decides which tests ran; ``secondary`` (the log) can only make a
    test's status worse, never better and never add a passing test."""
    if not primary:
        return dict(secondary)
    return {test: worse(status, secondary[test]) if test in secondary else status
            for test, status in primary.items()}


def parse_test_log(task: Task, log: str) -> dict[str, str]:
    """Statuses from a test log with the task's parser: ``pytest`` (swe-srl's -rA parser) or a
    name from swebench's PARSER_REGISTRY (``parse_log_django``, ...)."""
    if task.log_parser == "pytest":
        return parse_pytest_log(log)
    try:
        from swebench.harness.log_parsers import PARSER_REGISTRY
        from swebench.types import TestSpec
    except ImportError:
        raise ConfigError(f"log parser {task.log_parser!r} needs swebench: pip install 'swe-srl[eval]'") from None
    parser = PARSER_REGISTRY.get(task.log_parser)
    if parser is None:
        raise ConfigError(f"unknown log parser {task.log_parser!r} for {task.instance_id}")
    spec = TestSpec(instance_id=task.instance_id, image=task.image, eval_script_list=[], repo=task.repo,
                    version=task.version, FAIL_TO_PASS=list(task.fail_to_pass),
                    PASS_TO_PASS=list(task.pass_to_pass), log_parser=task.log_parser)
    return dict(parser(log, spec))


# ---------------------------------------------------------------- statuses -> score / report


def exit_code_contradiction(statuses: Mapping[str, str], exit_code: int | None) -> str | None:
    """Why the statuses cannot describe the run that happened, or None when they can."""
    if exit_code in (None, 0) or not statuses:
        return None
    if any(s in ("FAILED", "ERROR") for s in statuses.values()):
        return None
    return f"the test command exited {exit_code} but the log reports no failure"


def score(statuses: Mapping[str, str], fail_to_pass: Sequence[str],
          pass_to_pass: Sequence[str]) -> tuple[bool, float, float]:
    """(resolved, F2P pass fraction, P2P pass fraction). F2P must pass (or xfail); P2P may also
    be skipped; a test absent from the statuses failed. Empty lists count as fully passing."""
    f2p = sum(statuses.get(t) in PASSING for t in fail_to_pass)
    p2p = sum(statuses.get(t) in PASSING | {"SKIPPED"} for t in pass_to_pass)
    f2p_frac = f2p / len(fail_to_pass) if fail_to_pass else 1.0
    p2p_frac = p2p / len(pass_to_pass) if pass_to_pass else 1.0
    return f2p_frac == 1.0 and p2p_frac == 1.0, f2p_frac, p2p_frac


def build_report(task: Task, statuses: Mapping[str, str], log: str, *, exit_code: int | None,
                 timed_out: bool, time_limit: float, tail_chars: int) -> TestReport:
    """The report of a test run whose patches applied: the statuses (voided when the exit code
    contradicts them; a run past ``time_limit`` is not cross-checked) scored against the task,
    and the last ``tail_chars`` of the log with a note for each of those two events."""
    notes = []
    if timed_out:
        notes.append(f"[swe-srl] tests timed out after {time_limit:.0f}s")
    contradiction = None if timed_out else exit_code_contradiction(statuses, exit_code)
    if contradiction:
        notes.append(f"[swe-srl] {contradiction}: statuses not trusted")
        statuses = {}
    resolved, f2p, p2p = score(statuses, task.fail_to_pass, task.pass_to_pass)
    return TestReport(instance_id=task.instance_id, statuses=dict(statuses), resolved=resolved,
                      fail_to_pass=f2p, pass_to_pass=p2p, patch_applied=True,
                      log_tail="\n".join([log[-tail_chars:], *notes]))
