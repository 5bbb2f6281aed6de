"""Episode sources of rlvr / hybrid training without Docker: expert loading, None (not 0) for
infrastructure failures, and credit assignment (every turn of an episode gets its advantage;
only the policy's own tokens carry loss)."""

from __future__ import annotations

from contextlib import nullcontext

import pytest

torch = pytest.importorskip("torch")

from swe_srl.actions import make_action, render_xml  # noqa: E402
from swe_srl.agent import Episode, Turn  # noqa: E402
from swe_srl.config import TrainConfig  # noqa: E402
from swe_srl.config_loader import load_config  # noqa: E402
from swe_srl.errors import ConfigError, InfrastructureError  # noqa: E402
from swe_srl.experts import DEFAULT_OUTPUT  # noqa: E402
from swe_srl.harness import GradedEpisode  # noqa: E402
from swe_srl.policy.base import Sample  # noqa: E402
from swe_srl.rl import grpo  # noqa: E402
from swe_srl.rl.distributed import Dist  # noqa: E402
from swe_srl.rl.logprobs import TokenBatch, completion_logprobs  # noqa: E402
from swe_srl.rl.records import Group  # noqa: E402
from swe_srl.rl.sources import (  # noqa: E402
    EpisodeRollout,
    EpisodeSource,
    StepTargetSource,
    episode_totals,
    load_expert_actions,
    turn_sequences,
)
from swe_srl.schemas import Task, TestReport  # noqa: E402

SUBMIT = make_action("submit", {})

def test_expert_actions_come_from_the_recorded_demo_trajectories(tmp_path):
    from swe_srl.tasks import load_tasks

    if not DEFAULT_OUTPUT.is_file():
        pytest.skip("no recorded demo experts")
    tasks = load_tasks("demo")
    experts = load_expert_actions(DEFAULT_OUTPUT, tasks)
    assert set(experts) >= {t.instance_id for t in tasks}
    assert all(actions[-1] == render_xml(SUBMIT) for actions in experts.values())
    stranger = Task(instance_id="nobody__x-1", repo="nobody/x", base_commit="0" * 40, problem_statement="?")
    with pytest.raises(ConfigError, match="no usable expert trajectory for 1 task"):
        load_expert_actions(DEFAULT_OUTPUT, [stranger])
    with pytest.raises(ConfigError, match="expert trajectories not found"):
        load_expert_actions(tmp_path / "none.jsonl", tasks)


def test_a_leaky_expert_is_never_the_hybrid_reference(tmp_path):
    """An expert that read the fix from the history (``git log --all``) would teach the same
    cheat through hybrid's similarity: it is passed over for a clean one, or refused."""
    import dataclasses
    import json

    from swe_srl.schemas import Step, Trajectory
    from swe_srl.tasks import load_tasks

    if not DEFAULT_OUTPUT.is_file():
        pytest.skip("no recorded demo experts")
    task = load_tasks("demo")[0]
    clean = next(Trajectory.from_dict(json.loads(line)) for line in DEFAULT_OUTPUT.read_text().splitlines()
                 if line.strip() and json.loads(line)["task_id"] == task.instance_id)
    peek = Step(action=make_action("bash", {"command": "cd /testbed && git log --all -p | head -200"}))
    leaky = dataclasses.replace(clean, steps=(peek, *clean.steps))
    path = tmp_path / "experts.jsonl"
    path.write_text(json.dumps(leaky.to_dict()) + "\n")
    with pytest.raises(ConfigError, match=r"no usable expert trajectory for 1 task.*1 only leaky, e.g. git-"):
        load_expert_actions(path, [task])
    path.write_text(json.dumps(leaky.to_dict()) + "\n" + json.dumps(clean.to_dict()) + "\n")
    assert load_expert_actions(path, [task])[task.instance_id] == [render_xml(s.action) for s in clean.steps]


def test_a_missing_image_gives_a_none_reward_not_zero():
    if not DEFAULT_OUTPUT.is_file():
        pytest.skip("no recorded demo experts")
    from swe_srl.tasks import load_tasks

    task = load_tasks("demo")[0]
    cfg = load_config(TrainConfig, None, ["method=hybrid"])
    source = EpisodeSource(cfg, sampler=None, tasks=[task])  # never asked: no sandbox opens
    missing = InfrastructureError("image swe-srl/does-not-exist:0 is not present")
    source.runner.image = lambda task: nullcontext(missing)  # the runner's image provider
    out = source.rollout(task)
    assert out.reward is None and out.components == {"tests": None, "similarity": None}
    assert "does-not-exist" in out.graded.infra_error and out.turns == [] and out.num_tokens == 0
    fine = EpisodeRollout(GradedEpisode(task), reward=1.0, components={"tests": 1.0})
    stats = episode_totals([out, fine]).all_sum(Dist()).metrics()
    assert stats["episodes/infra_failures"] == 1 and stats["episodes/count"] == 2
    assert stats["reward/tests"] == 1.0  # the failure is not averaged in as a 0


