"""What the git scrub costs at sandbox start: the setup exec (state dir, scrub, diff excludes)
timed in one container of a demo task image, interleaved command by command:

* ``off``: the setup exec without the scrub (what grading containers run);
* ``scrub``: the scrub on the image as built (one commit, nothing to remove: counts only);
* ``scrub, store rebuilt``: the scrub after a dangling commit was made (the store is rebuilt);
* ``baseline scrub`` (with ``--baseline REV``): the scrub of an older revision of
  swe_srl/sandbox/base.py, read with ``git show``.

    .venv/bin/python benchmarks/scrub.py [--task swe-srl-demo__datekit-1] [-n 40] [--baseline REV]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from swe_srl.paths import TASKS_DIR  # noqa: E402
from swe_srl.sandbox import SandboxConfig, open_sandbox  # noqa: E402
from swe_srl.sandbox.base import hygiene_script  # noqa: E402
from swe_srl.sandbox.images.build import build_task_image  # noqa: E402

DANGLING = "git commit -q --allow-empty -m later && git reset -q --hard HEAD~1 && rm -rf .git/logs"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def baseline_script(rev: str) -> str:
    """The scrub's setup script as revision ``rev`` wrote it."""
    source = subprocess.run(["git", "show", f"{rev}:swe_srl/sandbox/base.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("baseline_base")
    module.__dict__["__package__"] = "swe_srl.sandbox"
    exec(compile(source, f"{rev}:base.py", "exec"), module.__dict__)
    return module.hygiene_script("/testbed", "scrub")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="swe-srl-demo__datekit-1")
    parser.add_argument("-n", type=int, default=40)
    parser.add_argument("--baseline", help="a git revision whose scrub to time beside this one")
    args = parser.parse_args()
    image = build_task_image(TASKS_DIR / args.task)
    scripts = {"off": hygiene_script("/testbed", "off"), "scrub": hygiene_script("/testbed", "scrub")}
    if args.baseline:
        scripts["baseline scrub"] = baseline_script(args.baseline)
    samples: dict[str, list[float]] = {name: [] for name in [*scripts, "scrub, store rebuilt"]}
    with open_sandbox(SandboxConfig(image=image, git_hygiene="off")) as box:
        for _ in range(args.n):
            for name, script in [*scripts.items(), ("scrub, store rebuilt", scripts["scrub"])]:
                if name == "scrub, store rebuilt":
                    assert box.exec(DANGLING).exit_code == 0
                start = time.perf_counter()
                result = box.exec(script)
                samples[name].append(time.perf_counter() - start)
                assert result.exit_code == 0, result.output
    load = os.getloadavg()[0]
    print(f"{args.task}, n={args.n} each, 1-min load {load:.1f} on {os.cpu_count()} cores")
    print("| setup exec | p50 ms | p95 ms |\n|---|---|---|")
    for name, values in samples.items():
        print(f"| {name} | {pct(values, 0.5) * 1000:.0f} | {pct(values, 0.95) * 1000:.0f} |")


if __name__ == "__main__":
    main()
