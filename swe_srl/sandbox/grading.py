"""Test verification: grade a patch by running a task's tests in a FRESH container of its image.

    screen the patch (size, conftest.py, sitecustomize, .pth: rejected without a container)
    -> fresh container -> (pytest) check that the runner starts, at the base commit -> apply
    the patch (git apply, fallback patch --fuzz) -> reject modules that shadow the test runner
    -> put pytest's config files and the test files back to the base commit -> apply the test
    patch -> run the tests (own exec, own timeout) -> statuses

The patches and, for pytest, swe-srl's launcher (``guard/run_pytest.py`` with its audit hook
``guard/guard_hook.py`` and a root-only config holding the channel key) go in by archive copy:
nothing secret is on a command line. Every form of test command is parsed
(:mod:`.testcmd`): pytest is guarded, or the task refused as ungradable, never run unguarded
with a junit file the tests could write. Before the tests, a clean interpreter fingerprints the
test files as the task ships them (``guard/fingerprint.py``; printed before the tests start,
where they cannot change it). The tests run as an unprivileged user; the launcher's audit hook
is the only writer of the HMAC-signed results channel and denies the code under test the
introspection that would reach it. Grading takes statuses from that channel (the log can only
make a test worse), rejects it when forged, cut short, flooded or reporting tampering, and then
checks facts from outside the process (:mod:`swe_srl.rewards.facts`): the expected tests ran,
as the test file's own functions, and skip/xfail only where the file marks it. The pure rules
are in :mod:`swe_srl.rewards.tamper` and :mod:`swe_srl.rewards.testlog`.

Whose failure: a patch that does not apply, a rejected patch, tests that hang, crash or kill
their container: the model's (not resolved, ``TestReport.rejected`` says why). A failure
before the patch's code can run (image missing, container create/start, a test runner that
cannot start at the base commit, applying the task's own test patch) or the whole grade past
``harness_timeout``: ``TestReport.infra_error``, nothing is known about the patch, rewards
built on it are None. A guarded run that exits 126/127 is the patch's doing (its runner was
seen to start): only an unguarded one counts as a command that could not start.
"""

from __future__ import annotations

import json
import posixpath
import secrets
import shlex
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from ..errors import ConfigError, DiskLimitExceeded, InfrastructureError, SandboxDied
from ..rewards.facts import Reference, check_facts
from ..rewards.tamper import config_files_to_reset, patch_paths, read_channel, runner_shadows, screen_patch
from ..rewards.testlog import build_report, merge_statuses, parse_junit_xml, parse_test_log, worse
from ..schemas import Task, TestReport
from ..tasks import task_test_command
from . import open_sandbox
from .base import SandboxFileTooLarge
from .config import SandboxConfig, check_size
from .images.source import ensure_image
from .patch_scan import read_base_texts, scan_in_container
from .testcmd import PytestRun, Ungradable, find_pytest_run
from .toxcmd import expand_tox, needs_tox_ini

# Exit codes of the apply script (grading steps run before any code of the patch does).
_MODEL_PATCH_FAILED, _TEST_PATCH_FAILED, _RUNNER_SHADOWED, _RUNNER_MISSING, _NO_REFERENCE = 10, 11, 12, 13, 14
_SCRATCH_ROOT = "/run/swe-srl"  # the sandbox's state dir: exists, outside the repository
_LOG_LIMIT = 64 * 1024 * 1024
_GUARD_DIR = Path(__file__).with_name("guard")
KILLED_CONTAINER = "tests killed the container"
DISK_LIMIT = "tests wrote past the disk budget"


