"""The patch scanner: runner tampering in a patch's Python, found by parsing it (no docker).

Code under test runs inside pytest's process, so a patch can reach for the runner: replace
modules in ``sys.modules``, swap a test module's ``__class__``, walk frames or the garbage
collector to the launcher's objects, call ``pytest.xfail()`` from library code, write a hook
module at run time. :func:`scan_patch` parses every Python file the patch writes and returns a
:class:`Finding` (rule, path, line) for each such construct the patch adds; grading rejects a
patch with any finding as ``tampering (<rule>)`` (:func:`rejection`). The rules and what each
matches are in :data:`RULES` (:mod:`swe_srl.rewards.scan_rules`).

What is read: the file after the patch, rebuilt from its base text and the hunks, when the base
text is given (grading reads it from the task's container at the base commit); else the hunks
alone (their new side, then runs of added lines, then single lines: whatever parses). Only
constructs on lines the patch adds count: the base code's own ``sys._getframe`` is not the
patch's doing. Uses of pytest/_pytest/pluggy, ctypes and ``__main__`` are compared with the
base version of the same file: a file that already uses ``pytest.fixture`` may use it again,
not ``pytest.hookimpl``.

Test code: a path the task lists as a test file, one under a ``tests``/``testing`` folder, or a
file named ``test_*.py``, ``*_test.py`` or ``conftest.py``. Its pytest use is not judged, nor
are skips, exits and file writes in a test module or inside a test helper's functions (a helper
that skips at import is). Library code that imports a test module the patch writes is a
finding (``test-code-import``): a test file is no hiding place. pytest's own packages
(``_pytest/``, ``pytest/``, ``pluggy/`` paths: only pytest's repository has them, grading
rejects new ones) may use pytest, skip, walk frames and install import hooks: that is its job.
"""

from __future__ import annotations

import ast
import posixpath
import re
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from .patch_diff import FileDiff, apply_hunks, parse_diff
from .scan_rules import RULES, RUNNER_ROOTS, Hit, find_hits

__all__ = ["RULES", "TAMPERING", "Finding", "is_test_path", "python_paths", "rejection", "scan_patch"]

TAMPERING = "tampering"  # how a flagged patch's TestReport.rejected starts: "tampering (<rule>): ..."
_TEST_DIRS = frozenset({"tests", "testing"})
_TEST_EXEMPT = frozenset({"pytest-outcome", "hard-exit", "runtime-code-write"})
_RUNNER_OWN = frozenset({"pytest-use", "pytest-outcome", "import-hook", "frame-walk"})  # pytest's own work
_BASE_AWARE = frozenset({"pytest-use", "ctypes", "main-module"})


@dataclass(frozen=True, order=True)
class Finding:
    """One rule matched on a line the patch adds."""

    rule: str
    path: str
    line: int
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.rule}: {self.path}:{self.line} {self.detail}".rstrip()


def _is_python(diff: FileDiff) -> bool:
    if diff.path.endswith((".py", ".pyw")):
        return True
    first = next((t for op, t in (diff.hunks[0].lines if diff.hunks else []) if op != "-"), "")
    return first.startswith("#!") and "python" in first


def python_paths(patch: str) -> list[str]:
    """The base-side paths of the Python files ``patch`` changes (not creates): what grading
    reads at the base commit for :func:`scan_patch`."""
    return sorted({d.old_path or d.path for d in parse_diff(patch) if not d.new_file and _is_python(d)})


def _test_module(path: str, test_files: Sequence[str]) -> bool:
    name = posixpath.basename(path)
    return (path in test_files or name == "conftest.py" or name.startswith("test_")
            or name.endswith(("_test.py", "_tests.py")))


def is_test_path(path: str, test_files: Sequence[str] = ()) -> bool:
    """Test code as the scanner counts it (see the module docstring)."""
    return _test_module(path, test_files) or bool(_TEST_DIRS & set(path.split("/")[:-1]))


def _runner_package(path: str) -> bool:
    return bool(RUNNER_ROOTS & set(path.split("/")[:-1])) or posixpath.basename(path) in ("pytest.py", "pluggy.py")


def _dotted(path: str) -> str:
    parts = path.removesuffix(".py").split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _parse(text: str) -> ast.Module | None:
    try:
        return ast.parse(text)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None


def _parse_at(text: str, first_line: int) -> ast.Module | None:
    tree = _parse(textwrap.dedent(text))
    if tree is not None:
        ast.increment_lineno(tree, first_line - 1)
    return tree


_OPENERS = (("elif", "if 1: pass\n"), ("else", "if 1: pass\n"), ("except", "try: pass\n"), ("finally", "try: pass\n"))


