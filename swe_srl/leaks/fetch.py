"""Leak rules for getting the project from outside the task: a package index, a code host,
another version-control checkout.

The project's own package names come from the task id (``owner__repo-123`` -> ``repo``) and
the trajectory's ``repo`` metadata, normalised as package indexes do (``Scikit_Learn`` ->
``scikit-learn``). Installing other packages is fine (``pip install pytest-mock``), and so is
installing the checkout itself (``pip install -e .``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from urllib.parse import urlsplit

from .rules import Leak, ScanState
from .shell import URL_RE, Command

# Hosts of source code (never a package registry: those are recognised by their URL paths).
CODE_HOSTS = ("github.com", "githubusercontent.com", "gitlab.com", "bitbucket.org", "codeberg.org",
              "sourceforge.net", "gitee.com")
_FETCHERS = frozenset({"curl", "wget", "http", "https", "xh", "aria2c", "lynx", "links", "elinks", "w3m", "fetch"})
_PIP_RE = re.compile(r"pip[\d.]*")
_PIP_GLOBAL_VALUE_OPTIONS = frozenset({"--proxy", "--log", "--cache-dir", "--timeout", "--retries",
                                       "--exists-action", "--trusted-host", "--cert", "--client-cert", "--python"})
_PIP_VALUE_OPTIONS = _PIP_GLOBAL_VALUE_OPTIONS | frozenset({
    "-r", "--requirement", "-c", "--constraint", "-t", "--target", "-i", "--index-url", "--extra-index-url",
    "-f", "--find-links", "--src", "--root", "--prefix", "--upgrade-strategy", "--platform", "--python-version",
    "--implementation", "--abi", "--only-binary", "--no-binary", "--progress-bar", "-C", "--config-settings",
    "--global-option", "--install-option", "--report", "-d", "--dest", "--channel"})
# Options that make an install of an already installed package fetch it again.
_FETCHING_PIP_OPTIONS = frozenset({"-U", "--upgrade", "--force-reinstall", "-I", "--ignore-installed", "--pre"})
_VERSION_SPEC_RE = re.compile(r"\s*(?:==|>=|<=|~=|!=|===|=|<|>|@)")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_URL_LIKE_RE = re.compile(r"^(?:[a-z][a-z0-9+.-]*://|git\+|hg\+|svn\+|bzr\+)", re.IGNORECASE)
_HOSTISH_RE = re.compile(r"^[\w-]+(?:\.[\w-]+)+/")
_INDEX_PATH_RE = re.compile(r"/(?:simple|pypi)/[^/]+|/packages/.+\.(?:whl|tar\.gz|tgz|zip|tar\.bz2|egg)$")
_SOURCE_SUFFIXES = (".tar.gz", ".tgz", ".zip", ".whl", ".tar.bz2", ".patch", ".diff")
_TASK_NUMBER_RE = re.compile(r"(?:[-_#.]\d+)+$")


def normalise_name(name: str) -> str:
    """A package name as package indexes compare them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def project_names(task_id: str, repo: str | None = None) -> frozenset[str]:
    """The project's likely package names, from ``owner__repo-123`` / ``owner/repo#5`` task ids
    and an ``owner/repo`` string."""
    names = set()
    for source in (repo or "", task_id):
        tail = re.split(r"__|/", source.strip())[-1]
        tail = _TASK_NUMBER_RE.sub("", tail) if source is task_id else tail
        if len(tail) >= 2:
            names.add(normalise_name(tail))
    return frozenset(names)


def _stem(word: str) -> str:
    """``Django-4.0-py3-none-any.whl`` / ``django.git`` -> ``Django`` / ``django``."""
    word = re.sub(r"\.(?:git|tar\.gz|tgz|zip|whl|tar\.bz2|egg|patch|diff)$", "", word)
    return re.split(r"[-_]v?\d", word, maxsplit=1)[0]


def _names_project(text: str, projects: Iterable[str]) -> bool:
    words = [w for w in re.split(r"[/@#?=&:]+", text) if w]
    names = {normalise_name(w) for w in words} | {normalise_name(_stem(w)) for w in words}
    return bool(names & set(projects))


def url_rule(url: str, projects: Iterable[str]) -> str | None:
    """The rule a fetched URL breaks: a code host, a package index's API or files, or an
    archive/patch named after the project; None for anything else (docs, localhost)."""
    text = url if "://" in url else "//" + url
    try:
        parts = urlsplit(text)
        host = (parts.hostname or "").lower()
    except ValueError:
        return None
    if any(host == h or host.endswith("." + h) for h in CODE_HOSTS):
        return "code-host-fetch"
    if _INDEX_PATH_RE.search(parts.path):
        return "package-fetch"
    if parts.path.lower().endswith(_SOURCE_SUFFIXES) and _names_project(parts.path, projects):
        return "code-host-fetch"
    return None


