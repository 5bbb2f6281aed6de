"""The Sandbox protocol and what both backends share: output capping, the command wrapper
that enforces timeouts, and the git scripts (hygiene at start, diff against the base commit)."""

from __future__ import annotations

import re
import shlex
from typing import Protocol, runtime_checkable

from ..errors import PatchTooLarge, SweSrlError
from ..schemas import ExecResult, ResourceUsage

# Where swe-srl keeps its own files inside a sandbox: outside the repository (so never in the
# diff) and out of the agent's usual sight (/tmp, $HOME).
STATE_DIR = "/run/swe-srl"
TOOLS_DIR = "/usr/local/bin"
# Extra seconds the host waits past a command's timeout before it kills the process group itself
# (the in-sandbox `timeout` normally fires first).
KILL_GRACE = 2.0
# A command printing without end (`yes`) is stopped once it has produced this many times the
# cap (and at least RUNAWAY_MIN_BYTES): reading it all until the timeout only burns driver CPU.
RUNAWAY_FACTOR = 200
RUNAWAY_MIN_BYTES = 32 << 20


class SandboxFileNotFound(SweSrlError, FileNotFoundError):
    """read_file / copy_out of a path that does not exist in the sandbox."""


class SandboxFileTooLarge(SweSrlError, ValueError):
    """read_bytes(path, limit=...) of a file past the limit: refused by its size, never read."""


@runtime_checkable
class Sandbox(Protocol):
    """An isolated copy of a task repository where an episode's commands run.

    ``exec`` never raises for a failing or timing-out command (that is an observation); it
    raises InfrastructureError when the sandbox itself is gone or broken. ``usage`` is None
    until ``close`` has read what the sandbox used (CPU, memory peak, lifetime)."""

    base_commit: str
    usage: ResourceUsage | None

    def exec(self, command: str, timeout: float | None = None, *, workdir: str | None = None,
             env: dict | None = None) -> ExecResult: ...

    def write_file(self, path: str, content: str | bytes) -> None: ...

    def read_file(self, path: str) -> str: ...

    def copy_in(self, host_path: str, container_path: str) -> None: ...

    def copy_out(self, container_path: str, host_path: str) -> None: ...

    def diff(self) -> str: ...

    def close(self) -> None: ...

    def __enter__(self) -> Sandbox: ...

    def __exit__(self, *exc: object) -> None: ...


class OutputCapture:
    """Keeps the first and last ``limit // 2`` bytes of a stream and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        room = self.limit // 2 - len(self.head)
        if room > 0:
            self.head += data[:room]
            data = data[room:]
        if data:
            self.tail += data
            keep = self.limit - self.limit // 2
            if len(self.tail) > 2 * keep:  # trim rarely, not on every chunk
                del self.tail[:-keep]

    @property
    def truncated(self) -> bool:
        return self.total > self.limit

    @property
    def runaway(self) -> bool:
        return self.total > max(self.limit * RUNAWAY_FACTOR, RUNAWAY_MIN_BYTES)

    def text(self) -> str:
        if not self.truncated:
            return (bytes(self.head) + bytes(self.tail)).decode("utf-8", errors="replace")
        keep = self.limit - self.limit // 2
        tail = bytes(self.tail[-keep:])
        elided = self.total - len(self.head) - len(tail)
        marker = f"\n\n[... {elided} bytes of output elided: showing the first and last {len(self.head)} ...]\n\n"
        return (bytes(self.head).decode("utf-8", errors="replace") + marker
                + tail.decode("utf-8", errors="replace"))


# sh -c WRAPPER PIDFILE TIMEOUT COMMAND: the command reaches bash as one argv element (no
# quoting games). `timeout` makes itself a process-group leader and, on expiry, SIGKILLs the
# whole group, so background children die too; the pidfile holds that group id for the host's
# own kill when even that did not end the stream.
EXEC_WRAPPER = 'echo $$ > "$0"; exec timeout -s KILL "$1" bash -c "$2" </dev/null 2>&1'


def exec_argv(pidfile: str, timeout: float, command: str) -> list[str]:
    return ["sh", "-c", EXEC_WRAPPER, pidfile, f"{timeout:.3f}", command]


def kill_group_command(pidfile: str) -> str:
    # Shell builtins only (read, kill): it must work when the sandbox cannot fork any more.
    # dash's kill takes no `--`: `kill -KILL -PGID` signals the group.
    return f'read p < {shlex.quote(pidfile)} && kill -KILL -"$p" 2>/dev/null; exit 0'


KEEP_FILE = f"{STATE_DIR}/keep.pid"
# Kill every process but PID 1, its `sleep infinity` child (whose exit would stop the
# container) and this shell: stop them all first so a fork bomb cannot refill the pids freed
# by the kills. Builtins only, for the same reason as above.
RESCUE_COMMAND = (
    f'keep=; read keep < {KEEP_FILE}; '
    'for sig in STOP STOP KILL KILL; do for d in /proc/[0-9]*; do p=${d#/proc/}; '
    'case " 1 $keep $$ " in *" $p "*) ;; *) kill -$sig $p 2>/dev/null;; esac; done; done; exit 0'
)


def is_timeout(exit_code: int | None, elapsed: float, timeout: float) -> bool:
    """`timeout -s KILL` also kills itself with the group, so the status is 137 (or 124)."""
    return exit_code in (124, 137, None) and elapsed >= timeout * 0.98


# Whatever in a repository can hold or name history past the base commit besides refs and
# objects: reflogs, fsck's lost-found, rerere's recorded resolutions, other worktrees, the state
# and messages of git operations (FETCH_HEAD, ORIG_HEAD, COMMIT_EDITMSG, ...), grafts.
_GIT_LEFTOVERS = (".git/logs .git/lost-found .git/rr-cache .git/worktrees .git/sequencer .git/rebase-merge "
                  ".git/rebase-apply .git/info/grafts .git/*_HEAD .git/*MSG .git/AUTO_MERGE .git/MERGE_MODE "
                  ".git/BISECT_*")

# Remotes and every ref but the checked-out branch go (tags, stash, notes, replace refs, and a
# stale packed value of the branch itself), then the object store must hold exactly what HEAD
# reaches. Counting both sides costs one rev-list; only when they differ (or the store borrows
# from alternates, or holds files that are not objects) is the store rebuilt: one pack of HEAD's
# objects replaces it whole, so dangling commits and blobs, loose objects, kept and cruft packs,
# alternates and commit-graphs all go. The index is reset to HEAD first (a staged blob would
# otherwise name an object the new store lacks); the leftovers go last (the reset writes
# ORIG_HEAD). A scrub that cannot finish fails the sandbox's start rather than leave history.
GIT_SCRUB = r"""
for r in $(git remote); do git remote remove "$r"; done
gone=$(git for-each-ref --format='delete %(refname)' | grep -vxF "delete $cur")
[ -z "$gone" ] || printf '%s\n' "$gone" | git update-ref --no-deref --stdin \
  || { echo "git scrub: cannot delete refs"; exit 1; }