def _line_tree(number: int, text: str) -> ast.Module | None:
    """One line on its own (a block header gets a body; elif/else/except get their opener)."""
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    candidates = [(text, number)]
    if text.endswith(":"):
        prefix = next((p for kw, p in _OPENERS if text.split()[0].rstrip(":") == kw), "")
        candidates.append((prefix + text + " pass", number - prefix.count("\n")))
    for source, first in candidates:
        tree = _parse_at(source, first)
        if tree is not None:
            return tree
    return None


def _fragments(runs: Iterable[list[tuple[int, str]]]) -> ast.Module:
    """One module of whatever parses of ``runs`` (numbered lines): each run whole, else each line."""
    body: list[ast.stmt] = []
    for run in runs:
        if not run:
            continue
        tree = _parse_at("\n".join(t for _, t in run), run[0][0])
        if tree is None:
            trees = [_line_tree(n, t) for n, t in run]
            body += [stmt for t in trees if t is not None for stmt in t.body]
        else:
            body += tree.body
    return ast.Module(body=body, type_ignores=[])


def _side_runs(diff: FileDiff, side: str) -> list[list[tuple[int, str]]]:
    """Per hunk, its lines on one side (`+`: new, `-`: old) with their numbers there."""
    runs = []
    for hunk in diff.hunks:
        number, run = (hunk.new_start if side == "+" else hunk.old_start), []
        for op, text in hunk.lines:
            if op in (" ", side):
                run.append((number, text))
                number += 1
        runs.append(run)
    return runs


def _rebuilt(base: str, diff: FileDiff) -> str | None:
    rebuilt = apply_hunks(base, diff)
    return rebuilt[0] if rebuilt is not None else None


def _file_hits(diff: FileDiff, base: str | None) -> tuple[list[Hit], set[int], list[Hit], ast.Module | None]:
    """(hits in the file after the patch, the added line numbers, hits in its base, its tree).
    Code nested too deep to walk is itself a finding: no honest patch needs it."""
    try:
        return _walk_file(diff, base)
    except RecursionError:
        added = {n for n, _ in diff.added()}
        first = min(added, default=1)
        return [Hit("hidden-code", first, first, "nested too deep to scan", False)], added, [], None


def _walk_file(diff: FileDiff, base: str | None) -> tuple[list[Hit], set[int], list[Hit], ast.Module | None]:
    if base is not None:
        rebuilt = apply_hunks(base, diff)
        tree = _parse(rebuilt[0]) if rebuilt is not None else None
        if rebuilt is not None and tree is not None:
            base_tree = _parse(base) if base else None
            return find_hits(tree), rebuilt[1], find_hits(base_tree) if base_tree else [], tree
    added = {n for n, _ in diff.added()}
    tree = _fragments(_side_runs(diff, "+"))
    runs = [[(n, t) for n, t in run if n in added] for run in _side_runs(diff, "+")]
    extra = _fragments(runs)  # the added lines alone, where the hunk as a whole did not parse
    return find_hits(tree) + find_hits(extra), added, find_hits(_fragments(_side_runs(diff, "-"))), tree


_COOKIE = re.compile(r"^[ \t\f]*#.*?coding[:=][ \t]*([-\w.]+)")
_PLAIN_CODECS = ("utf_8", "utf8", "ascii", "us_ascii", "latin_1", "latin1", "iso_8859", "iso8859", "cp125", "l1",
                 "euc_", "gb", "big5", "shift_jis", "koi8", "mac_", "cp9")


def _hidden_encoding(text: str | None, added: set[int], path: str) -> list[Finding]:
    """A coding cookie naming a codec that can hide code (``unicode_escape``, ``raw_unicode_escape``,
    utf-7, ...): Python reads the file through it, the scanner would read the escapes as a string."""
    found = []
    for number, line in enumerate((text or "").split("\n")[:2], start=1):
        match = _COOKIE.match(line)
        if match and number in added:
            codec = match.group(1).lower().replace("-", "_")
            if not codec.startswith(_PLAIN_CODECS):
                found.append(Finding("hidden-code", path, number, f"coding: {match.group(1)}"))
            break
    return found


_BINARY_CODE = (".py", ".pyw", ".pyc", ".pyo", ".pth", ".so", ".pyd", ".dll", ".dylib", ".egg", ".whl", ".zip")


def _opaque(diffs: Sequence[FileDiff]) -> list[Finding]:
    """Symbolic links (a link named ``x.py``, or a package folder pointing to /tmp) and binary
    patches of code: what they run is not in the patch's text."""
    return [Finding("opaque-file", d.path, 0, "symlink" if d.symlink else "binary patch") for d in diffs
            if not d.deleted and (d.symlink or (d.binary and (d.path.endswith(_BINARY_CODE) or ".so." in d.path)))]


