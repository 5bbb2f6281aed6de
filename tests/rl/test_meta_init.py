"""Meta-device loading for ``run.parallel=fsdp`` (swe_srl/rl/meta_init.py): two gloo processes
each hold about half of what one process loading the whole model holds, with the same weights.
The runs through Session (fresh start, sharded KL reference, sharded resume) are tests/rl/test_fsdp.py's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")
if not torch.distributed.is_available():  # pragma: no cover - depends on the torch build
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from swe_srl.errors import InputError  # noqa: E402
from swe_srl.rl import meta_init  # noqa: E402
from tests.rl.test_distributed import free_port  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("meta_load_driver.py")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~75M-parameter Qwen2-shaped model (300 MB in float32) with a small vocabulary, so that
    no single tensor dominates: what a rank holds is its share of many layers."""
    from transformers import AutoModelForCausalLM, Qwen2Config

    out = tmp_path_factory.mktemp("meta-model")
    config = Qwen2Config(hidden_size=640, intermediate_size=2560, num_hidden_layers=12, num_attention_heads=10,
                         num_key_value_heads=2, vocab_size=4096, max_position_embeddings=512,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    return out


def _run(args: list[str], out: Path, nproc: int = 1) -> list[dict]:
    out.mkdir()
    args = [*args, str(out)]
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONFAULTHANDLER": "1"}
    if nproc == 1:
        cmd = [sys.executable, str(DRIVER), *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
               f"--master-port={free_port()}", str(DRIVER), *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    written = sorted(p.name for p in out.glob("rank*.json"))
    assert done.returncode == 0, f"written: {written}\n{done.stderr[-3000:]}"
    return [json.loads(path.read_text()) for path in sorted(out.glob("rank*.json"))]


def test_two_ranks_each_hold_about_half_of_a_one_process_load_with_the_same_weights(model_dir: Path,
                                                                                   tmp_path: Path) -> None:
    whole = _run(["whole", str(model_dir)], tmp_path / "whole")[0]
    ranks = _run(["meta", str(model_dir)], tmp_path / "meta", nproc=2)
    assert [r["rank"] for r in ranks] == [0, 1]
    model_mib = sum(f.stat().st_size for f in model_dir.glob("*.safetensors")) / 2**20
    # The one-process load holds at least the model; each rank about half of it (a little more:
    # one tensor's slice in flight, allocator slack), far from the whole model.
    assert whole["added_mib"] >= 0.9 * model_mib, (whole["added_mib"], model_mib)
    for r in ranks:
        assert r["added_mib"] <= 0.65 * whole["added_mib"], (r["added_mib"], whole["added_mib"])
        assert r["added_mib"] <= 0.65 * model_mib, (r["added_mib"], model_mib)
    # Gathered back, every tensor is the checkpoint's, to the last bit.
    for r in ranks:
        assert r["sums"].keys() == whole["sums"].keys()
        assert all(r["sums"][n] == whole["sums"][n] for n in whole["sums"])


def test_rows_follow_fsdp_dim0_chunking() -> None:
    assert [meta_init._rows(10, r, 4) for r in range(4)] == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert [meta_init._rows(2, r, 4) for r in range(4)] == [(0, 1), (1, 2), (2, 2), (2, 2)]
    assert [meta_init._rows(8, r, 2) for r in range(2)] == [(0, 4), (4, 8)]


def test_parameters_on_meta_keeps_buffers_real(model_dir: Path) -> None:
    model = meta_init.build_on_meta(model_dir, dtype=torch.float32)
    assert all(p.device.type == "meta" for p in model.parameters())
    buffers = dict(model.named_buffers())
    assert buffers and all(b.device.type == "cpu" for b in buffers.values())
    # Registration is restored: a module built afterwards is real.
    assert torch.nn.Linear(2, 2).weight.device.type == "cpu"


def test_a_folder_whose_tensors_do_not_cover_the_model_is_not_meta_loaded(model_dir: Path, tmp_path: Path) -> None:
    model = meta_init.build_on_meta(model_dir, dtype=torch.float32)
    assert meta_init.covers(model, model_dir)
    assert not meta_init.covers(model, tmp_path)  # no safetensors at all
    from safetensors.torch import load_file, save_file

    state = load_file(model_dir / "model.safetensors")
    state.pop(next(iter(state)))
    save_file(state, tmp_path / "model.safetensors")
    assert not meta_init.covers(model, tmp_path)
    meta_init.materialize(model, "cpu")
    with pytest.raises(InputError, match="lack 1 of the model's tensors"):
        meta_init.load_local_shards(model, tmp_path)
