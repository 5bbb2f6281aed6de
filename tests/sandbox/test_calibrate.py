"""Calibration against real containers: a task whose test fails at random half the time is
flaky, a task whose gold patch fails is broken, a demo task is stable; a rerun resumes.

The fixture tasks are folders like environments/tasks/<id>/ in a tmp dir; their images derive
from the base image (a few files on top) and are removed at the end. The coin test draws one
random bit per run (fresh containers share no state, so no counter can alternate it). With N
runs the flaky task is misjudged only when its gold patch never resolves (broken: 2^-N) or
every gold run resolves and the coin never varies under the empty patch (stable: 2^-(2N-1));
N = 14 puts the two together under 1e-4."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from swe_srl.calibration import Calibration
from swe_srl.paths import TASKS_DIR
from swe_srl.sandbox.calibrate import calibrate_tasks
from swe_srl.tasks import load_local_task

pytestmark = pytest.mark.docker

FLAKY_RUNS = 14
DEMO = "swe-srl-demo__datekit-1"
STEADY_TEST = "def test_steady():\n    assert True\n"
COIN_TEST = "import os\n\n\n" + STEADY_TEST + textwrap.dedent('''\


    def test_coin():
        assert os.urandom(1)[0] % 2 == 0  # fails in half of all runs
    ''')
EXTRA_TEST = "def test_double():\n    from coin.extra import double\n\n    assert double(3) == 6\n"


def _new_file_patch(path: str, text: str) -> str:
    lines = text.splitlines()
    return (f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n"
            f"@@ -0,0 +1,{len(lines)} @@\n" + "".join(f"+{line}\n" for line in lines))


def _write_task(root: Path, name: str, gold_body: str, coin: bool) -> Path:
    """A demo-style task: FAIL_TO_PASS tests/test_extra.py::test_double (the gold patch adds
    coin/extra.py with ``gold_body``), PASS_TO_PASS test_steady and, with ``coin``, test_coin."""
    folder = root / name
    (folder / "repo" / "coin").mkdir(parents=True)
    (folder / "repo" / "tests").mkdir()
    (folder / "repo" / "coin" / "__init__.py").write_text("")
    p2p = ["tests/test_coin.py::test_steady"] + (["tests/test_coin.py::test_coin"] if coin else [])
    (folder / "repo" / "tests" / "test_coin.py").write_text(COIN_TEST if coin else STEADY_TEST)
    row = {"instance_id": f"calib-fixture__{name}", "repo": "calib-fixture/coin", "problem_statement": "add double()",
           "patch": _new_file_patch("coin/extra.py", f"def double(x):\n    return {gold_body}\n"),
           "test_patch": _new_file_patch("tests/test_extra.py", EXTRA_TEST),
           "test_files": ["tests/test_extra.py", "tests/test_coin.py"],
           "FAIL_TO_PASS": ["tests/test_extra.py::test_double"], "PASS_TO_PASS": p2p,
           "test_cmd": "python3 -m pytest -rA -p no:cacheprovider"}
    (folder / "task.json").write_text(json.dumps(row, indent=2))
    return folder


@pytest.fixture(scope="module")
def fixture_tasks(tmp_path_factory, base_image, docker_client):
    """A folder of three task folders (flaky, broken, a copy of a demo task); the fixtures'
    images are removed afterwards (the demo copy hashes to the demo image, which stays)."""
    from swe_srl.sandbox.images.build import build_task_image, task_image_tag

    root = tmp_path_factory.mktemp("calib-tasks")
    flaky = _write_task(root, "flaky-1", "2 * x", coin=True)
    broken = _write_task(root, "broken-1", "x + 2", coin=False)  # the gold patch is wrong
    shutil.copytree(TASKS_DIR / DEMO, root / DEMO)
    assert task_image_tag(root / DEMO, base_image) == task_image_tag(TASKS_DIR / DEMO, base_image)  # nothing new
    built = [build_task_image(folder, base_tag=base_image) for folder in (flaky, broken)]
    yield root
    for tag in built:
        docker_client.images.remove(tag, force=True)


def test_a_random_half_failing_test_is_flaky_a_failing_gold_broken_a_demo_task_stable(fixture_tasks, tmp_path):
    out = tmp_path / "calibration.json"
    flaky = load_local_task(fixture_tasks / "flaky-1")
    first = calibrate_tasks([flaky], out, runs=FLAKY_RUNS, workers=2)
    entry = first.entries[flaky.instance_id]
    assert entry.verdict == "flaky", entry.reasons
    assert entry.gold.graded == entry.empty.graded == FLAKY_RUNS and not entry.infra_errors
    assert 0 < entry.gold.passes["tests/test_coin.py::test_coin"] < FLAKY_RUNS
    assert entry.gold.passes["tests/test_extra.py::test_double"] == FLAKY_RUNS
    assert entry.empty.passes["tests/test_extra.py::test_double"] == 0 and entry.empty.resolved == 0

    # The rest through the CLI, on the same file: the flaky task is kept, not graded again.
    done = subprocess.run([sys.executable, "-m", "swe_srl.cli", "env", "calibrate", "--tasks", str(fixture_tasks),
                           "--runs", "2", "-j", "2", "-o", str(out)], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 stable, 1 flaky, 1 broken, 0 unknown" in done.stdout and "(earlier)" in done.stdout
    calibration = Calibration.load(out)
    assert calibration.entries[flaky.instance_id] == entry
    broken = calibration.entries["calib-fixture__broken-1"]
    assert broken.verdict == "broken" and broken.reasons == ("gold patch resolved 0/2",)
    demo = calibration.entries[DEMO]
    assert demo.verdict == "stable" and demo.runs == 2 and demo.gold.resolved == 2 and demo.empty.resolved == 0
    task = load_local_task(TASKS_DIR / DEMO)
    assert demo.to_dict()["gold"]["pass_rates"] == {t: 1.0 for t in task.fail_to_pass + task.pass_to_pass}
    assert set(demo.to_dict()["empty"]["pass_rates"].values()) == {0.0, 1.0}  # F2P fail, P2P pass