@dataclass(frozen=True)
class GradingConfig:
    """Limits of one grading run.

    ``test_timeout``: seconds the test command may run; past it the tests count as failed
    (a patch that hangs the tests is the model's failure) unless ``on_test_timeout="infra"``.
    ``harness_timeout``: seconds for the whole grade; past it the report is an infra_error.
    ``junit``: for pytest tasks, also have pytest write a junit xml and cross-check the log.
    ``mem_limit`` / ``cpus``: of the grading container. ``log_tail_chars``: log kept in the report.
    ``max_patch_bytes``: a larger patch is rejected (``patch too large``) and never stored whole.
    ``disk_limit``: what the tests may write in the grading container (past it: rejected).
    ``guard``: run pytest commands through swe-srl's launcher and its signed results channel
    (off only to compare with an unguarded harness).
    ``scan``: reject a patch whose Python tampers with the test runner (:mod:`swe_srl.rewards.scanner`).
    ``test_user``: the user the tests run as when the image has it (None: the image's own user).
    ``max_channel_bytes``: a larger results channel is rejected unread (grader memory stays flat).
    """

    test_timeout: float = 600.0
    harness_timeout: float = 1800.0
    on_test_timeout: Literal["fail", "infra"] = "fail"
    junit: bool = True
    mem_limit: str = "4g"
    cpus: float = 1.0
    log_tail_chars: int = 4000
    max_patch_bytes: int = 2_000_000
    disk_limit: str | None = "4g"
    guard: bool = True
    scan: bool = True
    test_user: str | None = "nobody"
    max_channel_bytes: int = 32 * 2**20

    def __post_init__(self) -> None:
        check_size("grading disk_limit", self.disk_limit)
        if self.max_patch_bytes < 1024:
            raise ConfigError(f"grading max_patch_bytes must be >= 1024, got {self.max_patch_bytes}")
        if not (self.test_timeout > 0 and self.harness_timeout > 0):
            raise ConfigError("grading test_timeout and harness_timeout must be > 0")
        if self.max_channel_bytes < 4096:
            raise ConfigError(f"grading max_channel_bytes must be >= 4096, got {self.max_channel_bytes}")
        if self.test_user is not None and not str(self.test_user).replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"grading test_user must be a user name, got {self.test_user!r}")
        if self.on_test_timeout not in ("fail", "infra"):
            raise ConfigError(f"grading on_test_timeout must be 'fail' or 'infra', not {self.on_test_timeout!r}")


def _restore(path: str) -> str:
    q = shlex.quote(path)
    return f"if git cat-file -e HEAD:{q} 2>/dev/null; then git checkout -q HEAD -- {q}; else rm -rf {q}; fi"


def apply_script(model_patch_path: str | None, test_patch_path: str | None,
                 test_files: Sequence[str], *, shadows: Sequence[str] = (),
                 reset: Sequence[str] = (), probe: str | None = None) -> str:
    """Run ``probe`` (see :func:`runner_probe`) before anything is applied, apply the model's
    patch (git apply, then patch --fuzz), reject it when it added one of ``shadows`` (modules
    named like the test runner) the base commit lacks, restore ``reset`` (pytest's config
    files) and the test files to the base commit (the patch may not edit what judges it),
    apply the test patch."""
    lines = ["set -u"]
    if probe:
        lines.append(f"if ! probed=$({probe} 2>&1); then printf '%s\\n' \"$probed\" | tail -n 5; "
                     f"exit {_RUNNER_MISSING}; fi")
    if model_patch_path:
        p = shlex.quote(model_patch_path)
        # --forward: with --batch alone, patch reverse-applies a patch that looks applied.
        fuzz = f"patch --batch --forward --no-backup-if-mismatch --fuzz=5 -p1 -i {p}"
        lines.append(f"git apply -v {p} || {{ {fuzz} --dry-run >/dev/null && {fuzz}; }} "
                     f"|| exit {_MODEL_PATCH_FAILED}")
    for path in shadows:
        q = shlex.quote(path)
        lines.append(f"git cat-file -e HEAD:{q} 2>/dev/null || {{ echo 'test runner replaced: '{q}; "
                     f"exit {_RUNNER_SHADOWED}; }}")
    lines += [_restore(f) for f in [*reset, *test_files]]
    if test_patch_path:
        lines.append(f"git apply -v {shlex.quote(test_patch_path)} || exit {_TEST_PATCH_FAILED}")
    return "\n".join(lines) + "\n"


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self, what: str) -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise InfrastructureError(f"grading harness timed out before {what}")
        return remaining


