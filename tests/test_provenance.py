"""Provenance end to end: a dataset records its inputs, options and code; an SFT run and the SRL
run started from it record the dataset's hash, config, seeds and each other; eval flags (and
with --refuse-overlap refuses) tasks the model was trained on; `swe-srl report` prints it all
and overlays two real runs in one PNG."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("matplotlib")

from swe_srl import __version__  # noqa: E402
from swe_srl.cli import main  # noqa: E402
from swe_srl.config import TrainConfig  # noqa: E402
from swe_srl.config_loader import load_config  # noqa: E402
from swe_srl.dataset import DatasetConfig, build_dataset, load_step_targets  # noqa: E402
from swe_srl.paths import EXPERT_TRAJECTORIES_DIR, SAMPLES_DIR  # noqa: E402
from swe_srl.provenance import dataset_hash, find_model_provenance, read_provenance, trained_tasks  # noqa: E402
from swe_srl.rl.trainer import train  # noqa: E402
from tests.rl.test_trainer import small_overrides  # noqa: E402

EXPERTS = EXPERT_TRAJECTORIES_DIR / "demo-experts.jsonl"
pytestmark = pytest.mark.skipif(not (SAMPLES_DIR.is_dir() and EXPERTS.is_file()), reason="bundled data missing")


def cli(args, capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir) -> dict[str, Path]:
    """A dataset from the format samples and the demo experts, an SFT run on it, and an SRL run
    started from the SFT run's checkpoint (a few steps each, with held-out validation)."""
    root = tmp_path_factory.mktemp("prov")
    data = root / "ds"
    build_dataset([SAMPLES_DIR, EXPERTS], data, DatasetConfig(val_fraction=0.3, seed=3), output="jsonl")
    extra = {"run.max_steps": 3, "run.eval_every": 1, "data.val_limit": 4, "run.seed": 7}
    sft = root / "sft"
    train(load_config(TrainConfig, "tiny-cpu", ["method=sft"] + small_overrides(data, tiny_model_dir, sft, **extra)))
    srl = root / "srl"
    train(load_config(TrainConfig, "tiny-cpu", ["method=srl"] + small_overrides(data, sft, srl, **extra)))
    return {"data": data, "sft": sft, "srl": srl, "root": root}


def test_dataset_provenance_round_trips(runs):
    data = runs["data"]
    prov = read_provenance(data)
    assert prov["kind"] == "dataset"
    for path, digest in prov["inputs"].items():
        assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest
    assert str(EXPERTS) in prov["inputs"] and len(prov["inputs"]) > 5
    assert prov["options"]["seed"] == 3 and prov["options"]["val_fraction"] == 0.3
    assert prov["options"] == json.loads((data / "stats.json").read_text())["config"] | {
        "format": "auto", "output": "jsonl", "resolved_ids": None}
    assert prov["code"]["swe_srl"] == __version__
    assert prov["code"]["git_commit"] is None or len(prov["code"]["git_commit"]) == 40
    assert prov["eval_sets"][0]["name"] == "verified" and prov["eval_sets"][0]["instances"] == 500
    for name, digest in prov["files"].items():
        assert hashlib.sha256((data / name).read_bytes()).hexdigest() == digest
    assert prov["dataset_hash"] == dataset_hash(prov["files"])
    tasks = {(t["task_id"], t["split"]) for t in prov["tasks"]}
    for split in ("train", "val"):
        assert {(t.task_id, split) for t in load_step_targets(data / f"{split}.jsonl")} <= tasks
    repos = {t["task_id"]: t.get("repo") for t in prov["tasks"]}
    assert repos["slugkit__slugkit-12"] == "slugkit/slugkit"


def test_run_provenance_chains_sft_then_srl(runs):
    data_prov = read_provenance(runs["data"])
    sft, srl = read_provenance(runs["sft"]), read_provenance(runs["srl"])
    assert sft["kind"] == srl["kind"] == "training-run"
    assert (sft["method"], srl["method"]) == ("sft", "srl")
    assert sft["dataset"]["hash"] == data_prov["dataset_hash"] and sft["dataset"]["provenance"] == data_prov
    assert srl["seeds"] == {"run": 7, "dataset_split": 3}
    assert srl["config"]["grpo"]["num_generations"] == 3 and srl["config"]["run"]["seed"] == 7
    assert srl["code"]["swe_srl"] == __version__
    assert srl["start_model_provenance"] == sft  # the SFT run is part of the SRL model's history
    assert find_model_provenance(runs["srl"] / "checkpoints") == srl
    checkpoint = sorted((runs["srl"] / "checkpoints").iterdir())[-1]
    assert find_model_provenance(checkpoint / "model") == srl
    train_ids = {t.task_id for t in load_step_targets(runs["data"] / "train.jsonl")}
    assert {t["task_id"] for t in trained_tasks(srl)} == train_ids