def _looks_like_url(arg: str) -> bool:
    return bool(_URL_LIKE_RE.match(arg) or _HOSTISH_RE.match(arg))


def fetch_leaks(cmd: Command, state: ScanState) -> Iterator[Leak]:
    """Every fetch rule on one command."""
    for family in (package_install, url_fetch, other_vcs):
        yield from family(cmd, state)


def _pip_subcommand(cmd: Command) -> tuple[str, list[str]] | None:
    argv = list(cmd.argv)
    if cmd.name == "uv" and argv[1:2] == ["pip"]:
        argv = argv[1:]
    elif cmd.name in ("conda", "mamba", "micromamba"):
        return (argv[1], argv[2:]) if len(argv) > 1 else None
    elif cmd.name == "easy_install":
        return "install", argv[1:]
    elif not _PIP_RE.fullmatch(cmd.name):
        return None
    i = 1
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] in _PIP_GLOBAL_VALUE_OPTIONS else 1
    return (argv[i], argv[i + 1:]) if i < len(argv) else None


def package_install(cmd: Command, state: ScanState) -> Iterator[Leak]:
    """``pip download`` of anything; installing the project from an index or by URL. A plain
    ``pip install <project>`` is left alone: the task's environment has the project installed
    (from the checkout), so it does nothing unless pinned, upgraded or forced."""
    found = _pip_subcommand(cmd)
    if found is None:
        return
    sub, args = found
    if sub == "download":
        yield Leak("package-fetch", cmd.text)
        return
    if sub != "install":
        return
    i = 0
    while i < len(args):
        arg = args[i]
        if arg in _PIP_VALUE_OPTIONS or arg in ("-e", "--editable"):
            target = args[i + 1] if i + 1 < len(args) else ""
            if arg in ("-e", "--editable") and _looks_like_url(target) and _names_project(target, state.projects):
                yield Leak("package-fetch", cmd.text)
                return
            i += 2
            continue
        forced = bool(_FETCHING_PIP_OPTIONS & set(args))
        if not arg.startswith("-") and _requirement_fetches_project(arg, state.projects, forced):
            yield Leak("package-fetch", cmd.text)
            return
        i += 1


def _requirement_fetches_project(requirement: str, projects: frozenset[str], forced: bool) -> bool:
    if _looks_like_url(requirement):
        return _names_project(requirement, projects) or url_rule(requirement, projects) == "package-fetch"
    if requirement.startswith((".", "/", "~")) or ("@" not in requirement
                                                   and requirement.endswith((".whl", ".tar.gz", ".zip"))):
        return False  # a local checkout or file
    match = _NAME_RE.match(requirement)
    if not match or normalise_name(match.group(0)) not in projects:
        return False
    rest = re.sub(r"^\[[^\]]*\]", "", requirement[match.end():])  # extras
    return forced or _VERSION_SPEC_RE.match(rest) is not None


def url_fetch(cmd: Command, state: ScanState) -> Iterator[Leak]:
    """curl/wget-style downloads from a code host or package index; the gh/hub clients."""
    if cmd.name in ("gh", "hub") and cmd.argv[1:2] not in (["auth"], ["config"], ["help"], ["--help"], []):
        yield Leak("code-host-fetch", cmd.text)
        return
    if cmd.name not in _FETCHERS:
        return
    for arg in cmd.argv[1:]:
        rule = url_rule(arg, state.projects) if _looks_like_url(arg) else None
        if rule is not None:
            yield Leak(rule, cmd.text)
            return


def other_vcs(cmd: Command, state: ScanState) -> Iterator[Leak]:
    """Mercurial and Subversion checkouts of another repository."""
    sub = cmd.argv[1] if len(cmd.argv) > 1 else ""
    if (cmd.name == "hg" and sub in ("clone", "pull", "incoming", "in")) or (
            cmd.name == "svn" and sub in ("checkout", "co", "export", "cat", "update", "up")):
        yield Leak("vcs-fetch", cmd.text)


def url_leaks(texts: Iterable[str], state: ScanState) -> Iterator[Leak]:
    """URLs a non-shell tool opens (a browser, a fetch tool)."""
    for text in texts:
        for url in URL_RE.findall(text):
            rule = url_rule(url, state.projects)
            if rule is not None:
                yield Leak(rule, url)
