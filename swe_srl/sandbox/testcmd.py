"""Where a task's test command runs pytest, found the way a shell reads it, so that grading can
put its launcher in pytest's place (or refuse the task as ungradable).

A regex over the command text missed every form but ``[python -m] pytest``: with an environment
assignment in front (``PYTHONWARNINGS=ignore python -m pytest``), interpreter flags
(``python -W ignore -m pytest``), a wrapper (``timeout 900 ...``, ``xvfb-run -a ...``,
``env X=1 ...``) or inside ``bash -c '...'``, pytest ran unguarded and grading trusted a junit
file the code under test could write. Here the command is split into the shell's segments
(``&&``, ``||``, ``;``, ``|``, ``&``, quotes respected), each segment into words, and a
pytest run is recognised through assignments, wrappers, interpreter flags and ``sh -c``
strings. Whatever mentions pytest but cannot be rewritten safely (``tox``, subshells, command
substitution, redirections, pytest run twice) raises :class:`Ungradable`: one line, never a
silent unguarded fallback. Rewriting replaces only the words that start pytest; every other
word keeps its original text (quotes, ``$VAR``, ``"$@"``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

from ..errors import InfrastructureError

ANY_PYTHON = '"$(command -v python || command -v python3)"'
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"^python(\d+(\.\d+)*)?$")
_MENTIONS_PYTEST = re.compile(r"(?<![\w.-])(py\.test|pytest)(?![\w-])")
# Wrappers that run the rest of their words as a command: options that take a value.
_WRAPPERS = {
    "env": {"-u", "--unset", "-C", "--chdir", "-S", "--split-string"},
    "timeout": {"-s", "--signal", "-k", "--kill-after"},
    "xvfb-run": {"-n", "--server-num", "-s", "--server-args", "-f", "--auth-file", "-e", "--error-file",
                 "-p", "--xauth-protocol", "-w", "--wait", "-l"},
    "nice": {"-n", "--adjustment"},
    "stdbuf": {"-i", "-o", "-e"},
    "nohup": set(), "time": set(), "command": set(), "exec": set(),
}
_NEEDS_OPERAND = {"timeout"}  # its first non-option word is the duration, not the command
# Interpreter options that take a value (``-W ignore`` or ``-Wignore``).
_PY_VALUE_FLAGS = {"-W", "-X", "-Q"}
_SHELLS = {"bash", "sh", "dash", "zsh"}


class Ungradable(InfrastructureError):
    """A task whose tests grading cannot run under its guard: refused, never run unguarded."""


@dataclass(frozen=True)
class PytestRun:
    """A command's pytest invocation: the text around it and how to start pytest."""

    before: str  # everything up to the words that start pytest (assignments, wrappers, flags)
    python: str  # the interpreter word as written, or ANY_PYTHON for a bare ``pytest``
    mode: str  # "module" (python -m pytest) or "script" (pytest)
    after: str  # pytest's arguments and the rest of the command

    def with_launcher(self, launcher: str) -> str:
        return f"{self.before}{self.python} {launcher}{self.after}"

    def python_command(self, args: str) -> str:
        """The command up to pytest (env, wrappers, interpreter flags), running ``args`` with
        pytest's interpreter instead."""
        return f"{self.before}{self.python} {args}"

    def probe(self) -> str:
        """The command up to pytest, then its interpreter importing pytest (a runner check)."""
        return self.python_command("-c 'import pytest'")


def _step(text: str, i: int, quote: str) -> tuple[int, str]:
    """Past the character of shell ``text`` at ``i`` read under ``quote`` (``'``, ``"`` or none):
    the next position and quote. A backslash escapes the next character outside quotes and
    inside double quotes."""
    c = text[i]
    if quote:
        if c == quote:
            return i + 1, ""
        return (i + 2 if c == "\\" and quote == '"' else i + 1), quote
    if c == "\\":
        return i + 2, ""
    return i + 1, (c if c in "'\"" else "")


def _segments(command: str) -> list[tuple[int, int]]:
    """(start, end) of each part of ``command`` between unquoted control operators; raises
    Ungradable for constructs whose words cannot be read without running a shell."""
    spans, start, i, quote = [], 0, 0, ""
    while i < len(command):
        c = command[i]
        if not quote and c in ";&|\n":
            spans.append((start, i))
            i += 2 if command[i:i + 2] in ("&&", "||") else 1
            start = i
            continue
        if not quote and (c in "()`<>" or command.startswith("$(", i)) and _MENTIONS_PYTEST.search(command):
            raise Ungradable(f"ungradable: the test command uses {c!r}, which the guard cannot rewrite: "
                             f"{command[:120]}")
        i, quote = _step(command, i, quote)
    if quote:
        raise Ungradable(f"ungradable: unbalanced quotes in the test command: {command[:120]}")
    spans.append((start, len(command)))
    return spans


