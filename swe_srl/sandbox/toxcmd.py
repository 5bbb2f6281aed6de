"""``tox --current-env`` test commands read as the pytest run they stand for.

SWE-bench runs sphinx's tests as ``tox --current-env -epy39 -v -- <test files>``: tox (with the
tox-current-env plugin) runs its ``[testenv]`` ``commands`` in the interpreter already installed,
with its ``setenv`` applied. The guard cannot wrap tox itself (the commands live in tox.ini), so
grading reads tox.ini **at the base commit** (``git cat-file``, outside the patch's reach) and
runs what tox would have run: ``setenv`` as assignments, then the ``commands`` line with
``{posargs}`` replaced by the words after ``--``. That command then goes through
:func:`~swe_srl.sandbox.testcmd.find_pytest_run` like any other, so the launcher takes pytest's
place. A tox.ini this cannot read exactly (several commands, substitutions other than
``{posargs}``, ``{toxinidir}`` and ``{env:NAME[:default]}``, a tox without ``--current-env``
that would build its own environment) leaves the task ungradable in one line.
"""

from __future__ import annotations

import configparser
import re
import shlex

from .testcmd import _ASSIGNMENT, Ungradable, _segments, _words

_FACTOR_LINE = re.compile(r"^([A-Za-z0-9_.{},!-]+):\s+(.*)$")  # "py39: ..." (a factor-conditional line)
_ENV_REF = re.compile(r"\{env:([A-Za-z_][A-Za-z0-9_]*)(?::([^{}]*))?\}")
_TOX_OPTIONS_WITH_VALUE = {"-e", "-c", "--conf", "--workdir", "-x", "--override", "--root", "--installpkg"}


def tox_segment(command: str) -> tuple[int, int, list] | None:
    """(start, end, words) of the words of ``command`` that run tox (from ``tox`` on), or None."""
    for start, end in _segments(command):
        words = _words(command[start:end], start)
        i = 0
        while i < len(words) and _ASSIGNMENT.match(words[i][2]):
            i += 1  # NAME=value assignments in front
        if i < len(words) and words[i][2].rsplit("/", 1)[-1] == "tox":
            return words[i][0], end, words[i:]  # assignments in front are kept as written
    return None


def needs_tox_ini(command: str) -> bool:
    """Whether ``command`` runs pytest through ``tox --current-env`` (grading then reads tox.ini)."""
    try:
        found = tox_segment(command)
    except Ungradable:
        return False
    return found is not None and any(w[2] == "--current-env" for w in found[2])


def expand_tox(command: str, tox_ini: str | None) -> str:
    """``command`` with its ``tox --current-env ...`` part replaced by the commands tox would run
    (read from ``tox_ini``, the base commit's tox.ini); Ungradable when that cannot be exact."""
    found = tox_segment(command)
    if found is None:
        return command
    start, end, words = found
    if not any(w[2] == "--current-env" for w in words):
        raise Ungradable("ungradable: the test command runs tox without --current-env (it would build an "
                         "environment of its own); give the task a direct pytest command")
    if tox_ini is None:
        raise Ungradable("ungradable: the test command runs tox --current-env but the base commit has no tox.ini")
    env, posargs = _tox_arguments(command, words[1:])
    section = _testenv(tox_ini, env)
    factors = set(env.split("-")) if env else set()
    commands = _lines(section.get("commands", ""), factors)
    if len(commands) != 1:
        raise Ungradable(f"ungradable: tox env {env or 'testenv'!r} runs {len(commands)} commands; the guard takes "
                         "over exactly one pytest run")
    run = commands[0]
    if "{posargs}" not in run:
        raise Ungradable("ungradable: the tox command ignores the test files ({posargs} missing)")
    run = run.replace("{posargs}", posargs).replace("{toxinidir}", ".")
    assignments = []
    for line in _lines(section.get("setenv", ""), factors):
        name, sep, value = line.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name.strip()):
            raise Ungradable(f"ungradable: cannot read this tox setenv line: {line[:80]}")
        assignments.append(f"{name.strip()}={_shell_value(value.strip())}")
    if re.search(r"\{[^}]*\}", run.replace("{posargs}", "")):
        raise Ungradable(f"ungradable: the tox command uses a substitution the guard cannot resolve: {run[:80]}")
    expanded = " ".join(assignments + [run])
    return command[:start] + expanded + command[end:]


def _tox_arguments(command: str, words: list) -> tuple[str, str]:
    """The env name (``-e``) and the text after ``--`` (as written)."""
    env, i = "", 0
    while i < len(words):
        word = words[i][2]
        if word == "--":
            return env, command[words[i][1]:words[-1][1]].strip()
        if word.startswith("-e") and word != "-e":
            env = word[2:]
        elif word.startswith("--") and "=" in word and word.split("=", 1)[0] == "--env":
            env = word.split("=", 1)[1]
        elif word in ("-e", "--env") and i + 1 < len(words):
            env, i = words[i + 1][2], i + 1
        elif word in _TOX_OPTIONS_WITH_VALUE and i + 1 < len(words):
            if word in ("-c", "--conf"):
                raise Ungradable("ungradable: the tox command names another config file (-c)")
            i += 1
        i += 1
    return env, ""


def _testenv(tox_ini: str, env: str) -> dict[str, str]:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    try:
        parser.read_string(tox_ini)
    except configparser.Error as exc:
        raise Ungradable(f"ungradable: the base commit's tox.ini cannot be read: {str(exc).splitlines()[0][:80]}")
    merged: dict[str, str] = {}
    for name in ("testenv", f"testenv:{env}" if env else ""):
        if name and parser.has_section(name):
            merged.update(dict(parser.items(name)))
    if not merged:
        raise Ungradable(f"ungradable: tox.ini has no [testenv] for {env or 'the default env'!r}")
    return merged


def _lines(value: str, factors: set[str]) -> list[str]:
    """The lines of a multi-line tox setting that apply to an env with ``factors``."""
    out = []
    for raw in value.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        conditional = _FACTOR_LINE.match(line)
        if conditional and "=" not in conditional.group(1):
            if not _factors_match(conditional.group(1), factors):
                continue
            line = conditional.group(2).strip()
        out.append(line)
    return out


def _factors_match(spec: str, factors: set[str]) -> bool:
    """tox's factor conditions: ``py{38,39}``, ``a-b`` (all of), ``a,b`` (any of), ``!a``."""
    options = []
    for part in spec.split(","):
        expanded = re.sub(r"\{([^}]*)\}", lambda m: "|".join(m.group(1).split(",")), part)
        options.extend(expanded.split("|") if "|" in expanded and "-" not in expanded else [expanded])
    for option in options:
        needed = option.split("-")
        if all((f[1:] not in factors) if f.startswith("!") else (f in factors) for f in needed if f):
            return True
    return False


def _shell_value(value: str) -> str:
    """A setenv value as one shell word: ``{env:NAME[:default]}`` becomes ``${NAME-default}``."""
    if re.search(r"\{(?!env:)[^}]*\}", value):
        raise Ungradable(f"ungradable: the tox setenv value uses a substitution the guard cannot resolve: {value[:80]}")
    parts, last = [], 0
    for match in _ENV_REF.finditer(value):
        parts.append(shlex.quote(value[last:match.start()]) if value[last:match.start()] else "")
        default = match.group(2) or ""
        parts.append(f'"${{{match.group(1)}-{default}}}"' if default else f'"${{{match.group(1)}}}"')
        last = match.end()
    if value[last:]:
        parts.append(shlex.quote(value[last:]))
    return "".join(parts) or "''"
