"""`train --method hybrid|rlvr`: GRPO over real Docker episodes of the demo tasks.

The tiny model samples the episodes it is trained on (the sampler's log-probs match the
trainer's: same weights, exact token ids); a scripted sampler (the expert's solution in one
episode, nonsense in the other) gives a group with signal and a graded, resolved patch; a
task whose image does not exist gives None rewards that are masked and counted, never 0."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from swe_srl.config import TrainConfig  # noqa: E402
from swe_srl.config_loader import load_config  # noqa: E402
from swe_srl.experts import DEFAULT_OUTPUT, ExpertReplay, load_scripts  # noqa: E402
from swe_srl.rl import checkpoint as ckpt  # noqa: E402
from swe_srl.rl.run_log import read_jsonl  # noqa: E402
from swe_srl.rl.trainer import train  # noqa: E402
from swe_srl.tasks import load_tasks  # noqa: E402

pytestmark = pytest.mark.docker
TASK = "swe-srl-demo__mdtable-1"  # a 7-step expert script


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir) -> Path:
    return tiny_model_dir  # the session's shared tiny model (tests/conftest.py)


def episode_config(model: Path, out: Path, method: str = "hybrid", **extra: Any) -> TrainConfig:
    settings = {
        "method": method, "model.path": str(model), "run.out_dir": str(out), "run.progress": False,
        "run.tensorboard": False, "run.max_steps": 2, "run.save_every": 2, "run.eval_every": 0,
        "optim.batch_size": 1, "optim.lr": 1e-3, "grpo.num_generations": 2, "grpo.max_resample_rounds": 1,
        "grpo.dynamic_sampling_eps": -1.0, "episodes.ids": [TASK], "episodes.harness.agent.max_steps": 3,
        "generation.max_new_tokens": 32, "episodes.harness.agent.command_timeout": 20.0,
        "episodes.harness.grading.harness_timeout": 120.0,
        # One worker: the scripted samplers below hand out completions in call order, which
        # parallel episodes would interleave (the preset may run several).
        "episodes.workers": 1,
    }
    settings.update(extra)
    return load_config(TrainConfig, "tiny-cpu", settings)


def metric_rows(run_dir: Path) -> list[dict]:
    return [row for row in read_jsonl(run_dir / "metrics.jsonl") if "reward/mean" in row]


@pytest.fixture(scope="module")
def demo_ready(docker_client, base_image) -> None:
    if not DEFAULT_OUTPUT.is_file():
        pytest.skip("no recorded demo expert trajectories")


def test_hybrid_trains_the_tiny_model_on_its_own_docker_episodes(demo_ready, tiny_model, tmp_path):
    # Two worker threads: the episodes of a group overlap, generation takes turns on one model.
    result = train(episode_config(tiny_model, tmp_path / "run", **{"episodes.workers": 2}))
    assert result.steps == 2 and result.final_checkpoint is not None
    assert ckpt.latest_checkpoint(tmp_path / "run").step == 2
    rows = metric_rows(tmp_path / "run")
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert row["episodes/count"] == 2 and row["episodes/infra_failures"] == 0 and row["reward/none"] == 0
        assert -1.0 <= row["reward/similarity"] <= 1.0 and row["reward/tests"] in (0.0, 0.5, 1.0)
        assert row["reward/mean"] == pytest.approx(0.5 * row["reward/similarity"] + row["reward/tests"])
        assert 1 <= row["episodes/turns_mean"] <= 3 and row["train/sequences"] >= 2
        # The episodes were sampled by the weights being trained, and the update scored the
        # very token ids that were sampled: the log-probs agree.
        assert row["train/logprob_gap"] < 1e-3
        assert row["completion_tokens"] > 0 and row["step_time"] > 0
    rollouts = read_jsonl(tmp_path / "run" / "rollouts.jsonl")
    assert [r["ids"] for r in rollouts] == [[TASK], [TASK]]


def test_episodes_run_on_ray_host_actors(demo_ready, tiny_model, tmp_path):
    """`episodes.hosts.backend: ray`: the group's episodes run through two host actors (both on
    this machine's engine); the run starts a local Ray and stops it when training ends."""
    ray = pytest.importorskip("ray")
    cfg = episode_config(tiny_model, tmp_path / "run", **{
        "run.max_steps": 1, "episodes.hosts.backend": "ray", "episodes.hosts.hosts": ["a=", "b="],
        "episodes.hosts.episodes_per_host": 1})
    assert train(cfg).steps == 1
    (row,) = metric_rows(tmp_path / "run")
    assert row["episodes/count"] == 2 and row["episodes/infra_failures"] == 0 and row["reward/none"] == 0
    assert row["train/logprob_gap"] < 1e-3
    assert row["cost/cpu_seconds"] > 0 and row["cost/container_seconds"] > 0  # read on the host actors
    assert not ray.is_initialized()


