"""Format readers on real, published trajectories (``<repo>/../shared/real-samples``, present
in the development checkout only: skipped elsewhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

from swe_srl.actions import is_submit
from swe_srl.formats import Skip, read_trajectories

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "real-samples"
pytestmark = pytest.mark.skipif(not REAL.is_dir(), reason=f"real samples not present at {REAL}")


def read(sub: str) -> dict[str, object]:
    skips: list[Skip] = []
    trajs = list(read_trajectories([REAL / sub], on_skip=skips.append))
    assert skips == []
    return {t.task_id: t for t in trajs}


def test_mini_swe_agent_1_real():
    t = read("mini-swe-agent-1")["django__django-9296"]
    assert t.source_format == "mini-swe-agent-1" and t.resolved is None
    assert len(t.steps) == t.metadata["api_calls"] == 18
    assert t.problem_statement.startswith("Paginator just implement the __iter__ function")
    assert t.steps[1].action.arguments == {"command": 'grep -r "class Paginator" django'}
    assert t.steps[1].observation == "django/core/paginator.py:class Paginator:\n"
    assert t.steps[1].exit_code == 0
    assert t.steps[0].observation.startswith("<warning>")  # long output: head/tail kept as shown
    assert is_submit(t.steps[-1].action) and t.steps[-1].observation == t.final_patch


def test_mini_swe_agent_2_real():
    t = read("mini-swe-agent-1.1")["django__django-11999"]
    assert t.source_format == "mini-swe-agent-1.1"
    assert len(t.steps) == 59 and t.model == "deepseek/deepseek-chat"
    assert all(s.action.tool == "bash" for s in t.steps)
    assert t.steps[0].thought.startswith("I'll start by exploring the codebase")
    assert t.steps[-1].observation.startswith("diff --git a/django/db/models/fields/__init__.py")


def test_swe_agent_real_both_versions():
    trajs = read("swe-agent")
    old = trajs["demo_default_windowed__marshmallow-code__marshmallow-1867"]  # 0.x: no instance id inside
    new = trajs["marshmallow-code__marshmallow-1867"]
    assert [len(old.steps), len(new.steps)] == [14, 11]
    assert old.steps[1].action.tool == "open" and old.steps[1].action.arguments == {"path": "setup.py"}
    assert old.steps[4].action.tool == "edit"
    assert new.steps[1].action.tool == "insert"  # from history tool_calls, not the flattened string
    assert new.steps[1].action.arguments["text"].startswith("from marshmallow.fields import TimeDelta")
    assert new.model == "gpt-4o"
    for t in (old, new):
        assert t.problem_statement.startswith("TimeDelta serialization precision")
        assert is_submit(t.steps[-1].action)


def test_openhands_real_both_dialects():
    trajs = read("openhands")
    new, old = trajs["ponylang__ponyc-4595"], trajs["neubig/pr-viewer#5"]
    assert len(new.steps) == 22 and new.resolved is None
    assert new.steps[0].action.arguments == {"command": "ls -l /workspace/ponylang__ponyc__0.1"}
    assert new.steps[0].exit_code == 0
    assert any(s.exit_code == 127 for s in new.steps)
    assert old.problem_statement == "Add MIT license\nWe can license this repo under the MIT license."
    assert old.resolved is True and [s.action.tool for s in old.steps] == ["bash", "ipython", "bash", "submit"]
    assert old.steps[0].exit_code == 0


def test_swe_gym_real():
    [t] = read("swe-gym").values()
    assert t.resolved is True and len(t.steps) == 21
    assert t.metadata["message_turns"] == 2
    assert t.steps[0].observation.startswith("ERROR:\nThe `view_range` parameter")
    assert {s.exit_code for s in t.steps if s.action.tool == "bash"} <= {0, 1}


def test_nebius_real():
    [t] = read("nebius").values()
    assert t.resolved is True and t.model == "swe-agent-llama-70b"
    assert [s.action.tool for s in t.steps][:2] == ["bash", "find_file"]
    assert "(Current directory:" not in t.steps[0].observation
    assert t.problem_statement.startswith("SyntaxError in plumbum/cli/image.py")


def test_swe_smith_real():
    [t] = read("swe-smith").values()
    assert t.trajectory_id == "arrow-py__arrow.1d70d009.lm_rewrite__nuzjfyur.l13ggwmx"
    assert t.resolved is True and len(t.steps) == 15
    assert t.steps[1].action.arguments == {"command": "view", "path": "/testbed/arrow/arrow.py"}
    assert t.steps[0].observation.startswith("/testbed/arrow/__init__.py")


def test_task_records_are_not_trajectories():
    skips: list[Skip] = []
    assert list(read_trajectories([REAL / "swebench"], on_skip=skips.append)) == []
    assert skips and all(s.reason.startswith("unknown trajectory format") for s in skips)
