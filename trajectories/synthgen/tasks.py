"""A synthetic task: a small Python package with one seeded bug, its tests, README and issue."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from string import Template

from . import kinds_logic, kinds_values, words
from .sandbox import evaluate

BUG_KINDS = {**kinds_logic.KINDS, **kinds_values.KINDS}


@dataclass
class Task:
    """A generated repository (``files``, before the fix) with its bug and issue."""

    task_id: str
    names: dict
    bug: object
    files: dict  # path relative to the repository root -> text
    mod_path: str
    test_path: str
    problem_statement: str


def mentions(name: str, code: str) -> bool:
    """``name`` is used in ``code`` (as a whole identifier)."""
    return re.search(rf"\b{re.escape(name)}\b", code) is not None


def _sub(text: str, names: dict) -> str:
    return Template(text).substitute(names)


def _module(docstring: str, imports, blocks) -> str:
    head = f'"""{docstring}"""\n\n'
    if imports:
        head += "".join(f"import {m}\n" for m in imports) + "\n"
    return head + "\n" + "\n\n".join(blocks)


def assertion(expr: str, value) -> str:
    if value is None or isinstance(value, bool):
        return f"    assert {expr} is {value!r}\n"
    return f"    assert {expr} == {value!r}\n"


def _test_file(files: dict, import_from: str, names, tests) -> str:
    """A test module whose assertions hold what the code in ``files`` really returns."""
    used = [n for n in names if any(mentions(n, expr) for _, expr in tests)]
    header = f"from {import_from} import {', '.join(used)}\n"
    body = []
    for test_name, expr in tests:
        outcome, value = evaluate(files, header, expr)
        if outcome != "value":
            raise AssertionError(f"{import_from}: {expr} raised {value}")
        body.append(f"def {test_name}():\n" + assertion(expr, value))
    return header + "\n\n" + "\n\n".join(body)


def make_task(index: int, noun_entry, suffix: str, kind: str, seed: int) -> Task:
    """Task ``index``: package ``noun + suffix`` with a bug of ``kind``, helpers around it, tests."""
    rng = random.Random(f"swe-srl-synthetic:{seed}:task:{index}")
    noun, plural, fld = noun_entry
    pkg = noun + suffix
    names = {"noun": noun, "plural": plural, "field": fld, "plural_cap": plural.capitalize(), "pkg": pkg,
             "key": rng.choice(words.GROUP_KEYS), "place": rng.choice(words.PLACE_NAMES)}
    bug = BUG_KINDS[kind](rng, names)
    mod = rng.choice(bug.module_names)
    other = rng.choice([m for m in words.OTHER_MODULES if m != mod])

    helpers = [h for h in words.HELPERS if _sub(h[0], names) not in bug.exports]
    chosen = rng.sample(helpers, rng.randint(2, 4))
    n_main = rng.randint(1, len(chosen) - 1)
    main_helpers, other_helpers = chosen[:n_main], chosen[n_main:]
    before = rng.randint(0, len(main_helpers))
    ordered = main_helpers[:before] + [None] + main_helpers[before:]  # None: the buggy block
    blocks = [bug.code if h is None else _sub(h[1], names) for h in ordered]
    main_names = [n for h in ordered for n in (bug.exports if h is None else (_sub(h[0], names),))]
    other_names = [_sub(h[0], names) for h in other_helpers]

    def docstring(topic: str) -> str:
        return _sub(rng.choice(words.MODULE_DOCSTRINGS), names | {"topic": topic, "Topic": topic.capitalize()})

    tagline = _sub(rng.choice(words.TAGLINES), names)
    version = names["version"] = f"0.{rng.randint(1, 9)}.{rng.randint(0, 12)}"
    exported = ", ".join(f'"{n}"' for n in main_names + other_names)
    files = {
        f"{pkg}/{mod}.py": _module(docstring(mod), bug.imports, blocks),
        f"{pkg}/{other}.py": _module(docstring(other), (), [_sub(h[1], names) for h in other_helpers]),
        f"{pkg}/__init__.py": (f'"""{pkg}: {tagline}."""\n\nfrom .{mod} import {", ".join(main_names)}\n'
                               f'from .{other} import {", ".join(other_names)}\n\n'
                               f'__all__ = [{exported}]\n__version__ = "{version}"\n'),
        "README.md": (f"# {pkg}\n\n{tagline[0].upper() + tagline[1:]}.\n\n```python\nfrom {pkg} import "
                      f"{bug.func}\n```\n\nRun the tests with `python -m pytest`.\n"),
        ".gitignore": "__pycache__/\n*.pyc\n.pytest_cache/\n",
        "pyproject.toml": (f'[project]\nname = "{pkg}"\nversion = "{version}"\ndescription = "{tagline}"\n'
                           f'requires-python = ">=3.8"\n'),
    }

    # The tests the repository already has: the calls whose result the fix does not change.
    def helper_tests(helper_list):
        return [(f"test_{_sub(h[0], names)}_{label}", _sub(call, names)) for h in helper_list for label, call in h[2]]

    def called(expr: str) -> str:  # the function a test is named after
        name = expr.split("(", 1)[0]
        return name if name in bug.exports else bug.func

    mod_tests = (helper_tests(main_helpers[:before]) + [(f"test_{called(e)}_{lb}", e) for lb, e in bug.ok_calls]
                 + helper_tests(main_helpers[before:]))
    files[f"tests/test_{mod}.py"] = _test_file(files, f"{pkg}.{mod}", main_names, mod_tests)
    files[f"tests/test_{other}.py"] = _test_file(files, f"{pkg}.{other}", other_names, helper_tests(other_helpers))

    task_id = f"synth-{pkg}-{rng.randint(2, 300)}"
    task = Task(task_id, names, bug, dict(sorted(files.items())), f"{pkg}/{mod}.py", f"tests/test_{mod}.py", "")
    _check_bug(task)
    task.problem_statement = issue_text(task, rng)
    return task


def make_tasks(n: int, seed: int = 0) -> list:
    """``n`` tasks with distinct package names; bug kinds cycle so every kind is used evenly."""
    rng = random.Random(f"swe-srl-synthetic:{seed}")
    combos = [(entry, suffix) for entry in words.DOMAINS for suffix in words.PACKAGE_SUFFIXES]
    if n > len(combos):
        raise ValueError(f"at most {len(combos)} tasks (distinct package names)")
    rng.shuffle(combos)
    kinds = sorted(BUG_KINDS)
    rng.shuffle(kinds)
    return [make_task(i, entry, suffix, kinds[i % len(kinds)], seed) for i, (entry, suffix) in enumerate(combos[:n])]


def fixed_files(task: Task) -> dict:
    files = dict(task.files)
    files[task.mod_path] = files[task.mod_path].replace(task.bug.old, task.bug.new)
    return files


def _check_bug(task: Task) -> None:
    """The catalogue's promises, checked by running the code: one exact place to fix, bug calls
    that change with the fix, ok calls that do not."""
    bug = task.bug
    if task.files[task.mod_path].count(bug.old) != 1:
        raise AssertionError(f"{task.task_id}: the buggy text is not unique in {task.mod_path}")
    header = import_line(task, bug.exports)
    before, after = task.files, fixed_files(task)
    for _, expr in bug.bug_calls:
        if evaluate(before, header, expr) == evaluate(after, header, expr):
            raise AssertionError(f"{task.task_id}: {expr} does not show the bug")
    for _, expr in bug.ok_calls:
        if evaluate(before, header, expr) != evaluate(after, header, expr):
            raise AssertionError(f"{task.task_id}: {expr} changes with the fix")


def import_line(task: Task, names, from_package: bool = False) -> str:
    module = task.names["pkg"] if from_package else task.mod_path[:-3].replace("/", ".")
    return f"from {module} import {', '.join(names)}\n"


def _shown(outcome) -> str:
    kind, value = outcome
    return f"raises `{value}`" if kind == "error" else f"returns `{value!r}`"


def issue_text(task: Task, rng: random.Random) -> str:
    bug, pkg = task.bug, task.names["pkg"]
    _, expr = bug.bug_calls[0]
    header = import_line(task, bug.exports, from_package=True)
    actual = evaluate(task.files, header, expr)
    expected = evaluate(fixed_files(task), header, expr)
    where = f"`{task.mod_path}`" if rng.random() < 0.4 else f"`{pkg}`"
    style = rng.randrange(4)
    if style == 0:
        shown = (f"{actual[1]}" if actual[0] == "error" else repr(actual[1]))
        session = (f">>> from {pkg} import {bug.func}\n>>> {expr}\n"
                   + (f"Traceback (most recent call last):\n  ...\n{shown}" if actual[0] == "error" else shown))
        return (f"{bug.title}\n\n{bug.summary[0].upper() + bug.summary[1:]} ({where}).\n\n```python\n{session}\n```\n\n"
                f"Expected `{expected[1]!r}`.\n")
    if style == 1:
        return (f"{bug.title}\n\n**Describe the bug**\n{bug.summary[0].upper() + bug.summary[1:]}.\n\n"
                f"**To reproduce**\n```python\n{header}\nprint({expr})\n```\n\n"
                f"**Expected**\n`{expected[1]!r}`\n\n**Actual**\nIt {_shown(actual)}.\n\n"
                f"{pkg} version: {task.names['version']}\n")
    if style == 2:
        return f"{bug.title}\n\n`{expr}` {_shown(actual)}, but it should return `{expected[1]!r}`.\n"
    return (f"{bug.title}\n\nIn {where}, {bug.summary}. For example `{expr}` {_shown(actual)}; "
            f"I expected `{expected[1]!r}`.\n\nCould this be fixed? The docstring describes the expected behaviour.\n")
