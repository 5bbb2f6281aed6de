"""rl/grpo.py is pure tensor math: importing it must not pull the configuration tree and,
through it, the sandbox, the hosts, Docker or Ray (issue 21's import tower)."""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("swe_srl.sandbox", "swe_srl.hosts", "swe_srl.harness", "swe_srl.config", "docker", "ray")


def _modules_after_import(module: str) -> list[str]:
    code = f"import json, sys\nimport {module}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_importing_grpo_pulls_no_sandbox_hosts_docker_or_ray_module():
    loaded = _modules_after_import("swe_srl.rl.grpo")
    heavy = [m for m in loaded if any(m == h or m.startswith(h + ".") for h in HEAVY)]
    assert heavy == []
    own = [m for m in loaded if m == "swe_srl" or m.startswith("swe_srl.")]
    assert len(own) <= 6, own  # swe_srl, errors, rl, rl.settings, rl.grpo (71 before issue 21)


def test_the_settings_grpo_reads_are_torch_free():
    loaded = _modules_after_import("swe_srl.rl.settings")
    assert "torch" not in loaded and "swe_srl.config" not in loaded
