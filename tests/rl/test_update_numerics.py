"""The GRPO update scores the very function the sampler drew from (issue 19, item 6): LoRA
dropout is off in the update as it is in sampling (HFPolicy samples in eval mode), so the
ratio and the policy gradient are not taken on a randomly thinned model."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("peft")

from swe_srl.rl import update  # noqa: E402
from tests.rl.test_trainer import _scripted, metric_rows, run, write_dataset  # noqa: E402


def test_lora_dropout_is_off_in_every_update_forward(tiny_model_dir, tmp_path, monkeypatch):
    from transformers import AutoTokenizer

    seen: list[list[bool]] = []
    real = update.completion_logprobs

    def recording(model, *args, **kwargs):
        seen.append([m.training for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0])
        return real(model, *args, **kwargs)

    monkeypatch.setattr(update, "completion_logprobs", recording)
    data = write_dataset(tmp_path / "data", n_train=8, n_val=2)
    lora = {"r": 4, "alpha": 8, "dropout": 0.5, "target_modules": ["q_proj", "v_proj"]}
    out = tmp_path / "run"
    run(data, tiny_model_dir, out, method="srl", sampler=_scripted(AutoTokenizer.from_pretrained(tiny_model_dir)),
        **{"model.lora": lora, "run.max_steps": 2, "run.save_every": 2, "run.eval_every": 0})
    assert sum(metric_rows(out, "train/sequences")) > 0, "no GRPO update ran"
    assert seen and all(flags for flags in seen), "the LoRA dropout modules were not found"
    assert not any(any(flags) for flags in seen), "dropout was active in an update forward"


def test_dropout_off_switches_only_dropout_modules_and_restores_them():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Dropout(0.5), torch.nn.Dropout(0.1))
    model.train()
    model[2].eval()  # already off: stays off afterwards
    x = torch.ones(2, 4)
    with update.dropout_off(model):
        assert model.training and not model[1].training
        assert torch.equal(model(x), model(x))
    assert model[1].training and not model[2].training


@pytest.mark.parametrize("precision,wanted,expected",
                         [("bf16", "auto", torch.bfloat16), ("fp32", "auto", torch.float32),
                                                       ("fp32", "bfloat16", torch.bfloat16)])
def test_kl_reference_is_kept_in_bf16_when_the_run_trains_in_bf16(tiny_model_dir, tmp_path, precision, wanted,
                                                                   expected):
    from transformers import AutoTokenizer

    from swe_srl.config import TrainConfig
    from swe_srl.config_loader import load_config
    from swe_srl.rl.session import Session
    from tests.rl.test_trainer import small_overrides

    data = write_dataset(tmp_path / "data", n_train=8, n_val=2)
    extra = {"run.eval_every": 0, "grpo.beta": 0.1, "run.precision": precision, "grpo.reference_dtype": wanted,
             "run.max_steps": 1}
    sampler = _scripted(AutoTokenizer.from_pretrained(tiny_model_dir))
    cfg = load_config(TrainConfig, "tiny-cpu", ["method=srl"] + small_overrides(data, tiny_model_dir, tmp_path / "r",
                                                                                **extra))
    with Session(cfg, sampler=sampler) as session:
        reference = session.reference_model()
        assert {p.dtype for p in reference.parameters()} == {expected}
        assert {p.dtype for p in session.model.parameters()} == {torch.float32}  # master weights untouched
        ref_bytes = sum(p.numel() * p.element_size() for p in reference.parameters())
        model_bytes = sum(p.numel() * p.element_size() for p in session.model.parameters())
        assert ref_bytes == (model_bytes // 2 if expected == torch.bfloat16 else model_bytes)
    out = tmp_path / "run"
    run(data, tiny_model_dir, out, method="srl", sampler=sampler, **extra)
    # Before any update the policy is the reference: the KL is only the bf16 rounding of the weights.
    assert metric_rows(out, "train/kl")[0] < 1e-2


@pytest.mark.parametrize("precision,corrected", [("bf16", True), ("fp32", False)])
def test_hf_sampling_in_bf16_is_corrected_by_tis_with_the_samplers_log_probs(tiny_model_dir, tmp_path, grpo_loss_calls,
                                                                             precision, corrected):
    """The trained model samples with a KV cache and is scored on whole sequences; under bf16 the
    two differ per token, so the sampler's own log-probs weigh each token (TIS) instead of a ratio
    forced to 1. In float32 they agree: nothing to correct."""
    calls = grpo_loss_calls
    data = write_dataset(tmp_path / "data", n_train=8, n_val=2)
    out = tmp_path / "run"
    # No scripted sampler: the trained model samples (rollout.engine hf); every group kept.
    run(data, tiny_model_dir, out, method="srl", **{"run.precision": precision, "run.max_steps": 1,
                                                    "run.eval_every": 0, "grpo.dynamic_sampling_eps": -1.0})
    assert calls and set(calls) == {(False, corrected)}
    if corrected:
        assert metric_rows(out, "train/mismatch_kl")[0] > 0
