"""A unified diff read file by file and hunk by hunk, for the patch scanner
(:mod:`swe_srl.rewards.scanner`): which lines a patch adds, and each touched file's text after
the patch when its base text is known. Pure (no I/O).

Paths are read as git writes them: ``a/``/``b/`` prefixes, C-quoted names (``"tests/conf\\164est.py"``
is ``tests/conftest.py``), ``/dev/null`` for a created or deleted side. A hunk ends when its
line counts are used up, so a removed line that reads ``-- x`` is never taken for a header.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_DIFF_GIT = re.compile(r'^diff --git ("(?:[^"\\]|\\.)*"|\S+) ("(?:[^"\\]|\\.)*"|\S+)$')
_ESCAPES = {"a": 7, "b": 8, "t": 9, "n": 10, "v": 11, "f": 12, "r": 13, '"': 34, "\\": 92}


def unquote(name: str) -> str:
    """A path as git wrote it in a header: C-quoted names unquoted (octal bytes as UTF-8)."""
    if not (len(name) >= 2 and name.startswith('"') and name.endswith('"')):
        return name
    out, body, i = bytearray(), name[1:-1], 0
    while i < len(body):
        char = body[i]
        if char == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            octal = re.match(r"[0-7]{1,3}", body[i + 1:])
            if octal:
                out.append(int(octal.group(), 8) & 0xFF)
                i += 1 + len(octal.group())
                continue
        out += char.encode("utf-8")
        i += 1
    return out.decode("utf-8", errors="replace")


def _side(text: str) -> str | None:
    text = text.rstrip("\r")
    name = text if text.startswith('"') else text.split("\t", 1)[0].strip()
    name = unquote(name)
    if name == "/dev/null":
        return None
    if name[:2] in ("a/", "b/"):
        name = name[2:]
    return posixpath.normpath(name) if name else None


@dataclass
class Hunk:
    """One hunk: where it starts on each side and its lines as (op, text), op in `` ``, ``-``, ``+``."""

    old_start: int
    new_start: int
    lines: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class FileDiff:
    """What a patch does to one file (``path``: the new side's path, the old one for a deletion)."""

    path: str
    old_path: str | None = None
    new_file: bool = False
    deleted: bool = False
    hunks: list[Hunk] = field(default_factory=list)
    binary: bool = False
    """A ``GIT binary patch``: its content is not in the text."""
    symlink: bool = False
    """Written as a symbolic link (mode 120000): its "content" is where it points."""

    def added(self) -> list[tuple[int, str]]:
        """(line number on the new side, text) of every added line."""
        out = []
        for hunk in self.hunks:
            number = hunk.new_start
            for op, text in hunk.lines:
                if op == "+":
                    out.append((number, text))
                if op != "-":
                    number += 1
        return out


def parse_diff(patch: str) -> list[FileDiff]:  # noqa: C901 - one line-driven state machine over the unified-diff grammar
    """The files of a unified diff (git or plain), in order; one entry per path."""
    files: list[FileDiff] = []
    current: FileDiff | None = None
    old_name: str | None = None
    left = (0, 0)  # old, new lines still expected in the current hunk
    for raw in patch.split("\n"):
        line = raw[:-1] if raw.endswith("\r") and not (left[0] or left[1]) else raw
        if left[0] > 0 or left[1] > 0:
            op, text = (line[:1] or " "), line[1:]
            if op == "\\":  # "\ No newline at end of file"
                continue
            if op not in " -+":
                left = (0, 0)  # a truncated hunk: read the line as a header below
            else:
                assert current is not None
                current.hunks[-1].lines.append((op, text))
                left = (left[0] - (op != "+"), left[1] - (op != "-"))
                continue
        git = _DIFF_GIT.match(line)
        if git:
            current = FileDiff(path=_side(git.group(2)) or _side(git.group(1)) or "", old_path=_side(git.group(1)))
            files.append(current)
            old_name = current.old_path
        elif line.startswith("new file mode") and current is not None:
            current.new_file = True
            current.symlink = current.symlink or line.rstrip().endswith("120000")
        elif line.startswith("new mode") and current is not None:
            current.symlink = current.symlink or line.rstrip().endswith("120000")
        elif line.startswith(("GIT binary patch", "Binary files ")) and current is not None:
            current.binary = True
        elif line.startswith("deleted file mode") and current is not None:
            current.deleted = True
        elif line.startswith(("rename to ", "copy to ")) and current is not None:
            current.path = _side(line.split(" to ", 1)[1]) or current.path
        elif line.startswith("--- "):
            old_name = _side(line[4:])
        elif line.startswith("+++ "):
            new_name = _side(line[4:])
            if current is None or current.hunks:  # a plain diff: each ---/+++ pair is a file
                current = FileDiff(path=new_name or old_name or "", old_path=old_name)
                files.append(current)
            current.new_file = current.new_file or old_name is None
            current.deleted = current.deleted or new_name is None
            current.path = new_name or old_name or current.path
        else:
            match = _HUNK.match(line)
            if match and current is not None:
                old_len = int(match.group(2)) if match.group(2) is not None else 1
                new_len = int(match.group(4)) if match.group(4) is not None else 1
                current.hunks.append(Hunk(int(match.group(1)), int(match.group(3))))
                left = (old_len, new_len)
    merged: dict[str, FileDiff] = {}
    for item in files:
        if item.path in merged:  # the same path in two blocks: one file with all their hunks
            merged[item.path].hunks += item.hunks
            merged[item.path].deleted = item.deleted
            merged[item.path].binary |= item.binary
            merged[item.path].symlink |= item.symlink
        else:
            merged[item.path] = item
    return [f for f in merged.values() if f.path]


def apply_hunks(base: str, diff: FileDiff) -> tuple[str, set[int]] | None:
    """(the file after the patch, the line numbers of its added lines), or None when a hunk's
    old side is not in ``base`` (exactly, at its line or the nearest place after the previous
    hunk): the caller falls back to reading the hunks alone."""
    lines = base.split("\n") if base else []
    out: list[str] = []
    added: set[int] = set()
    pos = 0
    for hunk in diff.hunks:
        old = [t for op, t in hunk.lines if op != "+"]
        at = _find(lines, old, max(hunk.old_start - 1, 0) if old else hunk.old_start, pos)
        if at is None:
            return None
        out += lines[pos:at]
        for op, text in hunk.lines:
            if op != "-":
                out.append(text)
                if op == "+":
                    added.add(len(out))
        pos = at + len(old)
    out += lines[pos:]
    return "\n".join(out), added


def _find(lines: list[str], old: list[str], guess: int, start: int) -> int | None:
    if not old:
        return min(max(guess, start), len(lines))
    n = len(old)
    for delta in range(len(lines) + 1):
        for at in (guess + delta, guess - delta) if delta else (guess,):
            if start <= at <= len(lines) - n and lines[at:at + n] == old:
                return at
    return None
