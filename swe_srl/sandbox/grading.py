"""Test verification: grade a patch by running a task's tests in a FRESH container of its image.

    fresh container -> apply the patch (git apply, fallback patch --fuzz) -> restore the test
    files to the base commit -> apply the test patch -> run the test command on the test
    files (own exec, own timeout, output to a file) -> parse -> TestReport

Parsing the log, cross-checking it against the junit xml and the exit code, and scoring are
pure functions in :mod:`swe_srl.rewards.testlog` (its docstring has the anti-spoofing rules).

A patch that does not apply is the model's failure (``patch_applied=False``). A failure of the
harness itself (image missing, container died, the whole grade past ``harness_timeout``) sets
``TestReport.infra_error``: nothing is known about the patch, so rewards built on it are None.
"""

from __future__ import annotations

import posixpath
import secrets
import shlex
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, Optional, Sequence

from ..errors import ConfigError, InfrastructureError
from ..rewards.testlog import build_report, merge_statuses, parse_junit_xml, parse_test_log
from ..schemas import Task, TestReport
from ..tasks import task_test_command
from . import open_sandbox
from .config import SandboxConfig
from .images import ensure_image

# Exit codes of the apply script (grading steps run before any code of the patch does).
_MODEL_PATCH_FAILED, _TEST_PATCH_FAILED = 10, 11
_SCRATCH_ROOT = "/run/swe-srl"  # the sandbox's state dir: exists, outside the repository
_LOG_LIMIT = 64 * 1024 * 1024
_INLINE_PATCH_BYTES = 96 * 1024


@dataclass(frozen=True)
class GradingConfig:
    """Limits of one grading run.

    ``test_timeout``: seconds the test command may run; past it the tests count as failed
    (a patch that hangs the tests is the model's failure) unless ``on_test_timeout="infra"``.
    ``harness_timeout``: seconds for the whole grade; past it the report is an infra_error.
    ``junit``: for pytest tasks, also have pytest write a junit xml and cross-check the log.
    ``mem_limit`` / ``cpus``: of the grading container. ``log_tail_chars``: log kept in the report.
    """

    test_timeout: float = 600.0
    harness_timeout: float = 1800.0
    on_test_timeout: Literal["fail", "infra"] = "fail"
    junit: bool = True
    mem_limit: str = "4g"
    cpus: float = 1.0
    log_tail_chars: int = 4000

    def __post_init__(self) -> None:
        if not (self.test_timeout > 0 and self.harness_timeout > 0):
            raise ConfigError("grading test_timeout and harness_timeout must be > 0")
        if self.on_test_timeout not in ("fail", "infra"):
            raise ConfigError(f"grading on_test_timeout must be 'fail' or 'infra', not {self.on_test_timeout!r}")


def apply_script(model_patch_path: Optional[str], test_patch_path: Optional[str],
                 test_files: Sequence[str]) -> str:
    """Apply the model's patch (git apply, then patch --fuzz), restore the test files to the
    base commit (the patch may not edit the tests that judge it), apply the test patch."""
    lines = ["set -u"]
    if model_patch_path:
        p = shlex.quote(model_patch_path)
        # --forward: with --batch alone, patch reverse-applies a patch that looks applied.
        fuzz = f"patch --batch --forward --no-backup-if-mismatch --fuzz=5 -p1 -i {p}"
        lines.append(f"git apply -v {p} || {{ {fuzz} --dry-run >/dev/null && {fuzz}; }} "
                     f"|| exit {_MODEL_PATCH_FAILED}")
    for f in test_files:
        q = shlex.quote(f)
        lines.append(f"if git cat-file -e HEAD:{q} 2>/dev/null; then git checkout -q HEAD -- {q}; "
                     f"else rm -rf {q}; fi")
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


def grade(task: Task, patch: str, config: Optional[GradingConfig] = None) -> TestReport:
    """Grade ``patch`` on ``task`` in a fresh container of the task image.

    Never raises for the model's failures or the harness's: the first give a report with
    ``resolved=False``, the second a report with ``infra_error`` set."""
    config = config or GradingConfig()
    started = time.monotonic()
    deadline = _Deadline(config.harness_timeout)
    try:
        image = ensure_image(task)
        deadline.left("starting the container")
        # The whole test log comes back through the exec's own output: no cap worth hitting.
        sandbox_config = SandboxConfig(image=image, workdir=task.workdir, network=False,
                                       mem_limit=config.mem_limit, cpus=config.cpus, git_hygiene="off",
                                       exec_output_limit=_LOG_LIMIT, env={"PYTHONDONTWRITEBYTECODE": "1"})
        with open_sandbox(sandbox_config) as sandbox:
            report = _grade_in(sandbox, task, patch, config, deadline)
    except InfrastructureError as exc:
        report = TestReport(instance_id=task.instance_id, infra_error=str(exc), pass_to_pass=0.0)
    return replace(report, duration=round(time.monotonic() - started, 3))


