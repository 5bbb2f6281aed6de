"""GRPO tensor math against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from swe_srl.errors import ConfigError, InputError
from swe_srl.rl.grpo import (
    AdvantageScale,
    GrpoLossConfig,
    LossAggregation,
    aggregate,
    clipped_surrogate,
    dynamic_sampling_mask,
    group_advantages,
    group_stats,
    grpo_loss,
    k3_kl,
    rewards_tensor,
)

EPS = 1e-4


def close(tensor, expected, tol=1e-5):
    return torch.allclose(torch.as_tensor(tensor, dtype=torch.float32),
                          torch.tensor(expected, dtype=torch.float32), atol=tol)


# --------------------------------------------------------------------------- advantages


def test_group_advantages_by_hand():
    # Group 1: [1, 0, 1, 0] mean 0.5, population std 0.5 -> +-0.5 / 0.5001.
    # Group 2: [0, 0, 0, 3] mean 0.75, std sqrt((3*0.5625 + 5.0625)/4) = sqrt(1.6875).
    rewards = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 3.0])
    adv = group_advantages(rewards, 4)
    s2 = math.sqrt(1.6875)
    a1 = 0.5 / (0.5 + EPS)
    assert close(adv, [a1, -a1, a1, -a1, -0.75 / (s2 + EPS), -0.75 / (s2 + EPS), -0.75 / (s2 + EPS),
                       2.25 / (s2 + EPS)])


def test_nan_rewards_are_masked_out_of_the_statistics():
    # [1, NaN, 0, 0.5]: stats over {1, 0, 0.5}: mean 0.5, std sqrt(1/6).
    rewards = rewards_tensor([1.0, None, 0.0, 0.5])
    assert math.isnan(float(rewards[1]))
    mean, std, count = group_stats(rewards, 4)
    assert close(mean, [0.5]) and close(std, [math.sqrt(1 / 6)]) and count.tolist() == [3]
    adv = group_advantages(rewards, 4)
    d = math.sqrt(1 / 6) + EPS
    assert close(adv, [0.5 / d, 0.0, -0.5 / d, 0.0])


def test_all_nan_group_and_single_valid_reward_give_zero_advantage():
    rewards = rewards_tensor([None, None, 0.7, None])
    assert close(group_advantages(rewards, 2), [0.0, 0.0, 0.0, 0.0])


def test_scale_modes():
    rewards = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 4.0])
    none = group_advantages(rewards, 2, scale="none")
    assert close(none, [0.5, -0.5, 0.0, 0.0, -1.0, 1.0])  # Dr. GRPO: centred only
    # Batch std: population std of all six rewards (mean 7/6).
    batch_std = torch.tensor([1.0, 0.0, 0.0, 0.0, 2.0, 4.0]).std(correction=0)
    batch = group_advantages(rewards, 2, scale=AdvantageScale.BATCH)
    assert close(batch, (none / (batch_std + EPS)).tolist())
    group = group_advantages(rewards, 2, scale="group")
    assert close(group, [0.5 / (0.5 + EPS), -0.5 / (0.5 + EPS), 0.0, 0.0, -1 / (1 + EPS), 1 / (1 + EPS)])


def test_rewards_must_split_into_groups():
    with pytest.raises(InputError, match="groups of 4"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError):
        group_advantages(torch.zeros(4), 2, scale="sometimes")


def test_dynamic_sampling_drops_zero_std_groups():
    rewards = rewards_tensor([0.1, 0.1, 0.1, 0.5, 0.9, 0.5, None, 0.3, None, -1.0, -1.0, -1.0])
    # group 1 all equal (float mean of 0.1s is not exactly 0.1); group 3 has one valid reward.
    assert dynamic_sampling_mask(rewards, 3).tolist() == [False, True, False, False]
    assert dynamic_sampling_mask(rewards, 3, threshold=0.2).tolist() == [False, False, False, False]
    assert dynamic_sampling_mask(rewards, 3, threshold=1e-6).tolist() == [False, True, False, False]
    assert dynamic_sampling_mask(rewards, 3, threshold=-1.0).tolist() == [True] * 4  # negative: keep all


# --------------------------------------------------------------------------- surrogate and KL


def test_clipped_surrogate_both_sides():
    # ratios e^{log r}: 1.5 (A>0, clipped high), 0.5 (A<0, clipped low),
    #                   0.5 (A>0, not clipped),  1.5 (A<0, not clipped), 1.1 (inside).
    ratios = torch.tensor([[1.5, 0.5, 0.5, 1.5, 1.1]])
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0, 2.0]])
    old = torch.zeros(1, 5)
    mask = torch.ones(1, 5, dtype=torch.bool)
    terms = clipped_surrogate(ratios.log(), old, adv, mask, clip_low=0.2, clip_high=0.28)
    # -min(rA, clip(r)A): [-1.28, 0.8, -0.5, 1.5, -2.2]
    assert close(terms.loss, [[-1.28, 0.8, -0.5, 1.5, -2.2]])
    assert terms.clipped_high.tolist() == [[True, False, False, False, False]]
    assert terms.clipped_low.tolist() == [[False, True, False, False, False]]
    assert close(terms.ratio, ratios.tolist())


def test_clipped_tokens_carry_no_gradient():
    logp = torch.tensor([[math.log(1.5), math.log(1.1)]], requires_grad=True)
    terms = clipped_surrogate(logp, torch.zeros(1, 2), torch.tensor([1.0]), torch.ones(1, 2, dtype=torch.bool))
    terms.loss.sum().backward()
    # d(-r A)/dlogp = -r A = -1.1 inside the clip range, 0 where clipped.
    assert close(logp.grad, [[0.0, -1.1]])


def test_masked_padding_with_minus_inf_stays_finite():
    logp = torch.tensor([[-0.5, -float("inf")]], requires_grad=True)
    mask = torch.tensor([[True, False]])
    loss, _ = grpo_loss(logp, torch.tensor([[-0.7, 0.0]]), torch.tensor([1.0]), mask,
                        ref_logprobs=torch.tensor([[-0.6, 0.0]]), config=GrpoLossConfig(beta=0.1))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()


def test_k3_kl_by_hand():
    logp = torch.tensor([[math.log(0.5), math.log(0.2)]])
    ref = torch.tensor([[math.log(0.25), math.log(0.2)]])
    # d = log(0.25/0.5) = -log 2: e^d - d - 1 = 0.5 + log 2 - 1; equal logprobs give 0.
    assert close(k3_kl(logp, ref), [[0.5 + math.log(2) - 1, 0.0]])
    assert close(k3_kl(logp, ref, torch.tensor([[False, True]])), [[0.0, 0.0]])


# --------------------------------------------------------------------------- aggregation


VALUES = torch.tensor([[1.0, 2.0, 3.0, 0.0], [4.0, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]])
MASK = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.bool)


def test_aggregation_modes_by_hand():
    # Row 3 has no masked-in token: it counts as no sequence.
    assert close(aggregate(VALUES, MASK, "seq-mean-token-mean"), (2.0 + 4.0) / 2)
    assert close(aggregate(VALUES, MASK, LossAggregation.TOKEN_MEAN), 10.0 / 4)
    assert close(aggregate(VALUES, MASK, "seq-mean-token-sum-norm"), 10.0 / (2 * 4))
    assert close(aggregate(VALUES, MASK, "seq-mean-token-sum-norm", max_tokens=10), 10.0 / (2 * 10))


def test_aggregation_global_normalisers_for_micro_batches():
    assert close(aggregate(VALUES, MASK, "token-mean", num_tokens=8), 10.0 / 8)
    assert close(aggregate(VALUES, MASK, "seq-mean-token-mean", num_sequences=4), 6.0 / 4)
    assert close(aggregate(VALUES, MASK, "seq-mean-token-sum-norm", num_sequences=4, max_tokens=5), 10.0 / 20)


def test_empty_mask_gives_zero_loss_with_a_graph():
    logp = torch.zeros(2, 3, requires_grad=True)
    loss, metrics = grpo_loss(logp, None, torch.tensor([1.0, -1.0]), torch.zeros(2, 3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and metrics["tokens"] == 0.0 and metrics["ratio_mean"] == 1.0


# --------------------------------------------------------------------------- grpo_loss


def test_grpo_loss_on_policy_by_hand():
    # old = None: ratio 1, loss = -A per token; seq-mean-token-mean over rows with tokens.
    logp = torch.log(torch.tensor([[0.5, 0.5, 0.5], [0.25, 0.25, 0.25]])).requires_grad_()
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    loss, metrics = grpo_loss(logp, None, torch.tensor([2.0, -1.0]), mask)
    assert close(loss, (-2.0 + 1.0) / 2)
    loss.backward()
    # d loss / d logp = -A / (tokens in row * rows)
    assert close(logp.grad, [[-1 / 2, -1 / 2, 0.0], [1 / 6, 1 / 6, 1 / 6]])
    assert metrics["ratio_mean"] == 1.0 and metrics["clip_fraction"] == 0.0
    assert metrics["tokens"] == 5.0 and metrics["sequences"] == 2.0


def test_grpo_loss_with_kl_and_clip_metrics():
    logp = torch.log(torch.tensor([[1.5, 1.0], [0.5, 1.0]]))
    old = torch.zeros(2, 2)
    ref = torch.zeros(2, 2)
    mask = torch.ones(2, 2, dtype=torch.bool)
    config = GrpoLossConfig(beta=0.5, loss_aggregation="token-mean")
    loss, m = grpo_loss(logp, old, torch.tensor([1.0, -1.0]), mask, ref_logprobs=ref, config=config)
    # surrogate per token: [-1.2, -1.0, 0.8, 1.0] -> mean -0.1
    # k3 with d = -log r: r=1.5 -> 1/1.5 + log 1.5 - 1; r=0.5 -> 2 - log 2 - 1; r=1 -> 0
    kl = ((1 / 1.5 + math.log(1.5) - 1) + (1 - math.log(2))) / 4
    assert close(m["policy_loss"], -0.1) and close(m["kl"], kl) and close(m["kl_loss"], kl)
    assert close(loss, -0.1 + 0.5 * kl)
    assert m["clip_high_fraction"] == 0.25 and m["clip_low_fraction"] == 0.25 and m["clip_fraction"] == 0.5
    assert close(m["ratio_max"], 1.5) and close(m["ratio_min"], 0.5) and close(m["ratio_mean"], 1.0)


def test_sample_mask_and_nan_advantages_remove_samples():
    logp = torch.zeros(3, 2)
    mask = torch.ones(3, 2, dtype=torch.bool)
    adv = torch.tensor([1.0, float("nan"), -3.0])
    loss, m = grpo_loss(logp, None, adv, mask, config=GrpoLossConfig(loss_aggregation="token-mean"))
    assert close(loss, (-1.0 * 2 + 3.0 * 2) / 4) and m["sequences"] == 2.0
    loss, m = grpo_loss(logp, None, adv, mask, sample_mask=torch.tensor([True, True, False]))
    assert close(loss, -1.0) and m["sequences"] == 1.0


def test_loss_config_validation():
    with pytest.raises(ConfigError, match="loss_aggregation must be one of"):
        GrpoLossConfig(loss_aggregation="sum")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="clip_eps_low"):
        GrpoLossConfig(clip_eps_low=1.0)
    with pytest.raises(ConfigError, match="beta"):
        GrpoLossConfig(beta=-0.1)
    with pytest.raises(ConfigError, match="is_veto_level"):
        GrpoLossConfig(is_veto_level="batch")  # type: ignore[arg-type]
    token_mean = GrpoLossConfig(loss_aggregation="token-mean")  # type: ignore[arg-type]
    assert token_mean.loss_aggregation is LossAggregation.TOKEN_MEAN
    with pytest.raises(ConfigError, match="max_tokens"):
        grpo_loss(torch.zeros(1, 1), None, torch.ones(1), torch.ones(1, 1), max_tokens=0)
    with pytest.raises(ConfigError, match="ref_logprobs"):
        grpo_loss(torch.zeros(1, 1), None, torch.ones(1), torch.ones(1, 1), config=GrpoLossConfig(beta=0.1))


def test_advantage_divisors_match_the_advantages():
    from swe_srl.rl.grpo import advantage_divisors

    rewards = torch.tensor([1.0, 0.0, 0.5, 0.5, 2.0, 0.0])
    adv = group_advantages(rewards, 2)
    div = advantage_divisors(rewards, 2)
    assert close(adv, [0.5 / float(div[0]), -0.5 / float(div[0]), 0.0, 0.0, 1.0 / float(div[2]), -1.0 / float(div[2])])
    assert advantage_divisors(rewards, 2, scale="none").tolist() == [1.0, 1.0, 1.0]


def _planted_gap_gradients(**loss_kwargs):
    """Gradient per token of one sequence (negative advantage) whose token 0 has trainer -
    engine = 4 (ratio 54.6) and whose other tokens match the engine."""
    import torch

    from swe_srl.rl.grpo import GrpoLossConfig, grpo_loss

    engine = torch.full((1, 8), -2.0)
    logprobs = engine.clone()
    logprobs[0, 0] += 4.0
    logprobs.requires_grad_(True)
    mode = loss_kwargs.pop("mode")
    config = GrpoLossConfig(**loss_kwargs)
    if mode == "tis":
        loss, metrics = grpo_loss(logprobs, None, torch.tensor([-1.0]), torch.ones(1, 8), config=config,
                                  engine_logprobs=engine)
    else:  # bypass: the engine's log-probs are the old ones
        loss, metrics = grpo_loss(logprobs, engine, torch.tensor([-1.0]), torch.ones(1, 8), config=config)
    loss.backward()
    return logprobs.grad[0].abs(), metrics


def test_a_planted_log_gap_gets_an_unbounded_weight_without_correction():
    """The defect (issue 19): plain PPO with engine log-probs as old ones, negative advantage,
    ratio 54.6 above 1 + eps: that token keeps its full weight, 54.6x an ordinary token's."""
    grad, _ = _planted_gap_gradients(mode="bypass", dual_clip=0.0)
    assert float(grad[0] / grad[1]) == pytest.approx(54.6, rel=0.01)


