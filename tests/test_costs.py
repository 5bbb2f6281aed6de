"""What a run costs: the arithmetic of the per-instance, summary and training figures (pure),
and an eval over two demo tasks in Docker whose per-instance costs and summary totals add up,
infrastructure failures keeping theirs apart."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import pytest

from swe_srl.costs import cost_summary, cost_totals, describe_cost, per_unit, usage_dict
from swe_srl.evaluate import EvalConfig, InstanceResult, evaluate_tasks, instance_dir
from swe_srl.experts import ExpertReplay, load_scripts
from swe_srl.harness import GradedEpisode, HarnessConfig
from swe_srl.rl.distributed import Dist
from swe_srl.rl.sources import EpisodeRollout, episode_totals
from swe_srl.runner import open_runner
from swe_srl.sandbox.grading import GradingConfig
from swe_srl.schemas import EpisodeResult, ResourceUsage, TestReport, Trajectory
from swe_srl.tasks import load_tasks

DEMO = {t.instance_id: t for t in load_tasks("demo")}


def _usage(cpu: float, seconds: float, peak: int | None, source: str = "max_usage",
           unmeasured: int = 0) -> ResourceUsage:
    return ResourceUsage(containers=1, container_seconds=seconds, cpu_seconds=cpu, memory_peak_bytes=peak,
                         memory_source=source if peak else "", unmeasured=unmeasured)


def _row(usage: ResourceUsage | None, *, resolved: bool = False, infra: str | None = None, prompt: int = 0,
         completion: int = 0, wall: float = 0.0) -> SimpleNamespace:
    return SimpleNamespace(usage=usage_dict(usage), resolved=resolved, infra_error=infra, prompt_tokens=prompt,
                           completion_tokens=completion, wall_time=wall)


# ----------------------------------------------------------------------------- pure arithmetic


def test_usage_sums_containers_and_seconds_and_keeps_the_largest_peak():
    agent, grading = _usage(1.5, 10.0, 300), _usage(0.25, 2.0, 500)
    both = agent + grading
    assert both == ResourceUsage(containers=2, container_seconds=12.0, cpu_seconds=1.75, memory_peak_bytes=500,
                                 memory_source="max_usage")
    mixed = both + _usage(0.0, 1.0, None, unmeasured=1) + _usage(0.5, 1.0, 100, source="usage_at_close")
    assert (mixed.containers, mixed.unmeasured, mixed.memory_peak_bytes) == (4, 1, 500)
    assert mixed.memory_source == "max_usage+usage_at_close"
    assert ResourceUsage.total([None, agent, None, grading]) == both and ResourceUsage.total([]) == ResourceUsage()
    assert ResourceUsage.from_dict(json.loads(json.dumps(both.to_dict()))) == both


def test_cost_totals_add_up_over_instances():
    rows = [_row(_usage(1.0, 5.0, 200), prompt=100, completion=10, wall=6.0),
            _row(_usage(2.0, 7.0, 400), prompt=50, completion=5, wall=8.0),
            _row(None, prompt=7, completion=1, wall=0.5)]  # no container measured (a start failure)
    totals = cost_totals(rows)
    assert totals == {"instances": 3, "containers": 2, "unmeasured_containers": 0, "cpu_seconds": 3.0,
                      "container_seconds": 12.0, "memory_peak_bytes_max": 400, "memory_peak_bytes_mean": 300,
                      "memory_source": "max_usage", "tokens": 173, "prompt_tokens": 157,
                      "completion_tokens": 16, "wall_seconds": 14.5}


def test_cost_per_resolved_instance_divides_the_graded_totals_and_is_none_without_any():
    rows = [_row(_usage(3.0, 9.0, 100), resolved=True, prompt=30, wall=3.0),
            _row(_usage(1.0, 3.0, 100), resolved=False, prompt=10, wall=1.0)]
    summary = cost_summary(rows)
    assert summary["per_resolved_instance"] == {"cpu_seconds": 4.0, "container_seconds": 12.0, "tokens": 40.0,
                                                "wall_seconds": 4.0}
    assert cost_summary(rows[1:])["per_resolved_instance"] is None
    assert per_unit({"cpu_seconds": 3.0, "tokens": 9}, 3) == {"cpu_seconds": 1.0, "tokens": 3.0}
    assert per_unit({"cpu_seconds": 3.0}, 0.0) is None and per_unit({"cpu_seconds": 3.0}, -1.0) is None


def test_infrastructure_failures_keep_their_costs_apart():
    rows = [_row(_usage(1.0, 4.0, 100), resolved=True, prompt=10, wall=5.0),
            _row(_usage(0.5, 2.0, 900), infra="grading harness timed out", prompt=20, wall=30.0)]
    summary = cost_summary(rows)
    assert summary["graded"]["cpu_seconds"] == 1.0 and summary["graded"]["memory_peak_bytes_max"] == 100
    assert summary["infrastructure_failures"]["cpu_seconds"] == 0.5
    assert summary["infrastructure_failures"]["tokens"] == 20 and summary["infrastructure_failures"]["instances"] == 1
    assert summary["per_resolved_instance"]["wall_seconds"] == 5.0  # the failure is not charged to it


def _graded(agent: ResourceUsage | None, grading: ResourceUsage | None, *, resolved: bool, infra: str | None = None,
            tokens: tuple[int, int] = (0, 0)) -> GradedEpisode:
    from swe_srl.agent import Episode

    report = TestReport(instance_id="t", resolved=resolved, infra_error=infra, usage=grading)
    result = EpisodeResult(trajectory=Trajectory(task_id="t", trajectory_id="t.1", problem_statement="",
                                                 steps=(), source_format="swe-srl"), patch="p", exit_reason="submitted",
                           prompt_tokens=tokens[0], completion_tokens=tokens[1], report=report, usage=agent)
    return GradedEpisode(DEMO["swe-srl-demo__pagekit-1"], Episode(result), report=report, infra_error=infra)


def test_training_metrics_give_cost_per_reward_point_and_per_resolved_episode():
    good = EpisodeRollout(_graded(_usage(2.0, 6.0, 100 * 2**20), _usage(1.0, 2.0, 300 * 2**20), resolved=True,
                                  tokens=(900, 100)), reward=1.5)
    miss = EpisodeRollout(_graded(_usage(1.0, 4.0, 100 * 2**20), None, resolved=False, tokens=(400, 100)), reward=0.5)
    lost = EpisodeRollout(_graded(_usage(5.0, 9.0, 10), _usage(0.5, 30.0, 10), resolved=False, infra="engine gone",
                                  tokens=(70, 7)), reward=None)
    metrics = episode_totals([good, miss, lost]).all_sum(Dist()).metrics()
    assert metrics["cost/cpu_seconds"] == 4.0 and metrics["cost/container_seconds"] == 12.0
    assert metrics["cost/tokens"] == 1500
    assert metrics["cost/cpu_seconds_per_reward"] == 2.0 and metrics["cost/tokens_per_reward"] == 750.0
    assert metrics["cost/cpu_seconds_per_resolved"] == 4.0 and metrics["cost/tokens_per_resolved"] == 1500.0
    assert metrics["cost/memory_peak_mb_mean"] == pytest.approx(200.0)  # each episode's largest container
    assert (metrics["cost/infra_cpu_seconds"], metrics["cost/infra_container_seconds"],
            metrics["cost/infra_tokens"]) == (5.5, 39.0, 77)


def test_no_cost_per_reward_when_the_rewards_do_not_sum_above_zero():
    worse = EpisodeRollout(_graded(_usage(1.0, 2.0, 10), None, resolved=False), reward=-0.5)
    metrics = episode_totals([worse]).all_sum(Dist()).metrics()
    assert metrics["cost/cpu_seconds"] == 1.0
    assert not any(key.endswith(("_per_reward", "_per_resolved")) for key in metrics)


# ----------------------------------------------------------------------------- Docker


def _read(out, instance_id: str) -> InstanceResult:
    return InstanceResult.from_dict(json.loads((instance_dir(out, instance_id) / "result.json").read_text()))


@pytest.mark.docker
def test_eval_of_two_demo_tasks_reports_costs_that_add_up(docker_client, base_image, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tasks = [DEMO["swe-srl-demo__pagekit-1"], DEMO["swe-srl-demo__lrucache-1"]]
    replay = ExpertReplay.from_scripts(load_scripts(tasks), tasks)  # tokenised like a model's turns
    summary = evaluate_tasks(replay.policy(AutoTokenizer.from_pretrained(tiny_model_dir)), tasks, tmp_path,
                             EvalConfig(workers=2), thread_safe_policy=True)
    assert summary["resolved"] == 2, summary["infrastructure_errors"]
    results = [_read(tmp_path, t.instance_id) for t in tasks]
    for r in results:
        agent, grading = ResourceUsage.from_dict(r.agent_usage), ResourceUsage.from_dict(r.report["usage"])
        assert (agent.containers, grading.containers, agent.unmeasured, grading.unmeasured) == (1, 1, 0, 0)
        assert ResourceUsage.from_dict(r.usage) == agent + grading
        for part in (agent, grading):
            assert part.cpu_seconds > 0 and part.memory_peak_bytes > 2**20 and part.container_seconds > 0
        assert grading.container_seconds <= r.report["duration"] + 0.5
        assert agent.container_seconds + grading.container_seconds <= r.wall_time + 0.5
    cost = summary["cost"]
    graded = cost["graded"]
    assert graded["containers"] == 4 and graded["unmeasured_containers"] == 0
    assert graded["cpu_seconds"] == pytest.approx(sum(r.usage["cpu_seconds"] for r in results), abs=0.002)
    assert graded["container_seconds"] == pytest.approx(sum(r.usage["container_seconds"] for r in results), abs=0.002)
    assert graded["tokens"] == sum(r.prompt_tokens + r.completion_tokens for r in results) > 0
    assert graded["tokens"] == summary["tokens"]["prompt"] + summary["tokens"]["completion"]
    assert graded["memory_peak_bytes_max"] == max(r.usage["memory_peak_bytes"] for r in results)
    assert graded["wall_seconds"] == summary["time_seconds"]["wall"]
    assert cost["per_resolved_instance"]["cpu_seconds"] == pytest.approx(graded["cpu_seconds"] / 2, abs=0.001)
    assert cost["infrastructure_failures"]["instances"] == 0


@pytest.mark.docker
def test_grading_infra_failure_keeps_what_its_containers_used(docker_client, base_image):
    task = DEMO["swe-srl-demo__lrucache-1"]
    slow = dataclasses.replace(task, test_cmd="sleep 30; " + task.test_cmd)
    replay = ExpertReplay.from_scripts(load_scripts([task]), [slow])
    config = HarnessConfig(grading=GradingConfig(test_timeout=1.0, on_test_timeout="infra"))
    with open_runner(config) as runner:
        graded = runner.run(replay.policy(), slow)
    assert graded.infra_error and "timed out" in graded.infra_error
    assert graded.usage.containers == 2 and graded.usage.unmeasured == 0
    assert graded.report.usage.container_seconds >= 1.0  # the grading container ran its 1 s of tests
    row = InstanceResult.of(graded)
    assert cost_summary([row])["infrastructure_failures"]["containers"] == 2
    assert cost_summary([row])["graded"]["containers"] == 0


def test_console_line_names_the_totals_the_cost_per_resolved_instance_and_the_failures():
    rows = [_row(_usage(3.0, 9.0, 300 * 2**20), resolved=True, prompt=1200, completion=34, wall=12.0),
            _row(_usage(1.0, 2.0, None), infra="engine gone", wall=1.0)]
    line = describe_cost(cost_summary(rows))
    assert line == ("cost: 3.0 CPU-s, 9.0 container-s, 1,234 tokens, 12.0 s wall, memory peak 300 MiB; "
                    "per resolved instance 3.0 CPU-s, 1,234 tokens; infrastructure failures spent 1.0 CPU-s apart")
