"""Tools an agent calls inside a sandbox, and :func:`run_tool` which executes one Action.

``bash`` runs its command; ``str_replace_editor`` runs the editor script shipped in this
folder (copied into every DockerSandbox as /usr/local/bin/str_replace_editor) with its
arguments as base64 JSON, so nothing the model wrote is interpolated by a shell; ``submit``
returns the sandbox's diff. A call the model got wrong (unknown tool, missing argument) is an
ordinary observation with a non-zero exit code, never an exception.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...actions import is_submit
from ...schemas import Action, ExecResult

if TYPE_CHECKING:
    from ..base import Sandbox

TOOLS_SOURCE = Path(__file__).resolve().parent
EDITOR_SCRIPT = TOOLS_SOURCE / "str_replace_editor.py"
EDITOR_NAME = "str_replace_editor"
KNOWN_TOOLS = ("bash", EDITOR_NAME, "submit")
# A base64 argument past this goes through a file instead: Linux caps one argv string at 128 KiB.
_MAX_INLINE_ARG = 64 * 1024
EXIT_BAD_CALL = 2
EXIT_UNKNOWN_TOOL = 127


@lru_cache(maxsize=1)
def tools_archive() -> bytes:
    """A tar, to extract at ``/``, holding the tools under usr/local/bin and swe-srl's state dir."""
    buf = io.BytesIO()
    now = int(time.time())
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for folder in ("run/swe-srl", "run/swe-srl/editor"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, now
            tar.addfile(info)
        data = EDITOR_SCRIPT.read_bytes()
        info = tarfile.TarInfo(f"usr/local/bin/{EDITOR_NAME}")
        info.size, info.mode, info.mtime = len(data), 0o755, now
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _bad_call(message: str, code: int = EXIT_BAD_CALL) -> ExecResult:
    return ExecResult(output=message, exit_code=code)


def _editor_command(sandbox: Sandbox, arguments: dict[str, Any]) -> str:
    payload = json.dumps(arguments, ensure_ascii=False).encode("utf-8", "surrogateescape")
    encoded = base64.b64encode(payload).decode()
    if len(encoded) <= _MAX_INLINE_ARG:
        return f"{EDITOR_NAME} --b64 {encoded}"  # base64 holds no shell metacharacters
    args_file = f"/run/swe-srl/editor-args-{time.monotonic_ns()}.json"
    sandbox.write_file(args_file, payload)
    return f"{EDITOR_NAME} --json-file {args_file}; rm -f {args_file}"


def run_tool(sandbox: Sandbox, action: Action, timeout: float | None = None) -> ExecResult:
    """Execute one agent Action in ``sandbox`` and return the observation as an ExecResult.

    Raises only InfrastructureError (from the sandbox); the model's mistakes come back as
    results with a helpful message."""
    if is_submit(action):
        start = time.monotonic()
        return ExecResult(output=sandbox.diff(), exit_code=0, duration=time.monotonic() - start)
    if action.tool == "bash":
        command = action.arguments.get("command")
        if not isinstance(command, str) or not command.strip():
            return _bad_call("The bash tool needs a non-empty `command` argument.")
        return sandbox.exec(command, timeout)
    if action.tool == EDITOR_NAME:
        return sandbox.exec(_editor_command(sandbox, dict(action.arguments)), timeout)
    return _bad_call(f"Unknown tool {action.tool!r}. Available tools: {', '.join(KNOWN_TOOLS)}.",
                     EXIT_UNKNOWN_TOOL)
