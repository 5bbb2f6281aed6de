"""One masked sequence per episode (``episodes.pack``) and how episodes weigh in the loss
(``episodes.loss_weighting``): turns that extend each other join into one row with the
observations masked, the per-turn weighting of that row is the loss and gradient of one
sequence per turn, and per-episode weighting is not (a short success is not outweighed by long
failures)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from swe_srl.agent import ConversationPrompts, Episode, Turn  # noqa: E402
from swe_srl.config import TrainConfig  # noqa: E402
from swe_srl.config_loader import load_config  # noqa: E402
from swe_srl.errors import ConfigError  # noqa: E402
from swe_srl.harness import GradedEpisode  # noqa: E402
from swe_srl.policy.base import GenerationConfig, Sample  # noqa: E402
from swe_srl.prompts import build_messages, observation_message  # noqa: E402
from swe_srl.rl import grpo  # noqa: E402
from swe_srl.rl.distributed import Dist  # noqa: E402
from swe_srl.rl.engine import RolloutEngine  # noqa: E402
from swe_srl.rl.episode_pack import pack_turns, weigh  # noqa: E402
from swe_srl.rl.sources import EpisodeRollout, episode_rows, turn_sequences  # noqa: E402
from swe_srl.rl.update import policy_update  # noqa: E402
from swe_srl.schemas import Task  # noqa: E402

TASK = Task(instance_id="t", repo="o/r", base_commit="0" * 40, problem_statement="Fix the off-by-one in pages().")


def _sample(prompt, completion, logprobs=None, version=None) -> Sample:
    return Sample("x", tuple(prompt), tuple(completion), None if logprobs is None else tuple(logprobs), "stop",
                  weights_version=version)


# --------------------------------------------------------------------------- packing


def test_turns_that_extend_each_other_are_one_row_with_the_observations_masked():
    first = _sample([1, 2, 3], [4, 5], [-0.1, -0.2])
    second = _sample([1, 2, 3, 4, 5, 8, 9], [6], [-0.3])  # 8, 9: the observation turn's tokens
    third = _sample([1, 2, 3, 4, 5, 8, 9, 6, 7], [10, 11], [-0.4, -0.5])
    (row,), stats = pack_turns([first, second, third])
    assert row.prompt_ids == (1, 2, 3) and row.completion_ids == (4, 5, 8, 9, 6, 7, 10, 11)
    assert row.loss_mask == (1, 1, 0, 0, 1, 0, 1, 1) and row.turn_of == (0, 0, -1, -1, 1, -1, 2, 2)
    assert row.logprobs == (-0.1, -0.2, 0.0, 0.0, -0.3, 0.0, -0.4, -0.5) and row.turns == (0, 1, 2)
    assert (stats.turns, stats.sequences, stats.breaks, stats.cuts) == (3, 1, 0, 0)
    # one row per turn when packing is off: today's layout
    rows, stats = pack_turns([first, second, third], pack=False)
    assert [r.prompt_ids for r in rows] == [first.prompt_ids, second.prompt_ids, third.prompt_ids]
    assert all(set(r.loss_mask) == {1} for r in rows) and stats.sequences == 3


def test_a_turn_that_does_not_extend_the_row_or_passes_the_limit_starts_its_own():
    first = _sample([1, 2, 3], [4, 5])
    window = _sample([1, 2, 3, 9, 9], [6])  # a sliding-window prompt: re-rendered, not extended
    extends = _sample([1, 2, 3, 9, 9, 6, 7], [8])
    long = _sample([1, 2, 3, 9, 9, 6, 7, 8, 7, 7, 7], [4, 4])
    rows, stats = pack_turns([first, window, extends, long], max_tokens=12)
    assert [r.turns for r in rows] == [(0,), (1, 2), (3,)]
    assert rows[1].prompt_ids == window.prompt_ids and rows[2].prompt_ids == long.prompt_ids  # its own full prompt
    assert (stats.breaks, stats.cuts, stats.sequences) == (1, 1, 3)
    # another weights version never shares a row (its log-probs are another policy's)
    rows, stats = pack_turns([_sample([1], [2], [0.0], version=3), _sample([1, 2, 5], [6], [0.0], version=4)])
    assert len(rows) == 2 and stats.breaks == 1


def test_weights_per_turn_per_episode_and_per_token():
    turns = [_sample([1], [2, 3]), _sample([1, 2, 3, 9], [4, 5, 6, 7])]
    rows, _ = pack_turns(turns)
    lengths = [2, 4]
    (turn,) = weigh(rows, [0.5, -1.0], lengths, "turn")
    assert turn.advantages == (0.5, 0.5, 0.0, -1.0, -1.0, -1.0, -1.0)
    assert turn.unit_weights == pytest.approx((1 / 2, 1 / 2, 0, 1 / 4, 1 / 4, 1 / 4, 1 / 4)) and turn.units == 2
    (episode,) = weigh(rows, [0.5, -1.0], lengths, "episode")
    assert episode.unit_weights == pytest.approx((1 / 6,) * 2 + (0,) + (1 / 6,) * 4) and episode.units == 1
    (token,) = weigh(rows, [0.5, -1.0], lengths, "token")
    assert token.unit_weights == (1, 1, 0, 1, 1, 1, 1) and token.units == 6
    split = weigh(pack_turns(turns, pack=False)[0], [0.5, -1.0], lengths, "episode")  # rows share the episode
    assert [r.units for r in split] == [1, 0] and split[1].unit_weights == (1 / 6,) * 4


def test_a_short_success_weighs_as_much_as_long_failures_only_per_episode():
    """One 10-turn success against seven 30-turn failures (G=8): per turn the failures carry
    three quarters of the gradient, per episode each side carries the same (equal and opposite
    advantages)."""
    g = torch.Generator().manual_seed(0)

    def episode(turns: int, reward: float) -> EpisodeRollout:
        ids: list[int] = list(range(1, 40))
        out = []
        for _ in range(turns):
            completion = torch.randint(1, 90, (int(torch.randint(3, 30, (1,), generator=g)),), generator=g).tolist()
            out.append(Turn([], _sample(ids, completion), None, ""))
            ids = ids + completion + [7, 7, 7]
        return EpisodeRollout(GradedEpisode(TASK, episode=Episode(result=None, turns=out)), reward=reward)

    rollouts = [episode(10, 1.0)] + [episode(30, 0.0) for _ in range(7)]
    advantages = grpo.group_advantages(grpo.rewards_tensor([r.reward for r in rollouts]), 8)
    _, per_turn, _ = turn_sequences(rollouts, advantages)
    shares = {}
    for weighting in ("turn", "episode"):
        rows, stats = episode_rows(rollouts, per_turn.tolist(), weighting)
        assert stats.sequences == 8 and stats.breaks == 0
        width = max(len(r.completion_ids) for _, r in rows)
        logprobs = torch.zeros(len(rows), width, requires_grad=True)
        mask = torch.zeros(len(rows), width)
        adv, weights = torch.zeros(len(rows), width), torch.zeros(len(rows), width)
        for i, (_, r) in enumerate(rows):
            n = len(r.completion_ids)
            mask[i, :n], adv[i, :n] = torch.tensor(r.loss_mask, dtype=torch.float32), torch.tensor(r.advantages)
            weights[i, :n] = torch.tensor(r.unit_weights)
        loss, _ = grpo.grpo_loss(logprobs, None, adv, mask, unit_weights=weights,
                                 num_sequences=sum(r.units for _, r in rows))
        loss.backward()
        mass = logprobs.grad.abs().sum(dim=1)
        shares[weighting] = float(mass[0] / mass.sum())
    assert shares["turn"] == pytest.approx(10 / (10 + 30), rel=1e-5)  # 7 x 30 failure turns vs 7 x 10
    assert shares["episode"] == pytest.approx(0.5, rel=1e-5)


# --------------------------------------------------------------------------- the update


@pytest.fixture(scope="module")
def conversation_episodes(tiny_model_dir):
    """Three whole-conversation episodes sampled by the tiny model from token ids (the agent's
    own :class:`ConversationPrompts`), with fixed observation texts in place of a sandbox."""
    from swe_srl.policy import PolicyConfig, load_policy

    policy = load_policy(PolicyConfig(backend="hf", model=str(tiny_model_dir)))
    prompts = ConversationPrompts.of(policy)
    gen = GenerationConfig(max_new_tokens=10, temperature=1.0, seed=0)
    rollouts = []
    for e, (turns, reward) in enumerate([(3, 1.0), (4, 0.0), (2, 0.0)]):
        sample = policy.generate([build_messages(TASK.problem_statement)], gen)[0][0]
        out = [Turn([], sample, None, "")]
        for k in range(1, turns):
            sample = prompts.generate(sample, observation_message(f"output {e}.{k}\n" * (k + 1)),
                                      GenerationConfig(max_new_tokens=10, temperature=1.0, seed=e * 10 + k))
            out.append(Turn([], sample, None, ""))
        rollouts.append(EpisodeRollout(GradedEpisode(TASK, episode=Episode(result=None, turns=out)), reward=reward))
    return rollouts, policy.tokenizer


def _update(tiny_model_dir, tokenizer, sequences, advantages, valid, overrides):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    cfg = load_config(TrainConfig, None, {"method": "rlvr", "optim.lr": 1.0, "optim.max_grad_norm": 0.0,
                                          "generation.max_new_tokens": 10, "generation.temperature": 1.0,
                                          **overrides})
    engine = cfg.rollout.engine
    session = SimpleNamespace(config=cfg, dist=Dist(), tokenizer=tokenizer, model=model, step=0, bf16=False,
                              optimizer=torch.optim.SGD(model.parameters(), lr=1.0), engine=RolloutEngine(engine, None))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    metrics = policy_update(session, sequences, advantages, valid, None, max_tokens=10)
    return {n: p.detach() - before[n] for n, p in model.named_parameters()}, metrics


@pytest.mark.parametrize("overrides", [
    {"grpo.loss_aggregation": "seq-mean-token-mean"},
    {"grpo.loss_aggregation": "token-mean"},
    {"grpo.loss_aggregation": "seq-mean-token-sum-norm"},
    # the sampler's log-probs as the ratio's old ones: each lands on its own token in the row
    {"rollout.engine": "vllm", "grpo.rollout_correction": "bypass"},
    {"rollout.engine": "vllm", "grpo.rollout_correction": "tis"},
])
def test_per_turn_weighting_of_one_masked_sequence_is_the_per_turn_update(tiny_model_dir, conversation_episodes,
                                                                          overrides):
    rollouts, tokenizer = conversation_episodes
    advantages = grpo.group_advantages(grpo.rewards_tensor([r.reward for r in rollouts]), 3)
    samples, per_turn, valid = turn_sequences(rollouts, advantages)
    today, today_metrics = _update(tiny_model_dir, tokenizer, samples, per_turn, valid, overrides)

    rows, stats = episode_rows(rollouts, per_turn.tolist(), "turn")
    assert stats.sequences == 3 and stats.turns == 9 and stats.breaks == stats.cuts == 0
    row_valid = torch.ones(len(rows), dtype=torch.bool)
    packed, metrics = _update(tiny_model_dir, tokenizer, [r for _, r in rows], torch.zeros(len(rows)), row_valid,
                              overrides)
    for name in today:
        scale = float(today[name].abs().max())
        assert float((today[name] - packed[name]).abs().max()) <= 1e-4 * scale + 1e-9, name
    assert any(float(d.abs().max()) > 0 for d in today.values())
    for key in ("train/loss", "train/sequences", "train/grad_norm", "train/ratio_mean"):
        assert metrics[key] == pytest.approx(today_metrics[key], rel=1e-4, abs=1e-7), key
    # the shared prefix went through the model once per episode, not once per turn
    assert metrics["train/forward_tokens"] < 0.75 * today_metrics["train/forward_tokens"]

    # cut at a token limit: more rows (each from its turn's own prompt), the same update
    cut_rows, cut_stats = episode_rows(rollouts, per_turn.tolist(), "turn", max_tokens=150)
    assert cut_stats.cuts > 0
    cut, cut_metrics = _update(tiny_model_dir, tokenizer, [r for _, r in cut_rows], torch.zeros(len(cut_rows)),
                               torch.ones(len(cut_rows), dtype=torch.bool), overrides)
    assert cut_metrics["train/loss"] == pytest.approx(today_metrics["train/loss"], rel=1e-4, abs=1e-7)

    # per episode is another loss: the 4-turn episode no longer weighs twice the 2-turn one
    if overrides.get("grpo.loss_aggregation") != "token-mean":
        rows, _ = episode_rows(rollouts, per_turn.tolist(), "episode")
        per_episode, episode_metrics = _update(tiny_model_dir, tokenizer, [r for _, r in rows],
                                               torch.zeros(len(rows)), row_valid, overrides)
        assert episode_metrics["train/sequences"] == 3
        gap = max(float((per_episode[n] - packed[n]).abs().max() / packed[n].abs().max().clamp(min=1e-12))
                  for n in packed)
        assert gap > 0.05


def test_a_left_out_episode_stays_out_and_settings_are_checked(tiny_model_dir, conversation_episodes):
    rollouts, tokenizer = conversation_episodes
    rollouts = [rollouts[0], EpisodeRollout(rollouts[1].graded, reward=None), rollouts[2]]
    advantages = grpo.group_advantages(grpo.rewards_tensor([r.reward for r in rollouts]), 3)
    _, per_turn, _ = turn_sequences(rollouts, advantages)
    rows, _ = episode_rows(rollouts, per_turn.tolist(), "episode")
    valid = torch.tensor([rollouts[i].reward is not None for i, _ in rows])
    _, metrics = _update(tiny_model_dir, tokenizer, [r for _, r in rows], torch.zeros(len(rows)), valid, {})
    assert metrics["train/sequences"] == 2
    with pytest.raises(ConfigError, match="episodes.loss_weighting: .sample. is not one of"):
        load_config(TrainConfig, None, {"episodes.loss_weighting": "sample"})
    with pytest.raises(ConfigError, match="episodes.pack_max_tokens"):
        load_config(TrainConfig, None, {"episodes.pack_max_tokens": -1})
    with pytest.raises(ConfigError, match="agent.context=conversation samples each turn from token ids"):
        load_config(TrainConfig, None, {"method": "rlvr", "rollout.engine": "vllm",
                                        "episodes.harness.agent.context": "conversation"})