def test_sources_score_with_the_reward_section():
    cfg = load_config(TrainConfig, None, ["reward.compare=call", "reward.similarity=lcs"])
    fn = StepTargetSource(cfg, sampler=None, targets=[]).reward_fn
    assert (fn.settings.similarity, fn.settings.compare) == ("lcs", "call")
    assert StepTargetSource(load_config(TrainConfig, None), None, []).reward_fn.settings.compare == "content"


# --------------------------------------------------------------------------- credit assignment


def _turn(prompt: list[int], completion: list[int]) -> Turn:
    sample = Sample(text="x", prompt_ids=tuple(prompt), completion_ids=tuple(completion), logprobs=None,
                    finish_reason="stop")
    return Turn(messages=[], sample=sample, action=None, observation="")


TASK = Task(instance_id="t", repo="o/r", base_commit="0" * 40, problem_statement="?")


def _rollout(turns: list[Turn], reward: float | None) -> EpisodeRollout:
    return EpisodeRollout(GradedEpisode(TASK, episode=Episode(result=None, turns=turns)), reward=reward)


def test_every_turn_of_an_episode_carries_its_advantage_on_its_exact_ids():
    first = _rollout([_turn([1, 2], [3, 4]), _turn([1, 2, 3, 4, 9, 9], [5])], 1.0)
    second = _rollout([_turn([1, 2], [6, 7, 8])], 0.0)
    broken = _rollout([_turn([1, 2], [3])], None)
    advantages = grpo.group_advantages(grpo.rewards_tensor([1.0, 0.0, None]), 3)
    samples, per_turn, valid = turn_sequences([first, second, broken], advantages)
    assert [s.completion_ids for s in samples] == [(3, 4), (5,), (6, 7, 8), (3,)]
    assert [s.prompt_ids for s in samples][1] == (1, 2, 3, 4, 9, 9)  # untouched, never re-tokenised
    assert per_turn[0] == per_turn[1] == advantages[0] > 0 > per_turn[2] == advantages[1]
    assert valid.tolist() == [True, True, True, False]  # the infra episode: left out, not scored
    assert per_turn[3] == 0.0
    assert turn_sequences([], torch.zeros(0))[1].numel() == 0


def test_per_turn_credit_adds_each_turns_own_similarity_share():
    # Two episodes, same tests result; the first has a good turn and a malformed one.
    first = EpisodeRollout(GradedEpisode(TASK, episode=Episode(result=None, turns=[_turn([1], [2]), _turn([1], [3])])),
                           components={"tests": 0.0, "similarity": 0.0}, reward=0.0, turn_scores=(1.0, -1.0))
    second = EpisodeRollout(GradedEpisode(TASK, episode=Episode(result=None, turns=[_turn([1], [4])])),
                            components={"tests": 0.0, "similarity": 0.5}, reward=0.25, turn_scores=(0.5,))
    rewards = grpo.rewards_tensor([0.0, 0.25])
    advantages = grpo.group_advantages(rewards, 2)
    divisors = grpo.advantage_divisors(rewards, 2)
    _, episode_level, _ = turn_sequences([first, second], advantages)
    assert episode_level[0] == episode_level[1]  # the good and the malformed turn get the same
    per_divisor = torch.repeat_interleave(divisors, 2)
    _, per_turn, _ = turn_sequences([first, second], advantages, per_divisor, similarity_weight=0.5)
    d = float(divisors[0])
    assert per_turn.tolist() == pytest.approx([float(advantages[0]) + 0.5 * 1.0 / d,
                                               float(advantages[0]) - 0.5 * 1.0 / d,
                                               float(advantages[1])])  # its only turn is the episode
    assert per_turn[0] > 0 > per_turn[1]


class Bigram(torch.nn.Module):
    """Logits at position t depend on token t only: a gradient reaches token t's embedding
    exactly when position t's prediction is in the loss."""

    def __init__(self, vocab: int = 16) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, 8)
        self.head = torch.nn.Linear(8, vocab)

    def forward(self, input_ids, attention_mask=None, position_ids=None, logits_to_keep=0, use_cache=False):
        logits = self.head(self.embed(input_ids))
        return type("Out", (), {"logits": logits[:, -logits_to_keep:] if logits_to_keep else logits})


def test_only_policy_tokens_carry_loss_observations_in_the_prompt_do_not():
    torch.manual_seed(0)
    # Turn 2's prompt holds turn 1's action (3, 4) and an observation (10, 11, 12).
    first = _rollout([_turn([1, 2], [3, 4]), _turn([1, 3, 4, 10, 11, 12, 2], [5, 6])], 1.0)
    second = _rollout([_turn([1, 2], [7])], 0.0)
    samples, advantages, valid = turn_sequences([first, second],
                                                grpo.group_advantages(grpo.rewards_tensor([1.0, 0.0]), 2))
    model = Bigram()
    batch = TokenBatch.build([s.prompt_ids for s in samples], [s.completion_ids for s in samples], 0,
                             torch.device("cpu"))
    assert batch.completion_mask.tolist() == [[1, 1], [1, 1], [1, 0]]
    logprobs = completion_logprobs(model, batch)
    loss, metrics = grpo.grpo_loss(logprobs, None, advantages, batch.completion_mask, sample_mask=valid)
    loss.backward()
    touched = {i for i in range(16) if model.embed.weight.grad[i].abs().sum() > 0}
    # Predicting a completion uses the last prompt token and the completion's own tokens but
    # its last: (2 -> 3, 3 -> 4), (2 -> 5, 5 -> 6), (2 -> 7). Observation tokens 10-12, the
    # earlier prompt tokens and the padding never get a gradient.
    assert touched == {2, 3, 5}
    assert metrics["tokens"] == 5 and metrics["sequences"] == 3


