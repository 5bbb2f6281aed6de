"""A run keeps what its resume needs of the start model (issue 19, item 6): a LoRA run (whose
checkpoints hold only the adapter) resumes and exports after the folder it started from is gone."""

from __future__ import annotations

import os
import shutil

import pytest

pytest.importorskip("torch")
pytest.importorskip("peft")

from swe_srl.rl import checkpoint as ckpt  # noqa: E402
from swe_srl.rl.export import export_checkpoint  # noqa: E402
from tests.rl.test_trainer import metric_rows, run, write_dataset  # noqa: E402

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def test_a_lora_run_resumes_and_exports_after_its_start_model_folder_is_deleted(tiny_model_dir, tmp_path):
    start = tmp_path / "start"
    shutil.copytree(tiny_model_dir, start)
    data = write_dataset(tmp_path / "data", n_train=8, n_val=2)
    out = tmp_path / "run"
    settings = {"model.lora": LORA, "run.save_every": 1, "run.eval_every": 0}
    run(data, start, out, method="sft", **settings, **{"run.max_steps": 2})
    kept = out / ckpt.START_MODEL_DIR
    assert (kept / "config.json").is_file()
    weights = next(kept.glob("*.safetensors"))
    # Hard links on one filesystem: no second copy of the weights.
    assert os.stat(weights).st_ino == os.stat(start / weights.name).st_ino
    shutil.rmtree(start)
    run(data, start, out, method="sft", resume=True, **settings, **{"run.max_steps": 3})
    assert len(metric_rows(out, "train/loss")) == 3
    merged = export_checkpoint(out, tmp_path / "export")
    assert (merged / "config.json").is_file()


def test_keep_model_folder_replaces_a_half_written_copy(tiny_model_dir, tmp_path):
    dest = tmp_path / "kept"
    (tmp_path / "kept.tmp").mkdir()
    (tmp_path / "kept.tmp" / "junk").write_text("left by a kill")
    ckpt.keep_model_folder(tiny_model_dir, dest)
    assert sorted(p.name for p in dest.iterdir()) == sorted(p.name for p in tiny_model_dir.iterdir() if p.is_file())
    assert not (tmp_path / "kept.tmp").exists()


def test_without_the_kept_copy_a_missing_start_model_is_a_one_line_error(tiny_model_dir, tmp_path):
    from swe_srl.errors import InputError

    start = tmp_path / "start"
    shutil.copytree(tiny_model_dir, start)
    data = write_dataset(tmp_path / "data", n_train=8, n_val=2)
    out = tmp_path / "run"
    settings = {"model.lora": LORA, "run.save_every": 1, "run.eval_every": 0, "run.keep_start_model": False}
    run(data, start, out, method="sft", **settings, **{"run.max_steps": 1})
    assert not (out / ckpt.START_MODEL_DIR).exists()
    shutil.rmtree(start)
    with pytest.raises(InputError, match="is gone"):
        run(data, start, out, method="sft", resume=True, **settings, **{"run.max_steps": 2})
