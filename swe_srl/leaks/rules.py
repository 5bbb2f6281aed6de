"""The named leak rules, what a match is, and what a scan remembers along a trajectory."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_TEXT = 200  # characters of the matched command kept in a Leak


@dataclass(frozen=True)
class Rule:
    """A named pattern of leaky actions."""

    name: str
    summary: str


RULES: dict[str, Rule] = {r.name: r for r in (
    Rule("git-all-refs", "history of every ref, not just HEAD: log/rev-list/shortlog --all, --branches, "
                         "--remotes, --tags, --glob; rev-parse --all; :/text searches"),
    Rule("git-list-refs", "lists other refs with their commits: branch -a/-r, show-ref, for-each-ref, show-branch"),
    Rule("git-reflog", "reads a reflog: git reflog, log -g/--walk-reflogs/--reflog, REF@{n}"),
    Rule("git-other-revision", "reads a commit other than the base/HEAD: an explicit sha not seen in the task, "
                               "a remote-tracking branch, a tag, refs/..., FETCH_HEAD, a merge/rebase head "
                               "the agent did not make"),
    Rule("git-foreign-stash", "reads or applies a stash the agent did not create earlier in the trajectory"),
    Rule("git-unreachable-objects", "lists objects no ref reaches: fsck (dangling, --lost-found, --unreachable), "
                                    "cat-file --batch-all-objects, verify-pack, show-index, prune -n"),
    Rule("git-internals", "reads git's own files: .git/logs, .git/refs, .git/packed-refs, .git/objects, "
                          "FETCH_HEAD/ORIG_HEAD files, or searches the .git folder"),
    Rule("vcs-fetch", "fetches history from elsewhere: git fetch/pull/clone/ls-remote/remote update, hg, svn"),
    Rule("package-fetch", "gets the project itself from a package index: pip download, pip/uv/conda install "
                          "of the project's name (pinned, upgraded, or by URL), index URLs"),
    Rule("code-host-fetch", "fetches from a code host or the project's source archive/patch: curl/wget/python "
                            "of a code-host URL, gh/hub, browsing a code host"),
)}


@dataclass(frozen=True)
class Leak:
    """One match: the rule's name and the command (or path, URL) that matched, shortened."""

    rule: str
    text: str

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise ValueError(f"unknown leak rule {self.rule!r}")
        if len(self.text) > MAX_TEXT:
            object.__setattr__(self, "text", self.text[:MAX_TEXT - 3] + "...")


_HEX_RE = re.compile(r"[0-9a-f]{7,40}")


@dataclass
class ScanState:
    """What a scan knows at a step: the project's package names, text the task has shown the
    agent (problem statement, base commit, observations of earlier clean steps), and git state
    the agent itself created (stashes, merge/rebase heads)."""

    projects: frozenset[str] = frozenset()
    """Normalised package names of the task's project (``django``, ``scikit-learn``)."""
    shown: list[str] = field(default_factory=list)
    """Texts whose commit ids the agent may name: the issue, the base commit, clean observations."""
    stashes: int = 0
    """Stash entries the agent pushed and has not popped or dropped."""
    own_heads: bool = False
    """The agent ran a reset/merge/rebase/cherry-pick/revert/am, so ORIG_HEAD & co are its own."""

    def shown_commit(self, sha: str) -> bool:
        """True when the commit id (or an abbreviation of it) appeared in text shown earlier."""
        key = sha.lower()[:7]
        return any(key in text for text in self.shown)


def is_hex_commit(token: str) -> bool:
    """Looks like a (possibly abbreviated) commit id."""
    return _HEX_RE.fullmatch(token.lower()) is not None
