"""Checkpoints are atomic: a crash at any point leaves the previous one loadable, and a temp
directory never becomes ``latest``."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from swe_srl.errors import InputError  # noqa: E402
from swe_srl.rl import checkpoint as ckpt  # noqa: E402


def tiny_model(seed: int = 0):
    config = transformers.Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    torch.manual_seed(seed)
    return transformers.Qwen2ForCausalLM(config)


def save(run_dir, step, model, **kw):
    opt = kw.pop("optimizer", None) or torch.optim.AdamW(model.parameters(), lr=1e-3)
    return ckpt.save_checkpoint(run_dir, step, model=model, optimizer=opt,
                                state={"data_position": {"epoch": 0, "cursor": step}},
                                rng_states=[ckpt.capture_rng()], **kw)


def weights(path):
    return transformers.Qwen2ForCausalLM.from_pretrained(path).state_dict()


def test_save_load_round_trip_with_optimizer_and_rng(tmp_path):
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    opt.step()
    random.seed(5)
    path = save(tmp_path, 3, model, optimizer=opt)
    expected = (random.random(), float(torch.rand(1)))

    found = ckpt.latest_checkpoint(tmp_path)
    assert found.path == path and found.step == 3 and found.state["data_position"]["cursor"] == 3
    assert (tmp_path / "checkpoints" / "latest").read_text().strip() == "step-00000003"
    for name, tensor in model.state_dict().items():
        assert torch.equal(weights(found.model_dir)[name], tensor)
    restored = torch.optim.AdamW(tiny_model().parameters(), lr=1e-3)
    restored.load_state_dict(found.optimizer_state())
    assert restored.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    ckpt.restore_rng(found.rng_states()[0])
    assert (random.random(), float(torch.rand(1))) == expected
    assert ckpt.load_checkpoint(tmp_path).path == path == ckpt.load_checkpoint(path).path


def test_crash_while_writing_leaves_previous_checkpoint_loadable(tmp_path, monkeypatch):
    save(tmp_path, 1, tiny_model(1))
    real_save = torch.save

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save(tmp_path, 2, tiny_model(2))
    monkeypatch.setattr(torch, "save", real_save)

    temps = list((tmp_path / "checkpoints").glob(".tmp-*"))
    assert temps, "the half-written checkpoint stays in its temp directory"
    found = ckpt.latest_checkpoint(tmp_path)
    assert found.step == 1
    assert torch.equal(weights(found.model_dir)["lm_head.weight"], tiny_model(1).state_dict()["lm_head.weight"])
    # the next save sweeps the leftovers
    save(tmp_path, 3, tiny_model(3))
    assert not list((tmp_path / "checkpoints").glob(".tmp-*"))
    assert ckpt.latest_checkpoint(tmp_path).step == 3


def test_crash_before_the_pointer_moves_keeps_the_old_latest(tmp_path, monkeypatch):
    save(tmp_path, 1, tiny_model())

    def crash(path, text):
        raise OSError("killed")

    monkeypatch.setattr(ckpt, "write_text_atomic", crash)
    with pytest.raises(OSError):
        save(tmp_path, 2, tiny_model())
    assert ckpt.latest_checkpoint(tmp_path).step == 1
    assert [c.step for c in ckpt.list_checkpoints(tmp_path)] == [1, 2]


def test_temp_dir_never_becomes_latest_and_broken_pointer_falls_back(tmp_path):
    save(tmp_path, 1, tiny_model())
    save(tmp_path, 2, tiny_model())
    root = tmp_path / "checkpoints"
    # a complete-looking temp copy, even named by the pointer, is not a checkpoint
    fake = root / ".tmp-step-00000009.123"
    (root / "step-00000002").rename(fake)
    (root / "latest").write_text(fake.name)
    assert ckpt.latest_checkpoint(tmp_path).step == 1
    assert [c.step for c in ckpt.list_checkpoints(tmp_path)] == [1]
    (root / "latest").write_text("step-00000042")
    assert ckpt.latest_checkpoint(tmp_path).step == 1
    (root / "latest").unlink()
    assert ckpt.latest_checkpoint(tmp_path).step == 1


def test_keep_last_n_and_resave_same_step(tmp_path):
    for step in range(1, 5):
        save(tmp_path, step, tiny_model(), keep=2)
    assert [c.step for c in ckpt.list_checkpoints(tmp_path)] == [3, 4]
    save(tmp_path, 4, tiny_model(7), keep=2)  # a resumed run writing the same step again
    assert ckpt.latest_checkpoint(tmp_path).step == 4
    assert torch.equal(weights(ckpt.latest_checkpoint(tmp_path).model_dir)["lm_head.weight"],
                       tiny_model(7).state_dict()["lm_head.weight"])


def test_empty_run_dir(tmp_path):
    assert ckpt.latest_checkpoint(tmp_path) is None
    with pytest.raises(InputError, match="no complete checkpoint"):
        ckpt.load_checkpoint(tmp_path)


WRITER = textwrap.dedent("""
    import sys, torch, transformers
    from swe_srl.rl import checkpoint as ckpt
    cfg = transformers.Qwen2Config(vocab_size=4096, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                                   num_attention_heads=4, num_key_value_heads=2)
    model = transformers.Qwen2ForCausalLM(cfg)
    step = 0
    while True:
        step += 1
        with torch.no_grad():
            model.lm_head.weight.fill_(float(step))
        ckpt.save_checkpoint(sys.argv[1], step, model=model, state={"data_position": {"epoch": 0, "cursor": step}})
        print(step, flush=True)
""")


def test_kill_9_mid_write_leaves_a_loadable_latest(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        assert proc.stdout.readline().strip() == "1"  # one checkpoint is complete
        time.sleep(random.uniform(0.05, 0.4))  # land somewhere inside a later write
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    found = ckpt.latest_checkpoint(tmp_path)
    assert found is not None and found.step >= 1
    weight = weights(found.model_dir)["lm_head.weight"]
    assert torch.all(weight == float(found.step)), "latest holds exactly the weights of its step"
