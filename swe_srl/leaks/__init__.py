"""Leaky-trajectory detection: expert steps that read the fix from outside the task.

An expert that runs ``git log --all``, shows a commit from the future, fetches the project's
next release or browses its pull request has not solved the task, and a policy trained on
that step learns to cheat. :func:`scan_trajectory` walks a trajectory's actions in order and
returns, per step, the :class:`Leak` matches of the named :data:`RULES`; it is pure (no I/O)
and sees through shell syntax (``cd x && git -C . --no-pager log --all | head``, subshells,
quoting, ``bash -c``, here-documents, Python ``subprocess``/IPython ``!`` lines).

What counts as the task: the base commit and its history (HEAD), commit ids the task showed
the agent (the issue, earlier clean observations), and git state the agent made itself. In
particular ``git stash`` then ``git stash pop`` of the agent's own edits is fine, while a
``stash pop/apply/show`` or ``stash@{n}`` with no matching earlier push in the same
trajectory reads a stash that was in the repository before the task: a leak. A bare ref name
(``git diff main``) is not judged (it may be the task's branch, or a path).
"""

from __future__ import annotations

from collections.abc import Iterator

from ..schemas import Action, Trajectory
from .fetch import fetch_leaks, project_names, url_leaks
from .git import git_leaks, internal_path
from .rules import RULES, Leak, Rule, ScanState
from .shell import Command, commands, ipython_commands

__all__ = ["RULES", "Leak", "Rule", "ScanState", "project_names", "scan_action", "scan_command",
           "scan_trajectory"]

# Tools that read files by path (SWE-agent ACI and the editor tool) and the arguments that name them.
_PATH_TOOLS = {"str_replace_editor": ("path",), "open": ("path",), "find_file": ("dir",),
               "search_dir": ("dir",), "search_file": ("file",)}
# Tools whose arguments are file content or navigation, never a command or a URL to open.
_INERT_TOOLS = frozenset({"submit", "finish", "edit", "insert", "create", "llm_edit", "goto", "scroll_up",
                          "scroll_down", "think"})
# Every rule needs one of these in the code (quotes and backslashes removed first, so g'i't
# still shows): code without any is not lexed, which keeps the scan cheap. Plain substring
# tests (a short one also matching inside a longer word only costs a lexing).
_TRIGGERS = ("git", "pip", "conda", "mamba", "easy_install", "uv", "curl", "wget", "http", "://", "xh", "aria2c",
             "lynx", "links", "w3m", "fetch", "gh", "hub", "hg", "svn")


def _may_leak(code: str) -> bool:
    code = code.replace("'", "").replace('"', "").replace("\\", "")
    return any(map(code.__contains__, _TRIGGERS))


def _command_leaks(cmds: list[Command], state: ScanState) -> Iterator[Leak]:
    for cmd in cmds:
        yield from git_leaks(cmd, state)
        yield from fetch_leaks(cmd, state)


def scan_action(action: Action, state: ScanState) -> tuple[Leak, ...]:
    """The leaks of one action (each rule/text once), updating ``state`` (stashes, heads)."""
    args = action.arguments
    if action.tool in ("bash", "ipython"):
        code = str(args.get("command" if action.tool == "bash" else "code", ""))
        if not _may_leak(code):
            return ()
        found = _command_leaks(commands(code) if action.tool == "bash" else ipython_commands(code), state)
    elif action.tool in _PATH_TOOLS:
        paths = [str(args[k]) for k in _PATH_TOOLS[action.tool] if isinstance(args.get(k), str)]
        found = (Leak("git-internals", p) for p in paths if internal_path(p))
    elif action.tool in _INERT_TOOLS:
        return ()
    else:  # a browser, a fetch tool, an unknown tool: the URLs it is asked to open
        found = url_leaks([v for v in args.values() if isinstance(v, str)], state)
    return tuple(dict.fromkeys(found))


def scan_command(command: str, state: ScanState | None = None) -> tuple[Leak, ...]:
    """The leaks of one bash command (a fresh state unless one is given)."""
    return scan_action(Action(tool="bash", arguments={"command": command}), state or ScanState())


def trajectory_state(traj: Trajectory) -> ScanState:
    """The state a scan of ``traj`` starts from: its project names, issue and base commit."""
    meta = traj.metadata or {}
    repo = meta.get("repo") if isinstance(meta.get("repo"), str) else None
    shown = [traj.problem_statement] + [str(meta[k]) for k in ("base_commit",) if meta.get(k)]
    return ScanState(projects=project_names(traj.task_id, repo), shown=shown)


def scan_trajectory(traj: Trajectory) -> tuple[tuple[Leak, ...], ...]:
    """Per step of ``traj``, the leaks of its action (empty tuples for clean steps). A clean
    step's observation joins what the task has shown, so a commit id it printed
    (``git log -3``) may be named later."""
    state = trajectory_state(traj)
    out = []
    for step in traj.steps:
        leaks = scan_action(step.action, state)
        if not leaks and step.observation:
            state.shown.append(step.observation)
        out.append(leaks)
    return tuple(out)
