"""A checkpoint damaged after it was written (truncated weights or optimizer state, a garbage
RNG file) is passed over on ``--resume``: the run continues from the newest checkpoint whose
files verify and says which one it skipped and why; with none usable, a one-line error."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from swe_srl.errors import InputError  # noqa: E402
from swe_srl.rl import checkpoint as ckpt  # noqa: E402
from swe_srl.rl import integrity  # noqa: E402
from swe_srl.rl.run_log import read_jsonl  # noqa: E402
from tests.rl.test_checkpoint import save, tiny_model  # noqa: E402
from tests.rl.test_trainer import run, small_overrides, write_dataset  # noqa: E402

SAFETENSORS = "model/model.safetensors"


def step_dir(run_dir: Path, step: int) -> Path:
    return run_dir / "checkpoints" / ckpt.step_dir_name(step)


def truncate(path: Path, keep: float = 0.5) -> None:
    os.truncate(path, int(path.stat().st_size * keep))


def garbage(path: Path) -> None:
    path.write_bytes(b"not a torch file\n" * 4)


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGE = {  # name -> (file in the checkpoint, what happens to it, what the skip reason names)
    "truncated safetensors": (SAFETENSORS, truncate, "model/model.safetensors"),
    "truncated optimizer.pt": ("optimizer.pt", truncate, "optimizer.pt"),
    "garbage rng.pt": ("rng.pt", garbage, "rng.pt"),
}


def drop_manifests(run_dir: Path) -> None:
    """What a checkpoint written before the manifest existed looks like."""
    for path in (run_dir / "checkpoints").glob("step-*/manifest.json"):
        path.unlink()


# --------------------------------------------------------------------------- checkpoint level


def test_manifest_lists_every_file_and_is_written_last(tmp_path):
    path = save(tmp_path, 1, tiny_model())
    manifest = json.loads((path / integrity.MANIFEST_FILE).read_text())
    files = {p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()} - {integrity.MANIFEST_FILE}
    assert set(manifest["files"]) == files and {"optimizer.pt", "rng.pt", "trainer_state.json", SAFETENSORS} <= files
    assert manifest["files"]["optimizer.pt"]["size"] == (path / "optimizer.pt").stat().st_size
    integrity.verify(path)
    found = ckpt.find_resumable(tmp_path)
    assert found.checkpoint.step == 1 and found.skipped == ()


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no-manifest"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_newest_checkpoint_is_skipped_with_its_reason(tmp_path, damage, manifest):
    for step in (1, 2, 3):
        save(tmp_path, step, tiny_model(step), keep=3)
    if not manifest:
        drop_manifests(tmp_path)
    name, hurt, named = DAMAGE[damage]
    hurt(step_dir(tmp_path, 3) / name)
    found = ckpt.find_resumable(tmp_path)
    assert found.checkpoint.step == 2
    assert [skipped for skipped, _ in found.skipped] == ["step-00000003"]
    assert named in found.skipped[0][1]
    # the unverified pointer still names the newest: only resuming pays for the check
    assert ckpt.latest_checkpoint(tmp_path).step == 3


def test_a_flipped_byte_is_caught_by_the_checksum(tmp_path):
    save(tmp_path, 1, tiny_model())
    save(tmp_path, 2, tiny_model())
    flip_a_byte(step_dir(tmp_path, 2) / SAFETENSORS)  # same size, header intact
    found = ckpt.find_resumable(tmp_path)
    assert found.checkpoint.step == 1
    assert found.skipped == (("step-00000002", f"{SAFETENSORS} does not match the sha256 recorded when it was "
                                               "written"),)


def test_checkpoint_without_manifest_still_verifies_and_a_flipped_zip_byte_is_a_crc_error(tmp_path):
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.tensor([[1, 2, 3]])).logits.sum().backward()
    opt.step()  # the optimizer file is now mostly tensor data
    save(tmp_path, 1, model, optimizer=opt)
    save(tmp_path, 2, model, optimizer=opt)
    drop_manifests(tmp_path)
    assert ckpt.find_resumable(tmp_path).checkpoint.step == 2  # older checkpoints still resume
    flip_a_byte(step_dir(tmp_path, 2) / "optimizer.pt")
    found = ckpt.find_resumable(tmp_path)
    assert found.checkpoint.step == 1 and "optimizer.pt is damaged (CRC mismatch" in found.skipped[0][1]


def test_missing_state_optimizer_or_manifest_entry(tmp_path):
    for step in (1, 2, 3, 4):
        save(tmp_path, step, tiny_model(), keep=4)
    (step_dir(tmp_path, 4) / "trainer_state.json").write_text('{"step": 4, "data_pos')  # torn
    (step_dir(tmp_path, 3) / "optimizer.pt").unlink()
    (step_dir(tmp_path, 2) / "model" / "config.json").unlink()
    found = ckpt.find_resumable(tmp_path)
    assert found.checkpoint.step == 1
    assert [(name, reason.split(" ")[0]) for name, reason in found.skipped] == [
        ("step-00000004", "trainer_state.json"), ("step-00000003", "optimizer.pt"),
        ("step-00000002", "model/config.json")]
    assert "is missing" in found.skipped[2][1]


class ShardedModel:
    """A model whose ``save_pretrained`` writes small shards and an index, as large models do."""

    def __init__(self, model):
        self.model = model

    def save_pretrained(self, path):
        self.model.save_pretrained(path, max_shard_size="4KB")


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no-manifest"])
def test_sharded_model_every_shard_is_verified(tmp_path, manifest):
    model = tiny_model()
    opt = torch.optim.AdamW(model.parameters())
    for step in (1, 2):
        ckpt.save_checkpoint(tmp_path, step, model=ShardedModel(model), optimizer=opt,
                             state={"data_position": {"epoch": 0, "cursor": 0}}, rng_states=[ckpt.capture_rng()])
    if not manifest:
        drop_manifests(tmp_path)
    shards = sorted((step_dir(tmp_path, 2) / "model").glob("model-*.safetensors"))
    assert len(shards) > 2 and (step_dir(tmp_path, 2) / "model" / "model.safetensors.index.json").is_file()
    assert ckpt.find_resumable(tmp_path).checkpoint.step == 2
    truncate(shards[1])
    found = ckpt.find_resumable(tmp_path)
    assert found.checkpoint.step == 1 and shards[1].name in found.skipped[0][1]
    shards[1].unlink()
    assert shards[1].name in ckpt.find_resumable(tmp_path).skipped[0][1]


def test_lora_adapter_without_manifest_is_parsed(tmp_path):
    """A folder holding a LoRA adapter: its safetensors are checked like a model's."""
    from safetensors.torch import save_file

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 4}')
    save_file({"lora_A": torch.zeros(4, 16), "lora_B": torch.zeros(16, 4)}, adapter / "adapter_model.safetensors")
    integrity.verify(tmp_path)
    truncate(adapter / "adapter_model.safetensors", 0.9)
    with pytest.raises(integrity.CorruptCheckpoint, match="adapter/adapter_model.safetensors is truncated"):
        integrity.verify(tmp_path)
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(integrity.CorruptCheckpoint, match="adapter/ holds no weights"):
        integrity.verify(tmp_path)