def grade(task: Task, patch: str, config: GradingConfig | None = None) -> TestReport:
    """Grade ``patch`` on ``task`` in a fresh container of the task image.

    Never raises for the model's failures or the harness's: the first give a report with
    ``resolved=False`` (``rejected`` set when the patch or its run was refused), the second a
    report with ``infra_error`` set."""
    config = config or GradingConfig()
    started = time.monotonic()
    rejected = screen_patch(patch, max_bytes=config.max_patch_bytes)
    if rejected:  # refused before any container starts
        return TestReport(instance_id=task.instance_id, patch_applied=False, pass_to_pass=0.0,
                          rejected=rejected, log_tail=f"[swe-srl] {rejected}",
                          duration=round(time.monotonic() - started, 3))
    deadline = _Deadline(config.harness_timeout)
    sandbox = None
    try:
        command = task_test_command(task)
        if not needs_tox_ini(command):  # tox's commands are read in the container
            _pytest_run(task, command, config)  # an ungradable command: before any container
        image = ensure_image(task)
        deadline.left("starting the container")
        # The whole test log comes back through the exec's own output: no cap worth hitting.
        sandbox_config = SandboxConfig(image=image, workdir=task.workdir, network=False,
                                       mem_limit=config.mem_limit, cpus=config.cpus, git_hygiene="off",
                                       exec_output_limit=_LOG_LIMIT, env={"PYTHONDONTWRITEBYTECODE": "1"},
                                       disk_limit=config.disk_limit)
        with open_sandbox(sandbox_config) as sandbox:
            report = _grade_in(sandbox, task, patch, config, deadline)
    except InfrastructureError as exc:
        report = TestReport(instance_id=task.instance_id, infra_error=str(exc), pass_to_pass=0.0)
    # What the grading container used, read as it was removed (kept for an infra failure too).
    return replace(report, duration=round(time.monotonic() - started, 3), usage=getattr(sandbox, "usage", None))


def guarded_command(command: str, launcher: str) -> tuple[str, str] | None:
    """``command`` with its pytest invocation replaced by ``<python> launcher``, and the
    launcher's mode (``module`` for ``python -m pytest``, ``script`` for ``pytest``); None when
    the command runs no pytest. Raises Ungradable for a pytest run it cannot take over."""
    run = find_pytest_run(command)
    return None if run is None else (run.with_launcher(launcher), run.mode)


def runner_probe(command: str) -> str | None:
    """``command`` up to its pytest invocation (an env activation, say), then the python the
    launcher will run importing pytest; None when the command runs no pytest. Run at the base
    commit, before any of the patch is there, it fails only when the image cannot run the tests."""
    run = find_pytest_run(command)
    return None if run is None else run.probe()


def _guard_files(scratch: str, config: dict) -> dict[str, str]:
    """The launcher, its audit hook and the fingerprinting script, and the launcher's config
    (the channel key among it: staged by archive, read and deleted before any test runs)."""
    launcher = (_GUARD_DIR / "run_pytest.py").read_text(encoding="utf-8")
    return {"run_pytest.py": launcher.replace('"@CONFIG@"', repr(f"{scratch}/launcher.json"), 1),
            "guard_hook.py": (_GUARD_DIR / "guard_hook.py").read_text(encoding="utf-8"),
            "fingerprint.py": (_GUARD_DIR / "fingerprint.py").read_text(encoding="utf-8"),
            "launcher.json": json.dumps(config)}


def _guard_setup(run: PytestRun, scratch: str, workdir: str, test_files: Sequence[str], user: str | None,
                 home: str, marker: str) -> str:
    """Shell run as root after the patches are applied, before the tests: the scratch folder
    closed to others, stale bytecode removed, the test files fingerprinted by a clean
    interpreter (printed between ``marker`` lines: output the tests cannot change), the repo
    handed to the test user."""
    files = " ".join(shlex.quote(f) for f in test_files)
    fingerprint = run.python_command(f"-s {scratch}/fingerprint.py {shlex.quote(workdir)} {scratch}/reference.json "
                                     f"{files}")
    lines = [f"chmod 700 {scratch}",
             "find . -path ./.git -prune -o \\( -name __pycache__ -o -name '*.pyc' \\) -print0 "
             "| xargs -0 rm -rf",
             f"git ls-tree -r HEAD > {scratch}/tracked",
             f"if ! fp=$( cd / && {fingerprint} 2>&1 ); then printf '%s\\n' \"$fp\" | tail -n 5; exit "
             f"{_NO_REFERENCE}; fi",
             f"echo {marker}; cat {scratch}/reference.json; echo; echo {marker}"]
    if user:
        u = shlex.quote(user)
        lines.append(f"if id -u {u} >/dev/null 2>&1; then chown -R {u}: . && mkdir -p {home} && chown {u}: {home}; fi")
    return "\n".join(lines) + "\n"


def _reference(setup: str, marker: str) -> Reference:
    parts = setup.split(marker + "\n")
    try:
        return Reference.from_json(json.loads(parts[1])) if len(parts) >= 3 else Reference()
    except ValueError:
        return Reference()


