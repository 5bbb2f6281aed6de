"""swe-srl's pytest launcher for grading (runs INSIDE the grading container, any Python >= 3.6).

The harness copies this file in (never on a command line), with the three constants below
filled in, and runs ``<python> <this file> <pytest args>`` in place of ``python -m pytest`` or
``pytest``. Before any code of the repository is imported it:

- deletes itself, so the key exists only in this process's memory;
- imports pytest with the working directory off ``sys.path`` (a ``pytest.py`` in the repo cannot
  stand in for the runner), then puts ``sys.path`` back as ``python -m pytest`` would have it;
- opens the results channel: one line per test report, each signed with HMAC-SHA256 under the
  key, and a last ``final`` line (the session's exit status and the number of lines before it)
  written at the very end of the session. A run that dies, calls ``os._exit`` or is killed
  before that leaves no ``final`` line; a line written by anyone without the key fails its MAC.

At the end of the session it also checks, unless the runner itself lives in the repository
(pytest's own repo), that pytest's reporting functions are the ones it imported and that no
hook implementation comes from a file the patch touched or a file created inside the repo at
run time. Residual risk (in-process code can read this process's memory): code written to find
this module's key, or hooks compiled under the name of a file outside the repository.
"""

import hashlib
import hmac
import json
import os
import sys

KEY = bytes.fromhex("@KEY@")
CHANNEL = "@CHANNEL@"
TOUCHED = json.loads("@TOUCHED@")  # repo-relative paths the model's patch adds or modifies
MODE = "@MODE@"  # "module": the command was `python -m pytest` (cwd first on sys.path)
TRACKED = "@TRACKED@"  # `git ls-tree -r HEAD` of the repo, written before the tests started

try:
    os.unlink(__file__)
except OSError:
    pass

_cwd = os.getcwd()
_saved_path = list(sys.path)
sys.path[:] = [p for p in sys.path if p not in ("", ".") and os.path.abspath(p) != _cwd]
import importlib  # noqa: E402

import pytest  # noqa: E402


def _module(name):
    try:
        return importlib.import_module(name)
    except ImportError:  # an older pytest lays its internals out differently
        return None


_internals = dict((n, _module("_pytest." + n)) for n in ("main", "python", "reports", "runner", "terminal",
                                                           "unittest", "doctest", "skipping"))
sys.path[:] = ([_cwd] if MODE == "module" else []) + _saved_path

_WATCHED = [("runner", None, "call_and_report"), ("runner", None, "runtestprotocol"),
            ("runner", None, "pytest_runtest_makereport"), ("runner", "CallInfo", "from_call"),
            ("reports", "TestReport", "__init__"), ("reports", "TestReport", "from_item_and_call"),
            ("reports", "BaseReport", "passed"), ("reports", "BaseReport", "failed"),
            ("reports", "BaseReport", "skipped"), ("main", None, "pytest_runtestloop"),
            ("python", None, "pytest_pyfunc_call"), ("python", "Function", "runtest"),
            ("unittest", "TestCaseFunction", "runtest"), ("doctest", "DoctestItem", "runtest"),
            ("skipping", None, "pytest_runtest_makereport"),
            ("terminal", "TerminalReporter", "pytest_runtest_logreport")]
# Hooks that decide or carry a test's outcome: an implementation from the model's code is tampering.
_OUTCOME_HOOKS = ("pytest_runtest", "pytest_report", "pytest_pyfunc", "pytest_session", "pytest_collect",
                  "pytest_make_collect", "pytest_itemcollected", "pytest_deselected")


def _lookup(module, cls, name):
    owner = _internals.get(module)
    if owner is not None and cls is not None:
        owner = getattr(owner, cls, None)
    if owner is None:
        return None
    return owner.__dict__.get(name) if isinstance(owner, type) else getattr(owner, name, None)


def _inside(path, root):
    path = os.path.realpath(path)
    return path == root or path.startswith(root + os.sep)


def _base_blobs():
    blobs = {}
    try:
        with open(TRACKED) as fh:
            for line in fh:
                meta, _, path = line.rstrip("\n").partition("\t")
                parts = meta.split()
                if len(parts) == 3:
                    blobs[path] = parts[2]
    except (IOError, OSError):
        pass
    return blobs


def _blob_sha(path):
    with open(path, "rb") as fh:
        data = fh.read()
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


class Guard(object):
    def __init__(self):
        self.base = _base_blobs()  # read before any code of the repository runs
        self.fd = os.open(CHANNEL, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self.lines = 0
        self.root = os.path.realpath(_cwd)
        self.runner_in_repo = _inside(os.path.dirname(pytest.__file__), self.root) or any(
            m is not None and _inside(m.__file__, self.root) for m in _internals.values())
        self.watched = [(w, _lookup(*w)) for w in _WATCHED]
        self.exit = os._exit
        self.touched = set(os.path.realpath(os.path.join(self.root, p)) for p in TOUCHED)

    def emit(self, record):
        body = json.dumps(record, sort_keys=True)
        mac = hmac.new(KEY, body.encode("utf-8"), hashlib.sha256).hexdigest()
        os.write(self.fd, (mac + " " + body + "\n").encode("utf-8"))
        self.lines += 1

    def pytest_runtest_logreport(self, report):
        self.emit({"nodeid": report.nodeid, "when": report.when, "outcome": report.outcome,
                   "xfail": hasattr(report, "wasxfail")})

    def pytest_collectreport(self, report):
        if report.failed:
            self.emit({"nodeid": report.nodeid, "when": "collect", "outcome": "failed", "xfail": False})

    def tampering(self, session):
        if self.runner_in_repo:
            return None
        for where, original in self.watched:
            if _lookup(*where) is not original:
                return "_pytest.%s replaced" % ".".join(p for p in where if p)
        if os._exit is not self.exit:
            return "os._exit replaced"
        hooks = session.config.pluginmanager.hook
        for hook_name in dir(hooks):
            if not hook_name.startswith(_OUTCOME_HOOKS):
                continue
            get_impls = getattr(getattr(hooks, hook_name, None), "get_hookimpls", None)
            for impl in (get_impls() if get_impls is not None else ()):
                code = getattr(getattr(impl, "function", None), "__code__", None)
                if code is None:
                    continue
                problem = self.foreign(os.path.realpath(code.co_filename))
                if problem:
                    return "hook %s in %s, %s" % (hook_name, code.co_filename, problem)
        return None

    def foreign(self, real):
        """Why code from ``real`` is not the base commit's own, or None."""
        if not _inside(real, self.root):
            return None
        if real in self.touched:
            return "a file the patch changed"
        rel = os.path.relpath(real, self.root).replace(os.sep, "/")
        if rel not in self.base or not os.path.isfile(real):
            return "not a file of the base commit"
        if _blob_sha(real) != self.base[rel]:
            return "a file changed while the tests ran"
        return None

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session, exitstatus):
        self.emit({"final": True, "exitstatus": int(exitstatus), "lines": self.lines,
                   "tampered": self.tampering(session)})
        os.close(self.fd)


sys.exit(pytest.main(sys.argv[1:], plugins=[Guard()]))
