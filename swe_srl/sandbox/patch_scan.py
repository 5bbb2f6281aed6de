"""The patch scanner in grading: read the base version of each Python file a patch changes from
the grading container (the repository at the base commit, before anything is applied), then
scan the patch against those texts (:func:`swe_srl.rewards.scanner.scan_patch`, pure).

One exec reads every file (``git cat-file`` of ``HEAD:<path>``, base64 so that any bytes come
back intact through the exec's text output). A file the base lacks, or a read that failed,
leaves the scanner reading that file's hunks alone: never an infrastructure failure of its
own (a container that dies here still is one, raised by the sandbox: no code of the patch has
run yet).
"""

from __future__ import annotations

import base64
import binascii
import shlex

from ..rewards.scanner import python_paths, rejection, scan_patch
from ..schemas import Task

_MARK = "@@swe-srl-base"


def read_base_texts(sandbox, paths: list[str], timeout: float) -> dict[str, str | None]:
    """``path -> text`` at HEAD for each of ``paths`` (None: not in the base commit); paths
    whose read failed are left out (unknown)."""
    if not paths:
        return {}
    lines = []
    for index, path in enumerate(paths):
        obj = shlex.quote(f"HEAD:{path}")
        lines.append(f"if git cat-file -e {obj} 2>/dev/null; then echo '{_MARK} {index} found'; "
                     f"git cat-file blob {obj} | base64 | tr -d '\\n'; echo; else echo '{_MARK} {index} missing'; fi")
    ran = sandbox.exec("\n".join(lines) + "\n", timeout=timeout)
    if ran.exit_code != 0 or ran.timed_out:
        return {}
    texts: dict[str, str | None] = {}
    rows = ran.output.split("\n")
    for number, row in enumerate(rows):
        if not row.startswith(_MARK + " "):
            continue
        _, index, state = row.split(" ")
        path = paths[int(index)]
        if state == "missing":
            texts[path] = None
            continue
        try:
            data = base64.b64decode(rows[number + 1].strip(), validate=True) if number + 1 < len(rows) else b""
        except (binascii.Error, ValueError):
            continue
        texts[path] = data.decode("utf-8", errors="replace")
    return texts


def scan_in_container(sandbox, task: Task, patch: str, timeout: float) -> str | None:
    """``TestReport.rejected`` for a patch the scanner flags (``tampering (<rule>): ...``), else None."""
    paths = python_paths(patch)
    base = read_base_texts(sandbox, paths, timeout) if paths else {}
    return rejection(scan_patch(patch, base, test_files=task.test_files))