def test_reading_a_damaged_file_is_an_input_error_not_a_torch_traceback(tmp_path):
    path = save(tmp_path, 1, tiny_model())
    found = ckpt.latest_checkpoint(tmp_path)
    truncate(path / "optimizer.pt")
    with pytest.raises(InputError, match="optimizer.pt cannot be loaded"):
        found.optimizer_state()
    garbage(path / "rng.pt")
    with pytest.raises(InputError, match="rng.pt cannot be loaded"):
        found.rng_states()
    torch.save({"not": "a list"}, path / "rng.pt")
    with pytest.raises(InputError, match="rng.pt does not hold per-rank RNG states"):
        found.rng_states()


# --------------------------------------------------------------------------- train --resume

SETTINGS = {"run.max_steps": 3, "run.save_every": 1, "run.keep_checkpoints": 3, "run.eval_every": 0}


@pytest.fixture(scope="module")
def finished_run(tiny_model_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(data, run dir): a 3-step SFT run with a checkpoint at every step; tests copy it."""
    root = tmp_path_factory.mktemp("damaged")
    data = write_dataset(root / "data")
    run(data, tiny_model_dir, root / "run", "sft", **SETTINGS)
    assert [c.step for c in ckpt.list_checkpoints(root / "run")] == [1, 2, 3]
    return data, root / "run"


def copy_run(finished_run, tmp_path: Path, manifest: bool = True) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished_run[1], out)
    (out / "config.yaml").write_text((out / "config.yaml").read_text().replace(str(finished_run[1]), str(out)))
    if not manifest:
        drop_manifests(out)
    return out


@pytest.mark.parametrize("manifest", [True, False], ids=["manifest", "no-manifest"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_resume_falls_back_to_the_previous_complete_checkpoint(finished_run, tiny_model_dir, tmp_path, caplog,
                                                               damage, manifest):
    data, original = finished_run
    out = copy_run(finished_run, tmp_path, manifest)
    name, hurt, named = DAMAGE[damage]
    hurt(step_dir(out, 3) / name)
    with caplog.at_level(logging.WARNING, logger="swe_srl.rl.session"):
        result = run(data, tiny_model_dir, out, "sft", resume=True, **{**SETTINGS, "run.max_steps": 4})
    lines = [r.getMessage() for r in caplog.records if r.name == "swe_srl.rl.session"]
    assert len(lines) == 2, lines
    assert lines[0].startswith("--resume: skipping checkpoint step-00000003: ") and named in lines[0]
    assert lines[1] == ("--resume: resuming from checkpoint step-00000002 (step 2), the newest whose files "
                        "verify")
    assert result.steps == 4 and result.final_checkpoint == step_dir(out, 4)
    # step 3 was trained again from step 2's state: the same items as the first time, and a
    # new, intact step-3 checkpoint replaced the damaged one
    rows = read_jsonl(out / "rollouts.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[:3] == read_jsonl(original / "rollouts.jsonl")
    assert ckpt.find_resumable(out) == ckpt.Resumable(ckpt.latest_checkpoint(out))
    integrity.verify(step_dir(out, 3))


def test_cli_resume_with_every_checkpoint_damaged_is_a_one_line_error(finished_run, tiny_model_dir, tmp_path):
    data, _ = finished_run
    out = copy_run(finished_run, tmp_path)
    for step, (name, hurt, _) in zip((3, 2, 1), DAMAGE.values()):
        hurt(step_dir(out, step) / name)
    args = [sys.executable, "-m", "swe_srl.cli", "train", "--method", "sft", "-o", str(out), "--resume"]
    for item in small_overrides(data, tiny_model_dir, out, **{**SETTINGS, "run.max_steps": 4}):
        args += ["--set", item]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"error: --resume: no usable checkpoint in {out / 'checkpoints'} (step-00000003: "
                               f"{SAFETENSORS} ")
    assert "step-00000002: optimizer.pt" in lines[0] and "step-00000001: rng.pt" in lines[0]
    assert ckpt.latest_checkpoint(out).step == 3, "nothing was overwritten"


def test_file_damaged_after_the_check_is_a_clear_error(finished_run, tiny_model_dir, tmp_path, monkeypatch):
    """Verification passed, then the file broke (or the check missed it): still no traceback."""
    data, _ = finished_run
    monkeypatch.setattr(ckpt, "verify", lambda path: None)
    out = copy_run(finished_run, tmp_path)
    truncate(step_dir(out, 3) / SAFETENSORS)
    with pytest.raises(InputError, match="step-00000003: its model cannot be loaded"):
        run(data, tiny_model_dir, out, "sft", resume=True, **{**SETTINGS, "run.max_steps": 4})
    shutil.rmtree(out)
    out = copy_run(finished_run, tmp_path)
    truncate(step_dir(out, 3) / "optimizer.pt")
    with pytest.raises(InputError, match="step-00000003: optimizer.pt cannot be loaded"):
        run(data, tiny_model_dir, out, "sft", resume=True, **{**SETTINGS, "run.max_steps": 4})