def _stage_patches(sandbox, scratch: str, nonce: str, patch: str,
                   test_patch: str) -> tuple[str, Optional[str], Optional[str]]:
    """Put both patches at ``scratch``: small ones as heredocs in the grading script itself
    (no extra engine call; a single argv string is capped at 128 KiB), big ones by one archive
    copy. Returns (script prefix, model patch path, test patch path)."""
    texts = {name: text if text.endswith("\n") else text + "\n"
             for name, text in (("model.patch", patch), ("test.patch", test_patch)) if text.strip()}
    paths = [f"{scratch}/{n}" if n in texts else None for n in ("model.patch", "test.patch")]
    if sum(len(t.encode()) for t in texts.values()) <= _INLINE_PATCH_BYTES:
        # The delimiter holds the nonce, drawn after the patch was written: it cannot occur in it.
        lines = [f"mkdir -p {scratch}"]
        lines += [f"cat > {scratch}/{n} <<'EOF-{nonce}'\n{t}EOF-{nonce}" for n, t in texts.items()]
        return "\n".join(lines) + "\n", paths[0], paths[1]
    with tempfile.TemporaryDirectory(prefix="swe-srl-grade-") as tmp:
        folder = Path(tmp) / posixpath.basename(scratch)
        folder.mkdir()
        for name, text in texts.items():
            (folder / name).write_text(text)
        sandbox.copy_in(str(folder), scratch)
    return "", paths[0], paths[1]


def _grade_in(sandbox, task: Task, patch: str, config: GradingConfig, deadline: _Deadline) -> TestReport:
    nonce = secrets.token_hex(8)  # per run, drawn after the patch was written: it cannot know it
    scratch = f"{_SCRATCH_ROOT}/grade-{nonce}"
    prefix, model_patch, test_patch = _stage_patches(sandbox, scratch, nonce, patch, task.test_patch)
    use_junit = config.junit and task.log_parser == "pytest"
    junit_path = f"{scratch}/junit.xml"
    command = task_test_command(task) + (f" --junitxml={junit_path}" if use_junit else "")
    # One exec: the patches, then a marker only this run knows, then the tests. Nothing of
    # the patch runs before the marker, so its FIRST occurrence splits harness from test output.
    marker = f"swe-srl-tests-start-{nonce}"
    script = prefix + apply_script(model_patch, test_patch, task.test_files) + f"echo {marker}\n{command}\n"
    limit = min(config.test_timeout, deadline.left("applying the patches"))
    ran = sandbox.exec(script, timeout=limit)
    setup, found, log = ran.output.partition(marker + "\n")
    tail = config.log_tail_chars
    if not found:
        if ran.exit_code == _MODEL_PATCH_FAILED:
            return TestReport(instance_id=task.instance_id, patch_applied=False, pass_to_pass=0.0,
                              log_tail=setup[-tail:])
        what = "timed out applying the patches" if ran.timed_out else f"exit {ran.exit_code}"
        raise InfrastructureError(f"the task's test patch did not apply ({what}): " + " ".join(setup.split())[-200:])
    if ran.timed_out and (limit < config.test_timeout or config.on_test_timeout == "infra"):
        raise InfrastructureError(f"grading harness timed out after {limit:.0f}s running the tests")
    if ran.exit_code in (126, 127):
        raise InfrastructureError(f"the test command could not start (exit {ran.exit_code}): {log[-200:]}")
    statuses = parse_test_log(task, log)
    if use_junit:
        statuses = merge_statuses(parse_junit_xml(_read(sandbox, junit_path), task.test_files), statuses)
    return build_report(task, statuses, log, exit_code=ran.exit_code, timed_out=ran.timed_out,
                        time_limit=limit, tail_chars=tail)


def _read(sandbox, path: str) -> str:
    try:
        return sandbox.read_file(path)
    except FileNotFoundError:  # no junit (pytest crashed early): the log and exit code decide
        return ""