[ ! -f .git/packed-refs ] || git pack-refs --all  # drops a stale packed value of the branch
want=$(set -o pipefail; git rev-list --objects HEAD | wc -l) || want=-1
have=0
while read -r key value; do
  case $key in count:|in-pack:) have=$((have + value));; garbage:) [ "$value" = 0 ] || want=-1;; esac
done <<SCRUB_COUNTS
$(git count-objects -v)
SCRUB_COUNTS
if [ "$have" != "$want" ] || [ -s .git/objects/info/alternates ]; then
  ( set -eo pipefail
    git reset -q
    rm -rf .git/objects.scrub; mkdir -p .git/objects.scrub/pack .git/objects.scrub/info
    git rev-list --objects HEAD | git pack-objects -q .git/objects.scrub/pack/pack >/dev/null
    rm -rf .git/objects; mv .git/objects.scrub .git/objects
  ) || { echo "git scrub: cannot rebuild the object store"; exit 1; }
fi
rm -rf """ + _GIT_LEFTOVERS + "\n"


def hygiene_script(workdir: str, mode: str, state_dir: str = STATE_DIR) -> str:
    """Start-of-episode script: state dir, then (``scrub``) strip everything from the repository
    that is not the base commit's history (:data:`GIT_SCRUB`: afterwards the object store holds
    exactly the objects HEAD reaches); prints ``BASE=<sha>`` (empty when no git repo).

    Few processes on purpose (each fork costs tens of ms on a loaded host): a task image with
    one branch, no remotes and no object but the base commit's runs seven git commands and
    rebuilds nothing."""
    state = shlex.quote(state_dir)
    scrub = GIT_SCRUB if mode == "scrub" else ""
    # Test runs leave caches that are not the agent's work; keep them out of the diff (as
    # untracked-only excludes they change nothing for tracked files).
    excludes = "\\n".join(("# swe-srl",) + _DIFF_EXCLUDES)
    return (f"[ -d {state} ] || mkdir -p {state}\n"
            f"read keep < /proc/1/task/1/children 2>/dev/null; echo \"$keep\" > {state}/keep.pid\n"
            f"cd {shlex.quote(workdir)} 2>/dev/null || {{ echo BASE=; exit 0; }}\n"
            "base=$(git rev-parse --verify -q HEAD) || { echo BASE=; exit 0; }\n"
            "cur=$(git symbolic-ref -q HEAD)\n"
            f"{scrub}[ -d .git/info ] || mkdir .git/info\n"
            f"grep -qx '# swe-srl' .git/info/exclude 2>/dev/null || printf '{excludes}\\n' >> .git/info/exclude\n"
            "echo BASE=$base\n")


_DIFF_EXCLUDES = (".pytest_cache/", "__pycache__/", "*.pyc")


def diff_script(base_commit: str, state_dir: str = STATE_DIR) -> str:
    """The working tree (new files included) against the base commit, through a throwaway
    index so the index the agent sees is left as it was."""
    idx = f"{shlex.quote(state_dir)}/diff-index.$$"
    return (f"mkdir -p {shlex.quote(state_dir)}; trap 'rm -f {idx}' EXIT; "
            f"if [ -f .git/index ]; then cp .git/index {idx}; fi; "
            f"GIT_INDEX_FILE={idx} git add -A >/dev/null && "
            f"GIT_INDEX_FILE={idx} git -c core.quotepath=false diff --cached --no-color --no-ext-diff {base_commit}")


def check_patch_size(stat_output: str, limit: int) -> None:
    """Raise :class:`PatchTooLarge` when the ``SIZE=<bytes>`` line a diff command printed
    exceeds ``limit``: the patch is then never read into memory."""
    sizes = re.findall(r"^SIZE=(\d+)$", stat_output, flags=re.M)
    if sizes and int(sizes[-1]) > limit:
        raise PatchTooLarge(int(sizes[-1]), limit)
