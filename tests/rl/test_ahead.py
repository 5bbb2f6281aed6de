"""Rollouts one step ahead (``rollout.async_ahead``): the next batch is drawn while the update
runs, by a sampler that still holds the previous weights; the batch is one version old, no more,
and the update's importance ratio uses the sampler's log-probs (the PPO correction of the step
in between), not the trainer's own."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from swe_srl.config import TrainConfig  # noqa: E402
from swe_srl.config_loader import load_config  # noqa: E402
from swe_srl.errors import ConfigError, StaleWeights  # noqa: E402
from swe_srl.policy.base import GenerationConfig  # noqa: E402
from swe_srl.prompts import build_messages  # noqa: E402
from swe_srl.rl import grpo  # noqa: E402
from swe_srl.rl.ahead import AheadEngine, Prefetch, SnapshotPolicy, check_ahead  # noqa: E402
from swe_srl.rl.distributed import Dist  # noqa: E402
from swe_srl.rl.engine import RolloutEngine  # noqa: E402
from swe_srl.rl.logprobs import TokenBatch, completion_logprobs  # noqa: E402
from swe_srl.rl.run_log import read_jsonl  # noqa: E402
from swe_srl.rl.update import policy_update  # noqa: E402
from tests.rl.test_trainer import run, write_dataset  # noqa: E402

GEN = GenerationConfig(max_new_tokens=8, temperature=1.0)
ISSUES = ["Fix the pager.", "The table renders one column short.", "Parse dates in UTC."]


def _session(tiny_model_dir):
    from swe_srl.policy import PolicyConfig, load_policy

    policy = load_policy(PolicyConfig(backend="hf", model=str(tiny_model_dir)))
    cfg = load_config(TrainConfig, None, {"method": "srl", "optim.lr": 0.5, "optim.max_grad_norm": 0.0,
                                          "generation.max_new_tokens": 8, "generation.temperature": 1.0,
                                          "rollout.async_ahead": True})
    session = SimpleNamespace(config=cfg, dist=Dist(), tokenizer=policy.tokenizer, model=policy.model, step=0,
                              bf16=False, optimizer=torch.optim.SGD(policy.model.parameters(), lr=0.5))
    session.engine = AheadEngine(RolloutEngine("hf", policy), policy, policy.model)
    return session, policy


def _draw(sampler):
    return [s for group in sampler.generate([build_messages(i) for i in ISSUES], GEN) for s in group]


def test_the_batch_drawn_during_the_update_is_one_version_old_and_its_ratio_uses_the_samplers_logprobs(
        tiny_model_dir):
    session, policy = _session(tiny_model_dir)
    sampler = session.engine.sampler
    assert isinstance(sampler, SnapshotPolicy) and sampler.model is not policy.model
    loss_cfg = session.config.grpo
    first = _draw(sampler)
    assert {s.weights_version for s in first} == {0}
    advantages = torch.tensor([1.0, -1.0, 0.5])
    valid = torch.ones(3, dtype=torch.bool)
    # step 0: the next batch is drawn in the background while the update of step 0 runs
    ahead = Prefetch(lambda: _draw(sampler))
    assert session.engine.check(first, 0) == 0.0
    policy_update(session, first, advantages, valid, None, max_tokens=8)
    ahead.wait()
    session.engine.push(session.model, 1)
    second = ahead.result()
    assert {s.weights_version for s in second} == {0} and sampler.weights_version == 1
    # step 1 trains version 1 on samples of version 0: stale by one, allowed and logged
    assert session.engine.check(second, 1) == 1.0
    with pytest.raises(StaleWeights, match="one step of staleness"):
        session.engine.check(second, 2)
    # the ratio is trainer (v1) / sampler (v0), not 1: the loss is PPO's off-policy one
    session.step = 1
    batch = TokenBatch.build([s.prompt_ids for s in second], [s.completion_ids for s in second],
                             policy.tokenizer.pad_token_id, torch.device("cpu"))
    with torch.no_grad():
        current = completion_logprobs(session.model, batch, 1.0)
    old = torch.zeros_like(current)
    for i, s in enumerate(second):
        old[i, :len(s.logprobs)] = torch.tensor(s.logprobs)
    n_tok = float(batch.completion_mask.sum())
    expected, parts = grpo.grpo_loss(current, old, advantages, batch.completion_mask, config=loss_cfg, max_tokens=8,
                                     num_sequences=3.0, num_tokens=n_tok)
    on_policy, _ = grpo.grpo_loss(current, None, advantages, batch.completion_mask, config=loss_cfg, max_tokens=8,
                                  num_sequences=3.0, num_tokens=n_tok)
    metrics = policy_update(session, second, advantages, valid, None, max_tokens=8)
    assert abs(parts["ratio_mean"] - 1.0) > 1e-4  # the weights moved in between
    assert metrics["train/ratio_mean"] == pytest.approx(parts["ratio_mean"], rel=1e-4)
    assert metrics["train/loss"] == pytest.approx(float(expected), rel=1e-4, abs=1e-7)
    assert float(expected) != pytest.approx(float(on_policy), rel=1e-3, abs=1e-6)


def test_a_run_one_step_ahead_draws_the_same_items_logs_the_staleness_and_resumes(tiny_model_dir, tmp_path):
    data = write_dataset(tmp_path / "data", 12, 4)
    common = {"run.eval_every": 0, "run.save_every": 1, "grpo.dynamic_sampling_eps": -1.0}
    run(data, tiny_model_dir, tmp_path / "sync", "srl", **common)
    run(data, tiny_model_dir, tmp_path / "ahead", "srl", **{**common, "rollout.async_ahead": True})
    sync = read_jsonl(tmp_path / "sync" / "rollouts.jsonl")
    ahead = read_jsonl(tmp_path / "ahead" / "rollouts.jsonl")
    assert [r["ids"] for r in ahead] == [r["ids"] for r in sync]
    assert [r["data_position"] for r in ahead] == [r["data_position"] for r in sync]  # as if not drawn ahead
    rows = [r for r in read_jsonl(tmp_path / "ahead" / "metrics.jsonl") if "rollout/staleness" in r]
    assert [r["rollout/staleness"] for r in rows] == [0.0, 1.0, 1.0]
    assert all(r["rollout/weights_version"] == r["step"] for r in rows)
    # killed after step 2's checkpoint, while step 3's batch was drawn ahead: the checkpoint
    # stands before that batch, so the resumed run draws it again (the same items)
    import json
    import shutil

    shutil.copytree(tmp_path / "ahead", tmp_path / "cut")
    shutil.rmtree(tmp_path / "cut" / "checkpoints" / "step-00000003")  # the pointer falls back to step 2
    state = json.loads((tmp_path / "cut" / "checkpoints" / "step-00000002" / "trainer_state.json").read_text())
    assert state["data_position"] == sync[1]["data_position"]
    run(data, tiny_model_dir, tmp_path / "cut", "srl", resume=True, **{**common, "rollout.async_ahead": True})
    resumed = read_jsonl(tmp_path / "cut" / "rollouts.jsonl")
    assert [r["ids"] for r in resumed] == [r["ids"] for r in sync]


def test_settings_that_cannot_draw_beside_the_update_are_refused():
    with pytest.raises(ConfigError, match="one process"):
        check_ahead(None, 2, False)
    with pytest.raises(ConfigError, match="fsdp"):
        check_ahead(None, 1, True)
