"""What a bug kind produces, and small helpers the kinds share.

A bug kind is a function ``(rng, names) -> Bug``; ``names`` holds the task's vocabulary
(``noun``, ``plural``, ``field``, ...). A Bug gives the buggy code block, the exact text to
replace and its fix, and call expressions: ``bug_calls`` change their result with the fix
(they reproduce the issue and become the regression test), ``ok_calls`` do not (they become the
tests the repository already has, which pass before and after the fix). The generator evaluates
every call for real and checks both promises, so no kind states a result.

Call expressions use single quotes only (they are also pasted into ``python -c "..."``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from string import Template


@dataclass
class Bug:
    """One seeded bug: ``code`` (the buggy block) contains ``old`` exactly once, and replacing it
    by ``new`` is the fix. ``func`` is the function the issue is about, ``exports`` the names the
    block defines (imported by the tests and the reproduction). Calls are ``(label, expression)``;
    ``title``/``summary`` feed the issue, ``diagnosis``/``fix_note`` the expert's thoughts."""

    kind: str
    variant: str
    module_names: tuple
    code: str
    old: str
    new: str
    func: str
    exports: tuple
    ok_calls: list
    bug_calls: list
    title: str
    summary: str
    diagnosis: str
    fix_note: str
    imports: tuple = ()


def fill(text: str, names: dict) -> str:
    return Template(text).substitute(names)


def records(rng: random.Random, names: dict, n: int, lo: int = 1, hi: int = 90) -> list:
    return [{"id": i + 1, names["field"]: rng.randint(lo, hi)} for i in range(n)]


def lit(value) -> str:
    """A Python literal with single-quoted strings (repr of dicts/lists/strings does that)."""
    return repr(value)
