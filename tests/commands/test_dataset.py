"""`swe-srl build-dataset` end to end, including every kind of bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from swe_srl.cli import main
from swe_srl.paths import SAMPLES_DIR
from tests.test_dataset import make_traj, write_trajs


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["build-dataset", *map(str, args)])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def assert_one_line_error(code, err, needle):
    assert code not in (0, None)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and needle in lines[0], err
    assert "Traceback" not in err


@pytest.mark.skipif(not SAMPLES_DIR.is_dir(), reason="bundled samples missing")
def test_console_script_on_bundled_samples(tmp_path):
    exe = Path(sys.executable).with_name("swe-srl")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "swe_srl.cli"]
    proc = subprocess.run([*cmd, "build-dataset", "-o", str(tmp_path / "ds")], capture_output=True, text=True,
                          env=os.environ | {"HF_HUB_OFFLINE": "1"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    stats = json.loads((tmp_path / "ds" / "stats.json").read_text())
    # every bundled format contributes step targets
    assert len(stats["by_format"]) >= 7
    assert stats["step_targets"]["train"] > 20
    assert "step targets" in proc.stdout
    for name in ("train.jsonl", "val.jsonl", "train.parquet", "val.parquet"):
        assert (tmp_path / "ds" / name).exists()


def test_missing_path(tmp_path, capsys):
    code, _, err = run_cli([tmp_path / "nope.jsonl", "-o", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, "nope.jsonl")


def test_unknown_format_name(tmp_path, capsys):
    src = write_trajs(tmp_path / "t.jsonl", [make_traj()])
    code, _, err = run_cli([src, "--format", "made-up", "-o", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, "made-up")


@pytest.mark.parametrize("content",
                         [b"", b"\x00\x01\xff\xfe binary \x89PNG", b'{"messages": [', b'{"hello": "world"}\n'],
                         ids=["empty", "binary", "truncated-json", "unknown-format"])
def test_unusable_file_fails_with_one_line(tmp_path, capsys, content):
    bad = tmp_path / "bad.json"
    bad.write_bytes(content)
    code, _, err = run_cli([bad, "-o", tmp_path / "o"], capsys)
    assert_one_line_error(code, err, "bad.json")
    assert not (tmp_path / "o" / "train.jsonl").exists()


def test_bad_records_are_skipped_and_listed(tmp_path, capsys):
    good = [json.dumps(make_traj(task_id=f"r__{i}").to_dict()) for i in range(4)]
    wrong_types = json.dumps(make_traj(task_id="r__bad").to_dict() | {"steps": "not a list"})
    lines = [good[0], "{truncated", good[1], wrong_types, good[2], "[1, 2]", good[3]]
    src = tmp_path / "mixed.jsonl"
    src.write_text("\n".join(lines) + "\n")
    code, out, _ = run_cli([src, "-o", tmp_path / "o", "--val-fraction", "0"], capsys)
    assert code == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["skipped_records"]["count"] == 3
    rows = sorted(s["row"] for s in stats["skipped_records"]["listed"])
    assert rows == [1, 3, 5] or rows == [2, 4, 6]  # 0- or 1-based, but the right lines
    assert all(s["file"].endswith("mixed.jsonl") and s["reason"] for s in stats["skipped_records"]["listed"])
    assert stats["step_targets"]["train"] == 4 * 5
    assert "skipped 3" in out

    code, _, err = run_cli([src, "-o", tmp_path / "o2", "--strict"], capsys)
    assert_one_line_error(code, err, "--strict")


def test_directory_input_mixes_formats(tmp_path, capsys):
    if not SAMPLES_DIR.is_dir():
        pytest.skip("bundled samples missing")
    shutil.copytree(SAMPLES_DIR, tmp_path / "in")
    write_trajs(tmp_path / "in" / "ours.jsonl", [make_traj(task_id="r__ours")])
    code, _, _ = run_cli([tmp_path / "in", "-o", tmp_path / "o", "--output", "jsonl"], capsys)
    assert code == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert "swe-srl" in stats["by_format"]
    assert not (tmp_path / "o" / "train.parquet").exists()


# ---------------------------------------------------------------- -c / --set / flags


def _config_of(out_dir: Path) -> dict:
    return json.loads((out_dir / "stats.json").read_text())["config"]


def test_config_file_dataset_section_then_set(tmp_path, capsys):
    src = write_trajs(tmp_path / "t.jsonl", [make_traj(task_id=f"r__{i}", n=4) for i in range(10)])
    cfg = tmp_path / "mine.yaml"
    # A preset-style file: the train config at the top level (ignored here), then `dataset:`.
    cfg.write_text("method: sft\ndataset:\n  context_rounds: 0\n  syntax: bash_block\n  val_fraction: 0.5\n")
    code, _, err = run_cli([src, "-c", cfg, "-o", tmp_path / "o", "-q"], capsys)
    assert code in (0, None), err
    got = _config_of(tmp_path / "o")
    assert (got["context_rounds"], got["syntax"], got["val_fraction"]) == (0, "bash_block", 0.5)
    first = json.loads((tmp_path / "o" / "train.jsonl").read_text().splitlines()[0])
    assert first["target"].startswith("```bash")  # the file's syntax reached the targets

    # --set patches the file's section; keys are the section's own (no "dataset." prefix).
    code, _, err = run_cli([src, "--config", cfg, "--set", "val_fraction=0", "-s", "min_steps=2",
                            "-o", tmp_path / "o2", "-q"], capsys)
    assert code in (0, None), err
    got = _config_of(tmp_path / "o2")
    assert (got["context_rounds"], got["val_fraction"], got["min_steps"]) == (0, 0.0, 2)
    stats = json.loads((tmp_path / "o2" / "stats.json").read_text())
    assert stats["step_targets"].get("val", 0) == 0 and stats["step_targets"]["train"] == 10 * 4


def test_flag_wins_over_set(tmp_path, capsys):
    src = write_trajs(tmp_path / "t.jsonl", [make_traj(task_id=f"r__{i}") for i in range(3)])
    code, _, err = run_cli([src, "--set", "context_rounds=3", "-o", tmp_path / "o", "-q"], capsys)
    assert code in (0, None), err
    assert _config_of(tmp_path / "o")["context_rounds"] == 3
    code, _, err = run_cli([src, "--set", "context_rounds=3", "-k", "4", "--set", "include_submit=false",
                            "--include-submit", "-o", tmp_path / "o2", "-q"], capsys)
    assert code in (0, None), err
    got = _config_of(tmp_path / "o2")
    assert (got["context_rounds"], got["include_submit"]) == (4, True)


@pytest.mark.parametrize("args, needle", [
    (["--set", "context_round=3"], "did you mean context_rounds"),
    (["--set", "syntax=yaml"], "syntax"),
    (["--set", "val_fraction=2"], "val_fraction"),
    (["--set", "no-equals-sign"], "no-equals-sign"),
    (["--split-by", "repo"], "split_by"),
    (["-k", "-1"], "context_rounds"),
    (["-c", "no-such-preset"], "no-such-preset"),
], ids=["unknown-key", "bad-literal", "out-of-range", "malformed", "bad-flag", "negative-flag", "unknown-preset"])
def test_bad_config_is_one_line_exit_2(tmp_path, capsys, args, needle):
    src = write_trajs(tmp_path / "t.jsonl", [make_traj()])
    code, _, err = run_cli([src, *args, "-o", tmp_path / "o"], capsys)
    assert code == 2
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not SAMPLES_DIR.is_dir(), reason="bundled samples missing")
def test_default_invocation_is_the_default_config(tmp_path, capsys):
    """No -c, no --set, no flags: exactly DatasetConfig() (the counts of the library call)."""
    from dataclasses import asdict

    from swe_srl.dataset import DatasetConfig, build_dataset
    from swe_srl.paths import default_trajectory_inputs

    code, _, err = run_cli(["-o", tmp_path / "cli", "-q"], capsys)
    assert code in (0, None), err
    build_dataset(default_trajectory_inputs(), tmp_path / "lib", DatasetConfig())
    cli, lib = (json.loads((tmp_path / d / "stats.json").read_text()) for d in ("cli", "lib"))
    assert cli["config"] == lib["config"] == asdict(DatasetConfig())
    for key in ("step_targets", "trajectories_per_split", "dropped_trajectories", "by_format", "target_tools"):
        assert cli[key] == lib[key], key
    assert (tmp_path / "cli" / "train.jsonl").read_bytes() == (tmp_path / "lib" / "train.jsonl").read_bytes()


# ---------------------------------------------------------------- --leaks


def _leaky_traj():
    import dataclasses

    from swe_srl.actions import make_action

    traj = make_traj(task_id="r__leaky", n=4)
    steps = list(traj.steps)
    steps[1] = dataclasses.replace(steps[1], action=make_action("bash", {"command": "cd /testbed && git log --all"}))
    return dataclasses.replace(traj, steps=tuple(steps))


def test_leaks_modes_in_summary_and_stats(tmp_path, capsys):
    src = write_trajs(tmp_path / "t.jsonl", [_leaky_traj(), make_traj(task_id="r__clean")])
    code, out, err = run_cli([src, "-o", tmp_path / "drop", "--val-fraction", "0"], capsys)
    assert code in (0, None), err
    assert "1 of 2 trajectories leaky (1 steps), 1 dropped (4 step targets)" in " ".join(out.split())
    assert "git-all-refs" in out and "git log --all" in out
    assert json.loads((tmp_path / "drop" / "stats.json").read_text())["dropped_trajectories"] == {"leaky": 1}

    code, out, err = run_cli([src, "-o", tmp_path / "flag", "--val-fraction", "0", "--leaks", "flag"], capsys)
    assert code in (0, None), err
    assert "leak scan (flag): 1 of 2" in out
    rows = [json.loads(line) for line in (tmp_path / "flag" / "train.jsonl").read_text().splitlines()]
    assert [r["leaks"] for r in rows if r["trajectory_id"] == "r__leaky"] == [[], ["git-all-refs"], [], []]

    code, out, err = run_cli([src, "-o", tmp_path / "keep", "--set", "leaks=keep", "-q"], capsys)
    assert code in (0, None), err
    stats = json.loads((tmp_path / "keep" / "stats.json").read_text())
    assert stats["config"]["leaks"] == "keep" and stats["leaks"]["trajectories_scanned"] == 0


def test_bad_leaks_mode_is_one_line_exit_2(tmp_path, capsys):
    src = write_trajs(tmp_path / "t.jsonl", [make_traj()])
    code, _, err = run_cli([src, "--leaks", "maybe", "-o", tmp_path / "o"], capsys)
    assert code == 2
    assert_one_line_error(code, err, "leaks")