def _words(segment: str, offset: int) -> list[tuple[int, int, str]]:
    """(start, end, value) of each word of ``segment`` (``offset`` added to positions)."""
    words, i = [], 0
    while i < len(segment):
        if segment[i].isspace():
            i += 1
            continue
        start, quote = i, ""
        while i < len(segment) and (quote or not segment[i].isspace()):
            i, quote = _step(segment, i, quote)
        raw = segment[start:i]
        value = shlex.split(raw)
        words.append((offset + start, offset + i, value[0] if value else ""))
    return words


def _skip_options(words: list, i: int, takes_value: set[str]) -> int:
    while i < len(words) and words[i][2].startswith("-") and words[i][2] != "--":
        option = words[i][2]
        name = option.split("=", 1)[0]
        i += 2 if name in takes_value and "=" not in option and (len(option) == 2 or option.startswith("--")) else 1
    return i + 1 if i < len(words) and words[i][2] == "--" else i


def _find_in_segment(command: str, words: list) -> PytestRun | None:
    i = 0
    while i < len(words) and _ASSIGNMENT.match(words[i][2]):
        i += 1
    while i < len(words) and words[i][2].rsplit("/", 1)[-1] in _WRAPPERS:
        name = words[i][2].rsplit("/", 1)[-1]
        i = _skip_options(words, i + 1, _WRAPPERS[name])
        while name == "env" and i < len(words) and _ASSIGNMENT.match(words[i][2]):
            i += 1
        if name in _NEEDS_OPERAND:
            i += 1
    if i >= len(words):
        return None
    start, end, program = words[i]
    base = program.rsplit("/", 1)[-1]
    if base in ("pytest", "py.test"):
        return PytestRun(command[:start], ANY_PYTHON, "script", command[end:])
    if _PYTHON.match(base):
        j = i + 1
        while j < len(words) and words[j][2].startswith("-") and words[j][2] != "-m":
            flag = words[j][2]
            if flag.startswith("-c") or flag == "-":
                return None  # code given inline: not a pytest run the guard could take over
            j += 2 if flag in _PY_VALUE_FLAGS else 1
        if j + 1 < len(words) and words[j][2] == "-m" and words[j + 1][2] in ("pytest", "py.test"):
            return PytestRun(command[:start], command[start:words[j][0]].rstrip(), "module",
                             command[words[j + 1][1]:])
        return None
    if base in _SHELLS:
        return _find_in_shell(command, words, i)
    if base == "tox":
        raise Ungradable("ungradable: the test command runs pytest through tox, whose commands the guard "
                         "cannot wrap; give the task a direct pytest command")
    return None


def _find_in_shell(command: str, words: list, i: int) -> PytestRun | None:
    j = i + 1
    while j < len(words) and words[j][2].startswith("-") and "c" not in words[j][2].lstrip("-"):
        j += 1
    if j + 1 >= len(words) or not words[j][2].startswith("-"):
        return None
    start, end, script = words[j + 1]
    inner = find_pytest_run(script)
    if inner is None:
        return None
    # The script string is rewritten and quoted again; the words after it are kept as written.
    return _ShellRun(command[:start], inner, command[end:])


class _ShellRun(PytestRun):
    """A pytest run inside ``sh -c SCRIPT``: the launcher goes into SCRIPT, quoted again."""

    def __init__(self, before: str, inner: PytestRun, after: str) -> None:
        object.__setattr__(self, "before", before)
        object.__setattr__(self, "python", inner.python)
        object.__setattr__(self, "mode", inner.mode)
        object.__setattr__(self, "after", after)
        object.__setattr__(self, "_inner", inner)

    def with_launcher(self, launcher: str) -> str:
        return f"{self.before}{shlex.quote(self._inner.with_launcher(launcher))}{self.after}"

    def python_command(self, args: str) -> str:
        return f"{self.before}{shlex.quote(self._inner.python_command(args))}{self.after}"


def find_pytest_run(command: str) -> PytestRun | None:
    """The pytest invocation of ``command``; None when it runs no pytest (another runner, e.g.
    Django's); raises Ungradable when it runs pytest in a form the guard cannot take over."""
    found = []
    for start, end in _segments(command):
        words = _words(command[start:end], start)
        run = _find_in_segment(command, words) if words else None
        if run is not None:
            found.append((start, end, run))
        elif _MENTIONS_PYTEST.search(command[start:end]):
            raise Ungradable(f"ungradable: cannot tell how this part of the test command runs pytest: "
                             f"{command[start:end].strip()[:120]}")
    if len(found) > 1:
        raise Ungradable("ungradable: the test command runs pytest more than once; only one run can be guarded")
    return found[0][2] if found else None
