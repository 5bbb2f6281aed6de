"""Grading one demo task: swe-srl's ``grade()`` vs the SWE-bench harness's own ``run_instance``.

Both grade the same gold patch on the same local task image. The swebench side is the real
``swebench.harness.run_evaluation.run_instance`` (swebench 5.x), driven offline through a
TestSpec made by ``swebench.harness.utils.make_test_spec`` from a new-format row whose eval
script is the classic SWE-bench Python one (checkout test files, apply the test patch, run the
tests between the ``>>>>> Start/End Test Output`` markers). Its container lifecycle is its own:
create (``tail -f /dev/null``), start, copy, exec, ``docker stop --time=15``, remove.

    python benchmarks/grading.py [--runs 5] [--task swe-srl-demo__pagekit-1]

Prints one JSON object: per-run seconds, medians, the speed-up (swebench / swe-srl) and the
cost of swe-srl's pytest guard (guarded / unguarded grade, ``GradingConfig(guard=False)``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
import uuid
from dataclasses import replace


def _eval_script(task) -> str:
    """The classic SWE-bench eval script for a pytest repository."""
    from swe_srl.tasks import task_test_command

    files = " ".join(task.test_files)
    delimiter = f"EOF_{uuid.uuid4().hex[:12]}"
    return "\n".join([
        "#!/bin/bash",
        "set -uxo pipefail",
        "cd /testbed",
        f"git checkout {task.base_commit} {files}",
        f"git apply -v - <<'{delimiter}'\n{task.test_patch.rstrip(chr(10))}\n{delimiter}",
        ": '>>>>> Start Test Output'",
        task_test_command(task),
        ": '>>>>> End Test Output'",
        f"git checkout {task.base_commit} {files}",
    ]) + "\n"


def _swebench_spec(task):
    from swebench.harness.utils import make_test_spec

    return make_test_spec({
        "instance_id": task.instance_id, "image": task.image, "repo": task.repo, "version": task.version,
        "FAIL_TO_PASS": json.dumps(list(task.fail_to_pass)), "PASS_TO_PASS": json.dumps(list(task.pass_to_pass)),
        "log_parser": "parse_log_pytest", "eval_type": "pass_and_fail", "eval_script": _eval_script(task),
    })


def swebench_once(task, spec, client) -> float:
    from swebench.harness.run_evaluation import run_instance

    pred = {"instance_id": task.instance_id, "model_name_or_path": "gold", "model_patch": task.patch}
    start = time.perf_counter()
    result = run_instance(spec, pred, client, run_id=f"bench-{uuid.uuid4().hex[:8]}", timeout=600)
    elapsed = time.perf_counter() - start
    if not result or not result[1][task.instance_id]["resolved"]:
        raise SystemExit(f"swebench did not resolve the gold patch: {result}")
    return elapsed


def swe_srl_once(task, guard: bool = True) -> float:
    from swe_srl.sandbox.grading import GradingConfig, grade

    start = time.perf_counter()
    report = grade(task, task.patch, GradingConfig(guard=guard))
    elapsed = time.perf_counter() - start
    if not report.resolved:
        raise SystemExit(f"swe-srl did not resolve the gold patch: {report.infra_error or report.log_tail}")
    return elapsed


def run(task, runs: int) -> tuple[list[float], list[float], list[float]]:
    """Alternate the harnesses run by run, so all see the same machine load: swe-srl with its
    pytest guard (the default), swe-srl without it, swebench."""
    import docker

    client = docker.from_env()
    spec = _swebench_spec(task)
    ours, unguarded, theirs = [], [], []
    with tempfile.TemporaryDirectory(prefix="swebench-bench-") as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # run_instance writes logs/run_evaluation/... under the working directory
        try:
            for _ in range(runs):
                ours.append(swe_srl_once(task))
                unguarded.append(swe_srl_once(task, guard=False))
                theirs.append(swebench_once(task, spec, client))
        finally:
            os.chdir(cwd)
    return ours, unguarded, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--task", default="swe-srl-demo__pagekit-1")
    args = parser.parse_args()

    from swe_srl import tasks
    from swe_srl.sandbox.images.source import ensure_image

    task = tasks.load_tasks("demo", ids=[args.task])[0]
    task = replace(task, image=ensure_image(task))  # built once, outside the timings
    ours, unguarded, theirs = run(task, args.runs)
    import swebench

    print(json.dumps({
        "task": task.instance_id, "image": task.image, "runs": args.runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "swebench_version": swebench.__version__,
        "swe_srl_s": [round(t, 3) for t in ours], "swebench_s": [round(t, 3) for t in theirs],
        "swe_srl_unguarded_s": [round(t, 3) for t in unguarded],
        "swe_srl_median_s": round(statistics.median(ours), 3),
        "swe_srl_unguarded_median_s": round(statistics.median(unguarded), 3),
        "guard_cost": round(statistics.median(ours) / statistics.median(unguarded), 2),
        "swebench_median_s": round(statistics.median(theirs), 3),
        "speedup": round(statistics.median(theirs) / statistics.median(ours), 1),
    }, indent=2))


if __name__ == "__main__":
    main()