# --------------------------------------------------------------------------- calibration


def _calibrated(tmp_path, verdicts: dict[str, str]):
    """Tasks named by ``verdicts`` and a calibration file giving each its verdict."""
    from swe_srl.calibration import Calibration, TaskCalibration

    ok = TestReport(instance_id="x", statuses={}, resolved=True)
    bad = TestReport(instance_id="x", statuses={}, resolved=False)
    runs = {"stable": ([ok, ok], [bad, bad]), "flaky": ([ok, bad], [bad, bad]), "broken": ([bad, bad], [bad, bad])}
    tasks = [Task(instance_id=name, repo="o/r", base_commit="0" * 40, problem_statement="?") for name in verdicts]
    calibration = Calibration()
    for task, verdict in zip(tasks, verdicts.values()):
        calibration = calibration.with_entry(TaskCalibration.of(task, 2, *runs[verdict]))
    calibration.save(tmp_path / "calibration.json")
    return tasks, str(tmp_path / "calibration.json")


def test_broken_and_skipped_flaky_tasks_are_drawn_but_never_run_and_counted(tmp_path):
    tasks, path = _calibrated(tmp_path, {"s": "stable", "f": "flaky", "b": "broken"})
    cfg = load_config(TrainConfig, None, ["method=rlvr", f"episodes.calibration={path}"])
    source = EpisodeSource(cfg, sampler=None, tasks=tasks)  # no episode runs: only skipped tasks are drawn
    assert source.task_weights == {"s": 1.0, "f": 0.0, "b": 0.0}
    assert source.draw([0, 1, 2], [1, 2, 2]) == []
    metrics = source.metrics([], Dist())
    assert (metrics["episodes/skipped_broken"], metrics["episodes/skipped_flaky"]) == (2, 1)
    assert source.metrics([], Dist())["episodes/skipped_broken"] == 0  # per step: reset
    kept = EpisodeSource(load_config(TrainConfig, None, ["method=rlvr", f"episodes.calibration={path}",
                                                         "episodes.flaky=keep"]), None, tasks)
    assert kept.task_weights == {"s": 1.0, "f": 1.0, "b": 0.0}


def test_a_downweighted_flaky_task_scales_its_episodes_advantages(tmp_path):
    tasks, path = _calibrated(tmp_path, {"s": "stable", "f": "flaky"})
    cfg = load_config(TrainConfig, None, ["method=rlvr", f"episodes.calibration={path}", "episodes.flaky=downweight",
                                          "episodes.flaky_weight=0.25", "grpo.num_generations=2"])
    source = EpisodeSource(cfg, sampler=None, tasks=tasks)
    rollouts = {t.instance_id: [EpisodeRollout(GradedEpisode(t, episode=Episode(result=None, turns=[_turn([1], [2])])),
                                               reward=r) for r in (1.0, 0.0)] for t in tasks}
    rewards = grpo.rewards_tensor([1.0, 0.0, 1.0, 0.0])
    advantages, divisors = grpo.group_advantages(rewards, 2), grpo.advantage_divisors(rewards, 2)
    groups = [Group(i, t.instance_id, rollouts[t.instance_id], [1.0, 0.0], [1, 1]) for i, t in enumerate(tasks)]
    rows, _, valid = source.sequences(groups, advantages, divisors)  # one row per episode, advantages per position
    assert all(len(row.advantages) == 1 for row in rows)
    assert [row.advantages[0] for row in rows] == pytest.approx([float(advantages[0]), float(advantages[1]),
                                                                 0.25 * float(advantages[2]),
                                                                 0.25 * float(advantages[3])])
    assert valid.tolist() == [True] * 4


def test_a_calibration_that_skips_every_task_is_a_config_error(tmp_path):
    tasks, path = _calibrated(tmp_path, {"b": "broken", "f": "flaky"})
    cfg = load_config(TrainConfig, None, ["method=rlvr", f"episodes.calibration={path}"])
    with pytest.raises(ConfigError, match="every task is skipped by the calibration .*1 broken, 1 flaky"):
        EpisodeSource(cfg, sampler=None, tasks=tasks)
    with pytest.raises(ConfigError, match="episodes.flaky_weight must be in"):
        load_config(TrainConfig, None, ["episodes.flaky_weight=0"])
    with pytest.raises(ConfigError):
        load_config(TrainConfig, None, ["episodes.flaky=sometimes"])