def _expert_then_nonsense(tokenizer) -> Any:
    """Per task: the expert's completions (one resolving episode), then nonsense (one
    episode of 4 format errors); episodes of a group run one after the other (1 worker)."""
    tasks = load_tasks("demo", ids=[TASK])
    script = [s.completion() for s in load_scripts(tasks)[TASK]]
    return ExpertReplay({TASK: script + ["no think tags, no action"] * 4}, tasks).policy(tokenizer)


@pytest.mark.parametrize("credit", ["episode", "turn"])
def test_a_resolving_episode_against_a_failing_one_gives_a_graded_signal(demo_ready, tiny_model, tmp_path, credit):
    from transformers import AutoTokenizer

    sampler = _expert_then_nonsense(AutoTokenizer.from_pretrained(tiny_model))
    cfg = episode_config(tiny_model, tmp_path / "run", **{"run.max_steps": 1, "episodes.harness.agent.max_steps": 9,
                                                          "grpo.dynamic_sampling_eps": 1e-4, "episodes.credit": credit})
    train(cfg, sampler=sampler)
    (row,) = metric_rows(tmp_path / "run")
    # Expert (7 steps): similarity 1 + resolved 1 -> 1.5; nonsense: 4 format errors (-1 each, the
    # agent gives up after the 4th) over max(4 turns, 7 expert steps) + empty patch 0 -> -2/7.
    nonsense = -4 / 7
    assert row["episodes/resolved_rate"] == 0.5 and row["reward/tests"] == 0.5
    assert row["reward/similarity"] == pytest.approx((1 + nonsense) / 2)
    assert row["reward/mean"] == pytest.approx((1.5 + 0.5 * nonsense) / 2)
    assert row["groups/kept"] == 1 and row["filter_rate"] == 0.0
    assert row["time/grading"] > 0 and row["train/grad_norm"] > 0
    # Window prompts re-render the history: no turn extends the one before, every turn is a row
    # of its own; each episode weighs as one unit (episodes.loss_weighting: episode).
    assert row["episodes/update_sequences"] == 7 + 4 and row["episodes/pack_breaks"] == 6 + 3
    assert row["train/sequences"] == 2
    # Costs per reward point: the containers and tokens of both episodes over their summed reward.
    assert row["cost/cpu_seconds"] > 0 and row["cost/tokens"] > 0 and row["cost/infra_cpu_seconds"] == 0
    assert row["cost/cpu_seconds_per_reward"] == pytest.approx(row["cost/cpu_seconds"] / (1.5 + 0.5 * nonsense),
                                                               abs=2e-3)
    assert row["cost/tokens_per_resolved"] == row["cost/tokens"]


def test_whole_conversation_episodes_train_as_one_masked_sequence_each(demo_ready, tiny_model, tmp_path):
    """agent.context=conversation: every turn is sampled from the last one's exact ids, so each
    Docker episode is one row of the update (no break, no cut) and still resolves and scores."""
    from transformers import AutoTokenizer

    sampler = _expert_then_nonsense(AutoTokenizer.from_pretrained(tiny_model))
    cfg = episode_config(tiny_model, tmp_path / "run", **{
        "run.max_steps": 1, "episodes.harness.agent.max_steps": 9, "grpo.dynamic_sampling_eps": 1e-4,
        "episodes.harness.agent.context": "conversation", "episodes.credit": "turn",
        "episodes.loss_weighting": "turn"})
    train(cfg, sampler=sampler)
    (row,) = metric_rows(tmp_path / "run")
    assert row["episodes/resolved_rate"] == 0.5 and row["groups/kept"] == 1
    assert row["episodes/update_turns"] == 7 + 4 and row["episodes/update_sequences"] == 2
    assert row["episodes/pack_breaks"] == 0 and row["episodes/pack_cuts"] == 0
    assert row["train/sequences"] == 7 + 4 and row["train/grad_norm"] > 0  # per-turn weighting: 11 units


def test_docker_episodes_one_step_ahead_train_on_the_previous_versions_samples(demo_ready, tiny_model, tmp_path):
    """rollout.async_ahead: step 2's episodes ran in Docker during step 1's update, sampled by
    the copy of the model at version 1 - 1 = 0; the run logs that and trains on them."""
    cfg = episode_config(tiny_model, tmp_path / "run", method="rlvr", **{
        "rollout.async_ahead": True, "episodes.harness.agent.context": "conversation", "episodes.workers": 2})
    result = train(cfg)
    rows = metric_rows(tmp_path / "run")
    assert result.steps == 2 and [row["rollout/staleness"] for row in rows] == [0.0, 1.0]
    for row in rows:
        assert row["episodes/count"] == 2 and row["episodes/infra_failures"] == 0
        assert row["episodes/update_sequences"] == 2 and row["episodes/pack_breaks"] == 0
    assert [row["rollout/weights_version"] for row in rows] == [1.0, 2.0]  # pushed after each update