def _allowed_by_base(hit: Hit, base_hits: list[Hit]) -> bool:
    """A use the base version of the same file already makes (see the module docstring)."""
    if hit.rule == "pytest-outcome":
        return hit.key.startswith("unittest") and any(b.key == hit.key for b in base_hits)
    if hit.rule not in _BASE_AWARE or hit.key.startswith("write:"):
        return False
    keys = {b.key for b in base_hits if b.rule == hit.rule}
    if hit.rule == "main-module":
        return bool(keys)
    parts = hit.key.split(".")
    if hit.key in keys or (len(parts) == 1 and any(k.split(".")[0] == hit.key for k in keys)):
        return True
    prefixes = {".".join(k.split(".")[:i]) for k in keys for i in range(2, len(k.split(".")) + 1)}
    return hit.key in prefixes or (len(parts) >= 3 and ".".join(parts[:-1]) in prefixes)


def _imports(tree: ast.Module, path: str, added: set[int]) -> list[tuple[int, str]]:
    """(line, dotted module) of each import on an added line, relative ones resolved."""
    package = _dotted(path).split(".")[:-1] if not path.endswith("__init__.py") else _dotted(path).split(".")
    out = []
    for node in ast.walk(tree):
        if not isinstance(node,
                          (ast.Import, ast.ImportFrom)) or not added & set(range(node.lineno,
                                  (node.end_lineno or node.lineno) + 1)):
            continue
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
            continue
        base = package[:len(package) - node.level + 1] if node.level else []
        module = ".".join(base + ([node.module] if node.module else []))
        out += [(node.lineno, module)] + [(node.lineno, f"{module}.{a.name}".lstrip(".")) for a in node.names]
    return out


def _test_imports(tree: ast.Module | None, path: str, added: set[int], written_tests: Sequence[str]) -> list[Finding]:
    if tree is None or not written_tests:
        return []
    found = []
    for line, module in _imports(tree, path, added):
        for test in written_tests:
            dotted = _dotted(test)
            if module and (dotted == module or dotted.endswith("." + module)):
                found.append(Finding("test-code-import", path, line, f"imports {module} ({test})"))
    return found


def scan_patch(patch: str, base: Mapping[str, str | None] | None = None, *,
               test_files: Sequence[str] = ()) -> list[Finding]:
    """Every runner-tampering construct ``patch`` adds (sorted; empty: clean).

    ``base``: the text at the base commit of the Python files the patch changes, by path (None
    or absent: unknown; the hunks are read alone). ``test_files``: the task's test files."""
    base = base or {}
    every = parse_diff(patch)
    diffs = [d for d in every if not d.deleted and _is_python(d)]
    written_tests = [d.path for d in diffs if is_test_path(d.path, test_files)]
    findings: set[Finding] = set()
    for diff in diffs:
        text = "" if diff.new_file else base.get(diff.old_path or diff.path)
        hits, added, base_hits, tree = _file_hits(diff, text)
        test, module = is_test_path(diff.path, test_files), _test_module(diff.path, test_files)
        for hit in hits:
            if not added & set(range(hit.line, hit.end_line + 1)) or _allowed_by_base(hit, base_hits):
                continue
            if (hit.rule == "pytest-use" and test) or (hit.rule in _RUNNER_OWN and _runner_package(diff.path)):
                continue
            if hit.rule in _TEST_EXEMPT and test and (module or hit.in_function):
                continue
            findings.add(Finding(hit.rule, diff.path, hit.line, hit.key[:80]))
        if not test:
            findings.update(_test_imports(tree, diff.path, added, written_tests))
        head = dict((n, t) for n, t in diff.added() if n <= 2)
        first_lines = f"{head.get(1, '')}\n{head.get(2, '')}" if text is None else None
        findings.update(_hidden_encoding(_rebuilt(text, diff) if text is not None else first_lines, added, diff.path))
    findings.update(_opaque(every))
    unique: dict[tuple[str, str, int], Finding] = {}
    for finding in sorted(findings):
        unique.setdefault((finding.rule, finding.path, finding.line), finding)
    return sorted(unique.values(), key=lambda f: (f.path, f.line, f.rule))


def rejection(findings: Sequence[Finding]) -> str | None:
    """``TestReport.rejected`` for a flagged patch: ``tampering (<rule>): <where>``, else None."""
    if not findings:
        return None
    # The most telling rule names the rejection: a pytest import beside pytest.xfail() is the xfail.
    first = min(findings, key=lambda f: (f.rule == "pytest-use", f.path, f.line))
    more = sorted({f.rule for f in findings if f is not first} - {first.rule})
    tail = f"; {len(findings) - 1} more" + (f" ({', '.join(more)})" if more else "") if len(findings) > 1 else ""
    return f"{TAMPERING} ({first.rule}): {first.path}:{first.line} {first.detail}{tail}"