def test_dual_clip_bounds_a_planted_log_gap_for_a_negative_advantage():
    grad, metrics = _planted_gap_gradients(mode="bypass", dual_clip=3.0)
    assert float(grad[0]) <= 3.0 * float(grad[1]) + 1e-6  # at most c x an ordinary token (here: 0, clipped)
    assert metrics["clip_dual_fraction"] == pytest.approx(1 / 8)


def test_truncated_importance_sampling_caps_a_planted_log_gap_at_the_cap():
    grad, metrics = _planted_gap_gradients(mode="tis", tis_cap=2.0)
    assert float(grad[0] / grad[1]) == pytest.approx(2.0, rel=1e-4)  # min(54.6, 2) / 1
    assert metrics["is_weight_max"] == pytest.approx(54.6, rel=0.01)
    assert metrics["is_clip_fraction"] == pytest.approx(1 / 8)
    assert metrics["mismatch_kl"] > 0


def test_an_is_veto_leaves_the_token_or_its_sequence_out():
    grad, metrics = _planted_gap_gradients(mode="tis", tis_cap=2.0, is_veto=20.0)
    assert float(grad[0]) == 0.0 and float(grad[1]) > 0 and metrics["is_veto_fraction"] == pytest.approx(1 / 8)
    grad, _ = _planted_gap_gradients(mode="tis", tis_cap=2.0, is_veto=20.0, is_veto_level="sequence")
    assert float(grad.sum()) == 0.0


def test_tis_with_matching_engine_is_the_plain_on_policy_gradient():
    import torch

    from swe_srl.rl.grpo import grpo_loss

    base = torch.randn(3, 5)
    adv = torch.tensor([1.0, -0.5, 0.2])
    a = base.clone().requires_grad_(True)
    grpo_loss(a, None, adv, torch.ones(3, 5))[0].backward()
    b = base.clone().requires_grad_(True)
    grpo_loss(b, None, adv, torch.ones(3, 5), engine_logprobs=base.clone())[0].backward()
    assert torch.allclose(a.grad, b.grad)


def test_k3_kl_is_clamped_so_one_extreme_token_stays_finite():
    from swe_srl.rl.grpo import K3_CLAMP, k3_kl

    value = k3_kl(torch.tensor([[-60.0]]), torch.tensor([[-1.0]]))  # log-gap 59
    assert torch.isfinite(value).all() and float(value) == pytest.approx(math.exp(K3_CLAMP) - K3_CLAMP - 1)
