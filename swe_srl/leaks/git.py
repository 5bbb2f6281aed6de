"""Leak rules for git commands: history beyond HEAD, other commits, stashes, unreachable
objects, fetching, and reading git's own files.

HEAD's own history is the task's (the base commit and its ancestors): ``git log -3``,
``git show HEAD~2:file``, ``git diff``, ``git blame`` are fine, and so is a commit id the
agent saw earlier in the task (in the issue or in an earlier clean step's output). A bare
name (``git diff main``) is not judged: it may be the task's own branch or a path.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from .rules import Leak, ScanState, is_hex_commit
from .shell import Command

# git's own options before the subcommand; those listed take a separate value.
_GLOBAL_VALUE_OPTIONS = frozenset({"-C", "-c", "--git-dir", "--work-tree", "--namespace", "--exec-path",
                                   "--super-prefix", "--config-env", "--list-cmds"})
# Options that take a separate value (never a revision, except where said), per family of
# subcommands: a flag taken for a value option would hide the revision after it
# (``git diff -b v1.0``), a value option taken for a flag would judge its value.
_HISTORY_VALUES = frozenset({"-n", "--max-count", "-S", "-G", "--grep", "--author", "--committer", "--since",
                             "--until", "--after", "--before", "--format", "--pretty", "--skip", "-L", "-O",
                             "--date", "--diff-filter", "--output", "--encoding", "-U", "--unified"})
_PICK_VALUES = frozenset({"-m", "--mainline", "-s", "--strategy", "-X", "--strategy-option", "--exec", "-x"})
_CHECKOUT_VALUES = frozenset({"-b", "-B", "--orphan", "--conflict"})
_VALUE_OPTIONS = {
    **dict.fromkeys(("log", "show", "diff", "whatchanged", "shortlog", "rev-list", "format-patch", "blame",
                     "annotate", "diff-tree", "range-diff", "difftool", "cherry"), _HISTORY_VALUES),
    **dict.fromkeys(("merge", "cherry-pick", "revert"), _PICK_VALUES | {"--message", "-F", "--file"}),
    "rebase": _PICK_VALUES | {"--onto"},  # --onto names a revision: judged
    "checkout": _CHECKOUT_VALUES,
    "switch": _CHECKOUT_VALUES | {"-c", "-C"},
    "restore": frozenset({"-s", "--source"}),  # the source is a revision: judged
    "grep": frozenset({"-e", "-f", "-A", "-B", "-C", "-m", "--max-count", "--max-depth", "--threads"}),
    "archive": frozenset({"--prefix", "--format", "-o", "--output", "--remote"}),
    **dict.fromkeys(("commit", "tag", "stash", "notes"), frozenset({"-m", "--message", "-F", "--file", "-t",
                                                                  "--template"})),
    **dict.fromkeys(("clone", "fetch", "pull"), frozenset({"--depth", "-o", "--origin", "-b", "--branch"})),
    "branch": frozenset({"-m", "-M", "-c", "-C", "-u", "--set-upstream-to"}),
    "worktree": frozenset({"-b", "-B", "--reason"}),
}
# Subcommands whose positional arguments (before "--") may name revisions.
_REVISION_COMMANDS = frozenset({
    "log", "show", "diff", "whatchanged", "shortlog", "rev-list", "rev-parse", "cherry-pick", "revert",
    "merge", "rebase", "reset", "format-patch", "cat-file", "ls-tree", "archive", "blame", "annotate",
    "range-diff", "difftool", "diff-tree", "name-rev", "checkout", "switch", "grep", "merge-base", "cherry",
    "show-branch", "describe", "bundle", "fast-export", "log-tree", "diff-index"})
# (describe and name-rev are left out: their --all/--tags only choose the names they print.)
_HISTORY_COMMANDS = frozenset({"log", "rev-list", "shortlog", "whatchanged", "rev-parse", "show-branch",
                               "fast-export", "bundle", "show"})
_ALL_REF_OPTIONS = ("--all", "--branches", "--remotes", "--tags", "--glob", "--alternate-refs")
_REFLOG_OPTIONS = frozenset({"-g", "--walk-reflogs", "--reflog"})
_HEAD_NAMES = frozenset({"HEAD", "@", ""})
_OWN_HEADS = frozenset({"ORIG_HEAD", "MERGE_HEAD", "CHERRY_PICK_HEAD", "REBASE_HEAD", "REVERT_HEAD", "AUTO_MERGE"})
_HEAD_MAKERS = frozenset({"reset", "merge", "rebase", "cherry-pick", "revert", "am", "pull"})
_OTHER_REF_PREFIXES = ("origin/", "upstream/", "remotes/", "tags/", "refs/remotes/", "refs/tags/", "refs/pull/",
                       "refs/original/", "refs/notes/", "refs/replace/", "refs/merge-requests/")
_TAG_RE = re.compile(r"v?\d+(?:\.\d+)+(?:[-.+]?[A-Za-z0-9]+)*")
_SUFFIX_RE = re.compile(r"(?:[~^]\d*|\^\{[^}]*\}|@\{[^}]*\})+$")
_INTERNAL_RE = re.compile(r"(?:^|/)\.git/(?:logs|refs|packed-refs|objects|FETCH_HEAD|ORIG_HEAD|lost-found)\b")
_GIT_DIR_RE = re.compile(r"(?:^|/)\.git/?$")
_TREE_READERS = frozenset({"find", "grep", "egrep", "fgrep", "rgrep", "rg", "ag", "ack", "tree", "strings"})


@dataclass(frozen=True)
class GitCall:
    """A git invocation: the subcommand, its options and its positional arguments."""

    command: Command
    sub: str
    options: tuple[str, ...]
    positionals: tuple[str, ...]  # before "--"
    values: tuple[tuple[str, str], ...]  # (option, separate value) pairs


def parse_git(cmd: Command) -> GitCall | None:
    """The GitCall of ``cmd`` (None when it is not git, or names no subcommand)."""
    if cmd.name != "git":
        return None
    argv = list(cmd.argv[1:])
    while argv and argv[0].startswith("-"):
        argv = argv[2:] if argv[0] in _GLOBAL_VALUE_OPTIONS else argv[1:]
    if not argv:
        return None
    options, positionals, values = [], [], []
    value_options = _VALUE_OPTIONS.get(argv[0], frozenset())
    rest = argv[1:]
    i = 0
    while i < len(rest):
        arg = rest[i]
        if arg == "--":
            break
        if arg.startswith("-") and len(arg) > 1:
            options.append(arg)
            if arg in value_options and i + 1 < len(rest):
                values.append((arg, rest[i + 1]))
                i += 1
        else:
            positionals.append(arg)
        i += 1
    return GitCall(cmd, argv[0], tuple(options), tuple(positionals), tuple(values))


def git_leaks(cmd: Command, state: ScanState) -> Iterator[Leak]:
    """Every git leak rule on one command (reading git's files applies to any command)."""
    yield from internals(cmd)
    call = parse_git(cmd)
    if call is None:
        return
    for family in (history_scope, revisions, stash, unreachable_objects, remote_fetch):
        yield from family(call, state)
    if call.sub in _HEAD_MAKERS:
        state.own_heads = True


def _has_option(call: GitCall, *names: str) -> bool:
    return any(opt == n or opt.startswith(n + "=") for opt in call.options for n in names)


def _short_flags(call: GitCall) -> str:
    return "".join(o[1:] for o in call.options if not o.startswith("--"))


def history_scope(call: GitCall, state: ScanState) -> Iterator[Leak]:
    """History of every ref or of the reflog; listings of other refs."""
    text = call.command.text
    if call.sub in _HISTORY_COMMANDS and _has_option(call, *_ALL_REF_OPTIONS):
        yield Leak("git-all-refs", text)
    if call.sub in ("log", "rev-list", "shortlog", "whatchanged", "show") and _REFLOG_OPTIONS & set(call.options):
        yield Leak("git-reflog", text)
    if call.sub == "reflog" and call.positionals[:1] not in (("expire",), ("delete",), ("exists",)):
        yield Leak("git-reflog", text)
    listing = (call.sub == "branch" and (_has_option(call, "--all", "--remotes") or set("ar") & set(_short_flags(call)))
               or call.sub in ("show-ref", "for-each-ref", "show-branch"))
    if listing:
        yield Leak("git-list-refs", text)


def _revision_arguments(call: GitCall) -> list[str]:
    if call.sub == "diff" and "--no-index" in call.options:
        return []
    if call.sub in ("restore", "rebase"):
        named = [v for o, v in call.values if o in ("-s", "--source", "--onto")]
        named += [o.split("=", 1)[1] for o in call.options if o.startswith(("--source=", "--onto="))]
        return named + (list(call.positionals) if call.sub == "rebase" else [])
    if call.sub == "worktree" and call.positionals[:1] == ("add",):
        return list(call.positionals[2:])
    if call.sub == "branch" and not set("dDmMcC") & set(_short_flags(call)):
        return list(call.positionals[1:])
    if call.sub == "grep" and not _has_option(call, "-e", "-f"):
        return list(call.positionals[1:])  # the first is the pattern
    return list(call.positionals) if call.sub in _REVISION_COMMANDS else []


def _names(revision: str) -> Iterator[tuple[str, str]]:
    """(name, selector suffix) of each side of a revision expression (A..B, ^A, A:path)."""
    expr = revision.split(":", 1)[0] if not revision.startswith(":") else revision
    for side in re.split(r"\.{2,3}", expr):
        side = side.lstrip("^")
        match = _SUFFIX_RE.search(side)
        yield (side[:match.start()], match.group(0)) if match else (side, "")


def classify_revision(revision: str, state: ScanState) -> str | None:
    """The rule a revision argument breaks, or None for HEAD's history, paths and bare names."""
    if revision.startswith(":/"):
        return "git-all-refs"  # the youngest commit matching the text, reachable from ANY ref
    for name, suffix in _names(revision):
        reflog = re.search(r"@\{([^}]*)\}", suffix)
        if name in ("stash", "refs/stash"):
            index = int(reflog.group(1)) if reflog and reflog.group(1).isdigit() else 0
            if index >= state.stashes:
                return "git-foreign-stash"
            continue
        if reflog and reflog.group(1).lower() in ("u", "upstream", "push"):
            return "git-other-revision"
        if reflog:
            return "git-reflog"
        if name in _HEAD_NAMES:
            continue
        if name == "FETCH_HEAD" or (name in _OWN_HEADS and not state.own_heads):
            return "git-other-revision"
        if name in ("origin", "upstream") or name.startswith(_OTHER_REF_PREFIXES) or _TAG_RE.fullmatch(name):
            return "git-other-revision"
        if is_hex_commit(name) and not state.shown_commit(name):
            return "git-other-revision"
    return None


def revisions(call: GitCall, state: ScanState) -> Iterator[Leak]:
    """Revision arguments naming something other than the base and its history."""
    if call.sub == "stash":
        return
    for revision in _revision_arguments(call):
        rule = classify_revision(revision, state)
        if rule is not None:
            yield Leak(rule, call.command.text)
            return


def stash(call: GitCall, state: ScanState) -> Iterator[Leak]:
    """``git stash`` bookkeeping: the agent's own push/pop is fine; reading a stash it did not
    push (planted in the repository before the task) is a leak."""
    if call.sub != "stash":
        return
    action = call.positionals[0] if call.positionals else "push"
    if action in ("push", "save"):
        state.stashes += 1
    elif action in ("pop", "apply", "show", "branch", "drop"):
        refs = [p for p in call.positionals[1:] if p.startswith(("stash", "refs/stash")) or p.isdigit()]
        ref = refs[0] if refs else "stash@{0}"
        ref = f"stash@{{{ref}}}" if ref.isdigit() else ref
        if action != "drop" and classify_revision(ref, state) == "git-foreign-stash":
            yield Leak("git-foreign-stash", call.command.text)
        if action in ("pop", "drop"):
            state.stashes = max(0, state.stashes - 1)
    elif action == "clear":
        state.stashes = 0


def unreachable_objects(call: GitCall, state: ScanState) -> Iterator[Leak]:
    """Objects that no ref reaches: where a fix removed from history survives."""
    sub, text = call.sub, call.command.text
    dangling_listed = sub == "fsck" and (
        _has_option(call, "--lost-found", "--unreachable", "--dangling") or "--no-dangling" not in call.options)
    if (dangling_listed or sub in ("verify-pack", "show-index", "lost-found")
            or (sub == "cat-file" and _has_option(call, "--batch-all-objects"))
            or (sub == "prune" and ("-n" in call.options or _has_option(call, "--dry-run")))):
        yield Leak("git-unreachable-objects", text)


def remote_fetch(call: GitCall, state: ScanState) -> Iterator[Leak]:
    """History fetched from another repository (the project's upstream, a mirror, a bundle)."""
    sub, first = call.sub, call.positionals[:1]
    fetching = (sub in ("fetch", "pull", "clone", "ls-remote", "fetch-pack")
                or (sub == "remote" and (first == ("update",) or (first == ("show",) and "-n" not in call.options)
                                         or (first == ("add",) and _has_option(call, "-f", "--fetch"))))
                or (sub == "submodule" and "--remote" in call.options)
                or (sub == "archive" and _has_option(call, "--remote")))
    if fetching:
        yield Leak("vcs-fetch", call.command.text)


def internals(cmd: Command) -> Iterator[Leak]:
    """Reading git's own files (reflogs, refs, packs) or searching the .git folder."""
    if cmd.name == "git":
        return
    args = cmd.argv[1:]
    if any(_INTERNAL_RE.search(a) for a in args) or (
            cmd.name in _TREE_READERS or (cmd.name == "ls" and any(a.startswith("-") and "R" in a for a in args))
    ) and any(_GIT_DIR_RE.search(a) for a in args):
        yield Leak("git-internals", cmd.text)


def internal_path(path: str) -> bool:
    """An editor/viewer path inside git's own files (reflogs, refs, objects)."""
    return ".git" in path and bool(_INTERNAL_RE.search(path) or _GIT_DIR_RE.search(path))
