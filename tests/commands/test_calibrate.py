"""`swe-srl env calibrate` as a user runs it: bad input is one red line, an engine that does not
answer gives no verdict (exit 1) and a file a rerun retries; eval and train refuse a named
calibration file that is missing before any model loads."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

DEMO = "swe-srl-demo__datekit-1"


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swe_srl.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--runs", "0"], "error: --runs must be >= 1, got 0"),
    (["-j", "0"], "error: --workers must be >= 1, got 0"),
    (["--tasks", "/no/such/tasks"], "error: task source '/no/such/tasks' is neither 'demo', a file, a folder nor a "
                                    "dataset name"),
    (["--ids", "nobody__x-1"], "error: 1 requested task id(s) not in the source, e.g. 'nobody__x-1'"),
])
def test_bad_input_is_one_red_line(args, message, tmp_path):
    done = _cli("env", "calibrate", "-o", str(tmp_path / "c.json"), *args)
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and done.stderr.startswith(message), done.stderr
    assert not (tmp_path / "c.json").exists()


def test_an_output_that_is_not_a_calibration_file_is_left_alone(tmp_path):
    (tmp_path / "c.json").write_text('{"something": "else"}\n')
    done = _cli("env", "calibrate", "--ids", DEMO, "-o", str(tmp_path / "c.json"))
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'c.json'}: not a swe-srl calibration file (ValueError: no 'tasks' object)"]
    assert (tmp_path / "c.json").read_text() == '{"something": "else"}\n'
    done = _cli("env", "calibrate", "--ids", DEMO, "-o", str(tmp_path))
    assert done.returncode == 2 and "is a folder: give the calibration file's path" in done.stderr


def test_without_an_engine_no_run_is_evidence_and_the_task_is_left_to_a_rerun(tmp_path):
    out = tmp_path / "c.json"
    done = _cli("env", "calibrate", "--ids", DEMO, "--runs", "2", "-o", str(out),
                env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert done.returncode == 1, done.stdout + done.stderr
    assert "0 stable, 0 flaky, 0 broken, 1 unknown" in done.stdout
    assert done.stderr.strip().splitlines() == [
        "1 task(s) got no verdict (infrastructure failures only): fix the engine and rerun to retry them"]
    entry = json.loads(out.read_text())["tasks"][DEMO]
    assert entry["verdict"] == "unknown" and entry["gold"]["infra_failures"] == 2 and entry["gold"]["graded"] == 0
    assert entry["gold"]["resolved_rate"] is None and entry["infra_errors"]


def test_eval_and_train_refuse_a_missing_calibration_before_loading_a_model(tmp_path):
    missing = tmp_path / "none.json"
    done = _cli("eval", "--ids", DEMO, "--calibration", str(missing), "-o", str(tmp_path / "eval"),
                "--model", str(tmp_path / "no-model"))
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"error: calibration file not found: {missing} (write one with `swe-srl env calibrate -o {missing}`)"]
    pytest.importorskip("torch")
    done = _cli("train", "--method", "rlvr", "--set", f"episodes.calibration={missing}", "-o", str(tmp_path / "run"),
                "--model", str(tmp_path / "no-model"))
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1].startswith(
        f"error: calibration file not found: {missing}"), done.stderr