def test_a_missing_image_gives_masked_none_rewards_not_zero(docker_client, tiny_model, tmp_path):
    rows_file = tmp_path / "tasks.jsonl"
    rows_file.write_text(json.dumps({
        "instance_id": "ghost__repo-1", "repo": "ghost/repo", "base_commit": "0" * 40,
        "problem_statement": "Nothing to see.", "image": "swe-srl/does-not-exist:0",
        "FAIL_TO_PASS": ["tests/test_x.py::test_x"]}) + "\n")
    cfg = episode_config(tiny_model, tmp_path / "run", method="rlvr",
                         **{"run.max_steps": 1, "episodes.tasks": str(rows_file), "episodes.ids": []})
    result = train(cfg)
    (row,) = metric_rows(tmp_path / "run")
    assert row["episodes/infra_failures"] == 2 and row["reward/none"] == 2
    assert row["train/sequences"] == 0 and row["train/loss"] == 0.0  # nothing scored, nothing trained
    assert read_jsonl(tmp_path / "run" / "rollouts.jsonl")[0]["rewards"] == [[None, None]]
    assert result.steps == 1
    # An episode run resumes like any other: the data order walks over tasks.
    resumed = train(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, max_steps=2)), resume=True)
    assert resumed.steps == 2 and [row["step"] for row in metric_rows(tmp_path / "run")] == [1, 2]
    assert [r["data_position"] for r in read_jsonl(tmp_path / "run" / "rollouts.jsonl")] == [
        {"epoch": 0, "cursor": 1}, {"epoch": 1, "cursor": 1}]


def test_cli_rlvr_starts_from_an_srl_run_folder(demo_ready, tiny_model, tmp_path, capsys):
    """The SRL -> RLVR curriculum: --model <srl run dir> starts from its latest checkpoint."""
    from swe_srl.cli import main
    from tests.rl.test_trainer import run, write_dataset

    srl = run(write_dataset(tmp_path / "data", 4, 0), tiny_model, tmp_path / "srl", "srl",
              **{"run.max_steps": 1, "run.eval_every": 0, "optim.batch_size": 2, "grpo.num_generations": 2})
    out = tmp_path / "rlvr"
    sets = ["run.max_steps=1", "run.eval_every=0", "run.progress=false", "optim.batch_size=1",
            "grpo.num_generations=2", "grpo.max_resample_rounds=1", f"episodes.ids=[{TASK}]",
            "episodes.harness.agent.max_steps=2", "generation.max_new_tokens=16"]
    with pytest.raises(SystemExit) as info:
        main(["train", "--method", "rlvr", "--model", str(tmp_path / "srl"), "-o", str(out),
              *[arg for s in sets for arg in ("--set", s)]])
    assert info.value.code == 0
    assert "rlvr: 1 steps" in capsys.readouterr().out
    assert ckpt.latest_checkpoint(out).step == 1 and srl.final_checkpoint is not None
    saved = load_config(TrainConfig, out / "config.yaml")
    assert saved.method == "rlvr" and saved.model.path == str(tmp_path / "srl")
    (row,) = metric_rows(out)
    # The episodes were sampled by the SRL checkpoint's weights, which the update then scored.
    assert row["episodes/count"] == 2 and row["train/logprob_gap"] < 1e-3


def test_a_broken_task_is_drawn_but_never_run_and_counted(demo_ready, tiny_model, tmp_path):
    """The calibration calls the second task broken: the step runs only TASK's episodes."""
    from swe_srl.calibration import Calibration, TaskCalibration
    from swe_srl.schemas import TestReport

    other = next(t for t in load_tasks("demo") if t.instance_id != TASK)
    miss = TestReport(instance_id=other.instance_id)
    Calibration().with_entry(TaskCalibration.of(other, 1, [miss], [miss])).save(tmp_path / "calib.json")
    config = episode_config(tiny_model, tmp_path / "run", method="rlvr", **{
        "episodes.ids": [TASK, other.instance_id], "optim.batch_size": 2, "run.max_steps": 1, "run.save_every": 0,
        "episodes.calibration": str(tmp_path / "calib.json")})
    assert train(config).steps == 1
    [row] = metric_rows(tmp_path / "run")
    assert row["episodes/skipped_broken"] == 1 and row["episodes/skipped_flaky"] == 0
    assert row["episodes/count"] == 2 and row["groups/drawn"] == 2  # G=2 episodes, of TASK only
    [drawn] = read_jsonl(tmp_path / "run" / "rollouts.jsonl")
    assert sorted(drawn["ids"]) == sorted([TASK, other.instance_id])
    assert drawn["rewards"][drawn["ids"].index(other.instance_id)] == []