def test_export_keeps_the_provenance(runs, tmp_path):
    from swe_srl.rl.export import export_checkpoint

    out = export_checkpoint(runs["srl"], tmp_path / "exported")
    prov = read_provenance(out)
    assert prov["method"] == "srl" and prov["exported_from"].startswith(str(runs["srl"]))
    assert find_model_provenance(out)["dataset"]["hash"] == read_provenance(runs["data"])["dataset_hash"]


def test_eval_flags_and_refuses_overlap(runs, capsys, tmp_path):
    data, srl = runs["data"], runs["srl"]
    steps = ["eval", "--mode", "steps", "--model", srl, "--limit", "2", "--set", "generation.max_new_tokens=4"]
    code, _, err = cli(steps + ["--data", data / "train.jsonl", "-o", tmp_path / "e1", "--refuse-overlap"], capsys)
    assert code == 2 and err.count("\n") == 1 and "--refuse-overlap: the model was trained on" in err
    assert not (tmp_path / "e1" / "steps_summary.json").exists()
    code, out, _ = cli(steps + ["--data", data / "train.jsonl", "-o", tmp_path / "e2"], capsys)
    assert code == 0 and "overlap: the model was trained on" in out
    summary = json.loads((tmp_path / "e2" / "steps_summary.json").read_text())
    assert summary["provenance"]["overlap"]["count"] >= 1 and summary["provenance"]["model"]["method"] == "srl"
    ids = sorted({t.task_id for t in load_step_targets(data / "train.jsonl")[:2]})
    assert summary["provenance"]["evaluated_ids_sha256"] == hashlib.sha256(json.dumps(ids).encode()).hexdigest()
    code, out, _ = cli(steps + ["--data", data / "val.jsonl", "-o", tmp_path / "e3", "--refuse-overlap"], capsys)
    assert code == 0 and "none of the" in out  # held-out tasks were never trained on
    # agent episodes on the demo tasks, whose expert runs are in the training data: refused
    # before any container starts
    code, _, err = cli(["eval", "--model", srl, "--refuse-overlap", "-o", tmp_path / "e4"], capsys)
    assert code == 2 and "swe-srl-demo__" in err and err.count("\n") == 1
    code, _, err = cli(steps + ["--model", runs["root"] / "nowhere", "--data", data / "val.jsonl",
                                "-o", tmp_path / "e5", "--refuse-overlap"], capsys)
    assert code != 0 and "Traceback" not in err


def test_report_prints_provenance_and_overlays_two_runs(runs, capsys, tmp_path):
    code, out, _ = cli(["report", runs["srl"]], capsys)
    assert code == 0 and "provenance:" in out and "srl run: seeds" in out and "the start model's own run" in out
    assert "decontaminated against: verified (500)" in out
    assert "## Provenance" in (runs["srl"] / "report" / "summary.md").read_text()
    code, out, _ = cli(["report", runs["data"]], capsys)
    assert code == 0 and "dataset " in out and "input files" in out
    code, out, _ = cli(["report", runs["sft"], runs["srl"], "-o", tmp_path / "cmp"], capsys)
    assert code == 0
    png = (tmp_path / "cmp" / "compare.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1500, 800)
    table = (tmp_path / "cmp" / "compare.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [r.split("|")[1].strip() for r in rows] == ["`sft`", "`srl`"]
    data_hash = read_provenance(runs["data"])["dataset_hash"][:12]
    assert all(data_hash in r for r in rows)
    val = [json.loads(line)["val/reward"] for line in (runs["srl"] / "metrics.jsonl").read_text().splitlines()
           if "val/reward" in json.loads(line)]
    assert f"{val[-1]:.3g}" in rows[1]
    code, _, err = cli(["report", runs["sft"], tmp_path / "missing"], capsys)
    assert code == 2 and "no such run folder" in err