def _stage(sandbox, scratch: str, files: dict[str, str]) -> None:
    """Copy ``files`` (name -> text) into ``scratch`` in one archive: nothing of them appears
    on a command line that code in the container could read."""
    with tempfile.TemporaryDirectory(prefix="swe-srl-grade-") as tmp:
        folder = Path(tmp) / posixpath.basename(scratch)
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text, encoding="utf-8")
        sandbox.copy_in(str(folder), scratch)


def _pytest_run(task: Task, command: str, config: GradingConfig) -> PytestRun | None:
    """The command's pytest run to guard; None when it runs another runner (its log is parsed)
    or when the guard is off. A pytest task whose run cannot be guarded is Ungradable: grading
    never falls back to a junit file the tests could write."""
    if not config.guard:
        return None
    run = find_pytest_run(command)
    if run is None and task.log_parser == "pytest":
        raise Ungradable(f"ungradable: the test command of {task.instance_id} runs no pytest the guard can take over: "
                         f"{command[:120]}")
    return run


def _grade_in(sandbox, task: Task, patch: str, config: GradingConfig, deadline: _Deadline) -> TestReport:  # noqa: C901 - the grading sequence, each step's failure returns its report
    tampering = scan_in_container(sandbox, task, patch, deadline.left("scanning the patch")) if config.scan else None
    if tampering:  # runner tampering in the patch's code: refused before any of it runs
        return TestReport(instance_id=task.instance_id, patch_applied=False, pass_to_pass=0.0, rejected=tampering,
                          log_tail=f"[swe-srl] {tampering}")
    nonce = secrets.token_hex(8)  # per run, drawn after the patch was written: it cannot know it
    scratch = f"{_SCRATCH_ROOT}/grade-{nonce}"
    files = {name: text if text.endswith("\n") else text + "\n"
             for name, text in (("model.patch", patch), ("test.patch", task.test_patch)) if text.strip()}
    command = task_test_command(task)
    if needs_tox_ini(command):  # what tox would run, from the base commit's tox.ini (not the patch's)
        command = expand_tox(command, read_base_texts(sandbox, ["tox.ini"], deadline.left("reading tox.ini")).get(
            "tox.ini", None))
    run = _pytest_run(task, command, config)
    key = secrets.token_bytes(32)
    channel = f"{scratch}/results"
    reference_marker = f"swe-srl-reference-{nonce}"
    if run is not None:
        command = run.with_launcher(f"{scratch}/run_pytest.py")
        files.update(_guard_files(scratch, {
            "key": key.hex(), "channel": channel, "mode": run.mode, "tracked": f"{scratch}/tracked",
            "reference": f"{scratch}/reference.json", "tests": list(task.test_files),
            "touched": [p.path for p in patch_paths(patch) if not p.deleted],
            "user": config.test_user, "home": f"/tmp/swe-srl-home-{nonce}"}))
    use_junit = run is None and not config.guard and config.junit and task.log_parser == "pytest"
    junit_path = f"{scratch}/junit.xml"
    if use_junit:
        command += f" --junitxml={junit_path}"
    _stage(sandbox, scratch, files)
    # One exec: the patches, then a marker only this run knows, then the tests. Nothing of
    # the patch runs before the marker, so its FIRST occurrence splits harness from test output.
    marker = f"swe-srl-tests-start-{nonce}"
    setup_script = apply_script(f"{scratch}/model.patch" if "model.patch" in files else None,
                                f"{scratch}/test.patch" if "test.patch" in files else None,
                                task.test_files, shadows=runner_shadows(patch), reset=config_files_to_reset(patch),
                                probe=None)  # a guarded run's fingerprinting shows pytest can start
    limit = min(config.test_timeout, deadline.left("applying the patches"))
    tail = config.log_tail_chars
    if run is not None:
        setup_script += _guard_setup(run, scratch, task.workdir, task.test_files, config.test_user,
                                     f"/tmp/swe-srl-home-{nonce}", reference_marker)
    try:
        ran = sandbox.exec(setup_script + f"echo {marker}\n{command}\n", timeout=limit)
    except (SandboxDied, DiskLimitExceeded) as exc:
        if marker + "\n" not in exc.output:  # before any code of the patch ran: the infrastructure's
            raise InfrastructureError(f"grading container: {exc}") from exc
        log = exc.output.partition(marker + "\n")[2]
        reason = KILLED_CONTAINER if isinstance(exc, SandboxDied) else DISK_LIMIT
        return TestReport(instance_id=task.instance_id, pass_to_pass=0.0, rejected=reason,
                          log_tail="\n".join([log[-tail:], f"[swe-srl] {reason}: {exc}"]))
    setup, found, log = ran.output.partition(marker + "\n")
    if not found:
        if ran.exit_code == _MODEL_PATCH_FAILED:
            return TestReport(instance_id=task.instance_id, patch_applied=False, pass_to_pass=0.0,
                              log_tail=setup[-tail:])
        if ran.exit_code == _RUNNER_MISSING:
            raise InfrastructureError("the test runner cannot start in the image (before the patch): "
                                      + " ".join(setup.split())[-300:])
        if ran.exit_code == _RUNNER_SHADOWED:
            reason = setup.strip().splitlines()[-1] if setup.strip() else "test runner replaced"
            return TestReport(instance_id=task.instance_id, pass_to_pass=0.0, rejected=reason, log_tail=setup[-tail:])
        if ran.exit_code == _NO_REFERENCE:  # run from /, on the test files alone: the image's fault
            raise InfrastructureError("the test runner cannot start in the image (fingerprinting the test files): "
                                      + " ".join(setup.split())[-300:])
        what = "timed out applying the patches" if ran.timed_out else f"exit {ran.exit_code}"
        raise InfrastructureError(f"the task's test patch did not apply ({what}): " + " ".join(setup.split())[-200:])
    if ran.timed_out and (limit < config.test_timeout or config.on_test_timeout == "infra"):
        raise InfrastructureError(f"grading harness timed out after {limit:.0f}s running the tests")
    if ran.exit_code in (126, 127) and run is None:
        raise InfrastructureError(f"the test command could not start (exit {ran.exit_code}): {log[-200:]}")
    statuses = parse_test_log(task, log)
    notes: list[str] = []
    if run is not None:
        text, too_large = _read_limited(sandbox, channel, config.max_channel_bytes)
        result = read_channel(text, key) if not too_large else None
        problem = too_large or result.problem
        if problem and not ran.timed_out:  # a hung run is cut short: its timeout is the verdict
            return TestReport(instance_id=task.instance_id, pass_to_pass=0.0, rejected=problem,
                              log_tail="\n".join([log[-tail:], f"[swe-srl] {problem}"]))
        channel_statuses, notes = ({}, []) if result is None else check_facts(
            result.statuses, result.calls, _reference(setup, reference_marker), task.fail_to_pass + task.pass_to_pass)
        if result is not None and result.final.get("hardened") is False:
            notes.append("[swe-srl] the image's Python has no audit hooks (< 3.8): runtime denials were off")
        if task.log_parser == "pytest":  # the channel decides which tests ran; the log can only worsen them
            statuses = merge_statuses(channel_statuses, statuses) if channel_statuses else {}
        else:  # a SWE-bench parser may name tests its own way: the channel worsens those it knows
            statuses = {t: worse(s, channel_statuses[t]) if t in channel_statuses else s for t, s in statuses.items()}
    elif use_junit:
        statuses = merge_statuses(parse_junit_xml(_read(sandbox, junit_path), task.test_files), statuses)
    report = build_report(task, statuses, log, exit_code=ran.exit_code, timed_out=ran.timed_out,
                          time_limit=limit, tail_chars=tail)
    if notes:
        report = replace(report, log_tail="\n".join([report.log_tail, *notes]))
    return replace(report, resolved=False) if ran.timed_out else report


def _read_limited(sandbox, path: str, limit: int) -> tuple[str, str | None]:
    """The file's text when it holds at most ``limit`` bytes; else ("", why): a flooded channel
    is refused by its size, never read into the grader's memory."""
    try:
        data = sandbox.read_bytes(path, limit=limit)
    except FileNotFoundError:  # nothing written (the run crashed early): the caller fails closed
        return "", None
    except SandboxFileTooLarge as exc:
        return "", f"results channel flooded: {exc}"
    return data.decode("utf-8", errors="replace"), None


def _read(sandbox, path: str) -> str:
    try:
        return sandbox.read_file(path)
    except FileNotFoundError:  # nothing written (the run crashed early): the caller fails closed
        return ""
