"""swe-srl's pytest launcher for grading (runs INSIDE the grading container, Python >= 3.6; the
runtime defences need 3.8's audit hooks).

The harness copies this file and a root-only config file in (never on a command line) and runs
``<python> <this file> <pytest args>`` in place of ``python -m pytest`` / ``pytest``, as root.
Code under test runs in this process, so nothing it can reach is trusted. Before any code of the
repository is imported the launcher:

- reads the config (the channel key among it) and deletes it and itself: the key is never a
  constant, a global or an attribute; it lives only in the closure of an audit hook;
- opens the results channel (a root-only file) and installs that audit hook
  (``sys.addaudithook``, which cannot be removed). The hook is the only writer of the channel:
  records reach it as ``sys.audit("swe-srl.*")`` events from this file's plugin, and it writes
  one only when every frame on the calling stack is the runner's own code (stdlib, the
  installed packages, this file) in the main thread; anything else is recorded as tampering.
  It also denies to code from the repository (and code compiled or written at run time) frame
  walking, gc introspection, ctypes, tracing hooks, compiling code under an existing file's
  name, function code / test module class swaps, writing .pyc/.pth files and /proc memory;
- drops to an unprivileged user (``nobody``) when it runs as root and the image has one, so the
  tests cannot open the channel, the config or pytest's installed files, nor signal the harness.

Per test it records the fingerprint of the test function that pytest is about to call (its
code object, hashed the way ``fingerprint.py`` hashes the test file compiled outside this
process), whether that call returned, and checks that pytest's internals, the hook
implementations and the item's class are those it saw before the repository ran. The grader
compares the fingerprints against the ones computed outside; see ``swe_srl/rewards/facts.py``.
"""

import json
import os
import sys

CONFIG = "@CONFIG@"
_audit = None  # sys.audit, or on Python < 3.8 the hook itself


def _main():
    with open(CONFIG, "rb") as fh:
        cfg = json.loads(fh.read().decode("utf-8"))
    for path in (CONFIG, __file__):
        try:
            os.unlink(path)
        except OSError:
            pass
    key = bytes.fromhex(cfg.pop("key"))
    fd = os.open(cfg["channel"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        with open(cfg["reference"]) as fh:
            reference = json.load(fh)
    except (IOError, OSError, ValueError):
        reference = {}
    module_code = sys._getframe(1).f_code
    hook_file = os.path.join(os.path.dirname(os.path.abspath(__file__)), "guard_hook.py")
    sys.path.insert(0, os.path.dirname(hook_file))
    try:
        from guard_hook import install  # the harness puts it beside this file
    finally:
        del sys.path[0]
        sys.modules.pop("guard_hook", None)
        try:
            os.unlink(hook_file)
        except OSError:
            pass
    global _audit
    direct = install(key, fd, cfg, reference, module_code, _main.__code__, _Guard)
    _audit = sys.audit if direct is None else (lambda event, *args: direct(event, args))
    del key, install
    user = _drop_privileges(cfg)
    cwd = os.getcwd()
    saved = list(sys.path)
    sys.path[:] = [p for p in sys.path if p not in ("", ".") and os.path.abspath(p) != cwd]
    import importlib

    import pytest
    for name in ("main", "python", "reports", "runner", "terminal", "unittest", "doctest", "skipping",
                 "fixtures", "nodes", "outcomes", "capture", "config", "warnings", "assertion.rewrite"):
        try:
            importlib.import_module("_pytest." + name)
        except ImportError:  # an older pytest lays its internals out differently
            pass
    _audit("swe-srl.ready", user)
    sys.path[:] = ([cwd] if cfg.get("mode") == "module" else []) + saved
    guard = _Guard()
    for name in ("pytest_load_initial_conftests", "pytest_runtest_call", "pytest_runtest_logreport"):
        pytest.hookimpl(tryfirst=True, hookwrapper=name == "pytest_runtest_call")(getattr(_Guard, name))
    pytest.hookimpl(trylast=True)(_Guard.pytest_sessionfinish)
    return pytest.main(sys.argv[1:], plugins=[guard])


def _drop_privileges(cfg):
    """Become ``cfg["user"]`` when running as root and the image has that user; else stay."""
    name = cfg.get("user")
    if not name or not hasattr(os, "getuid") or os.getuid() != 0:
        return "root" if hasattr(os, "getuid") and os.getuid() == 0 else "unprivileged"
    try:
        import pwd
        entry = pwd.getpwnam(name)
    except (ImportError, KeyError):
        return "root"
    home = cfg.get("home")
    if home:
        os.environ["HOME"] = home
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    return name


class _Guard(object):
    """pytest plugin: hands what pytest does to the audit hook; holds nothing worth taking."""

    def pytest_load_initial_conftests(self, early_config):
        _audit("swe-srl.configure", early_config)

    def pytest_runtest_call(self, item):
        _audit("swe-srl.call", item)
        outcome = yield
        _audit("swe-srl.called", item, getattr(outcome, "excinfo", None) is None)

    def pytest_runtest_logreport(self, report):
        _audit("swe-srl.report", report)

    def pytest_collectreport(self, report):
        if report.failed:
            _audit("swe-srl.report", report)

    def pytest_sessionfinish(self, session, exitstatus):
        _audit("swe-srl.final", session, int(exitstatus))


sys.exit(_main())
