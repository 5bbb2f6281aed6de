"""build-dataset writes a dataset folder whole or not at all: failures injected at every stage
of the write and real `kill -9`s leave the old dataset or the new one, never a mix, never .tmp
files in the target; another dataset is replaced only with --overwrite; no stale files from an
earlier --output."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swe_srl import dataset_io
from swe_srl.cli import main
from swe_srl.dataset import DatasetConfig, build_dataset
from swe_srl.errors import InputError
from swe_srl.paths import default_trajectory_inputs
from tests.test_dataset import make_traj, write_trajs

OLD = DatasetConfig(val_fraction=0.2, context_rounds=1, decontaminate="off")
NEW = DatasetConfig(val_fraction=0.2, context_rounds=2, decontaminate="off")


def snapshot(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def assert_whole(folder: Path) -> str:
    """The folder is one complete dataset: its files are exactly those its provenance lists
    (plus stats.json and provenance.json), with the listed contents; returns its fingerprint."""
    names = {p.name for p in folder.iterdir()}
    provenance = json.loads((folder / "provenance.json").read_text())
    assert names == set(provenance["files"]) | {"stats.json", "provenance.json"}, names
    for name, digest in provenance["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest, name
    stats = json.loads((folder / "stats.json").read_text())
    assert stats["config"]["context_rounds"] == provenance["options"]["context_rounds"]
    return provenance["fingerprint"]


def litter(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}."))


@pytest.fixture()
def source(tmp_path) -> Path:
    return write_trajs(tmp_path / "trajs.jsonl", [make_traj(task_id=f"r__t-{i}", n=4) for i in range(40)])


def test_another_dataset_needs_overwrite_the_same_one_does_not(source, tmp_path, capsys):
    out = tmp_path / "ds"
    build_dataset([source], out, OLD)
    before = snapshot(out)
    with pytest.raises(InputError, match="holds another dataset"):
        build_dataset([source], out, NEW)
    assert snapshot(out) == before
    build_dataset([source], out, OLD)  # the same inputs and options: rebuilt in place
    build_dataset([source], out, NEW, overwrite=True)
    assert json.loads((out / "stats.json").read_text())["config"]["context_rounds"] == 2
    with pytest.raises(SystemExit) as exc:  # the command: one line, exit 2
        main(["build-dataset", str(source), "-o", str(out), "--decontaminate", "off", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and "--overwrite" in err[0]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.md").write_text("mine")
    with pytest.raises(InputError, match="not a swe-srl dataset"):
        build_dataset([source], tmp_path / "mine", NEW, overwrite=True)
    assert (tmp_path / "mine" / "notes.md").read_text() == "mine"


def test_no_stale_files_from_another_output(source, tmp_path):
    out = tmp_path / "ds"
    build_dataset([source], out, NEW, output="both")
    build_dataset([source], out, NEW, output="jsonl", overwrite=True)
    assert {p.name for p in out.iterdir()} == {"train.jsonl", "val.jsonl", "stats.json", "provenance.json"}
    build_dataset([source], out, NEW, output="parquet", overwrite=True)
    assert {p.name for p in out.iterdir()} == {"train.parquet", "val.parquet", "stats.json", "provenance.json"}
    assert_whole(out)


def _fail_on_call(n: int, real):
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise OSError("injected failure")
        return real(*args, **kwargs)
    return wrapper


@pytest.mark.parametrize("point", ["mid-jsonl", "parquet", "stats.json", "provenance.json", "swap", "fallback-swap",
                                   "after-swap-cleanup"])
def test_injected_failures_leave_the_old_dataset_or_the_new(point, source, tmp_path, monkeypatch):
    import swe_srl.dataset as dataset_mod

    out = tmp_path / "ds"
    build_dataset([source], out, OLD)
    old = snapshot(out)
    if point == "mid-jsonl":
        monkeypatch.setattr(dataset_mod.SplitWriter, "write", _fail_on_call(50, dataset_mod.SplitWriter.write))
    elif point == "parquet":
        monkeypatch.setattr(dataset_mod, "jsonl_to_parquet", _fail_on_call(2, dataset_mod.jsonl_to_parquet))
    elif point in ("stats.json", "provenance.json"):
        n = 1 if point == "stats.json" else 2
        monkeypatch.setattr(dataset_io, "write_json_atomic", _fail_on_call(n, dataset_io.write_json_atomic))
    elif point == "swap":
        monkeypatch.setattr(dataset_io, "_exchange", _fail_on_call(1, dataset_io._exchange))
    elif point == "fallback-swap":  # no renameat2: rename aside, then the second rename fails
        monkeypatch.setattr(dataset_io, "_exchange", lambda a, b: False)
        monkeypatch.setattr(dataset_io.os, "rename", _fail_on_call(2, os.rename))
    elif point == "after-swap-cleanup":  # the new dataset is in; removing the old one fails
        monkeypatch.setattr(dataset_io.shutil, "rmtree", lambda path, ignore_errors=False: None)
    try:
        build_dataset([source], out, NEW, overwrite=True)
        new_published = True
    except OSError:
        new_published = False
    monkeypatch.undo()
    assert not list(out.glob("*.tmp"))
    fingerprint = assert_whole(out)
    if new_published:
        assert json.loads((out / "provenance.json").read_text())["options"]["context_rounds"] == 2
    else:
        assert snapshot(out) == old
    build_dataset([source], tmp_path / "other", NEW)  # a later run of this process works
    if point != "after-swap-cleanup":
        assert litter(out) == []
    assert fingerprint


def test_a_dead_writers_leftovers_are_recovered(source, tmp_path):
    """Killed between the two renames of the fallback swap: the old dataset lies aside and the
    target is missing; the next run puts it back (and drops a dead writer's staging folder)."""
    out = tmp_path / "ds"
    build_dataset([source], out, OLD)
    old = snapshot(out)
    dead = 2 ** 22 + 12345  # above the default pid_max: no process has it
    os.rename(out, tmp_path / f".ds.old-{dead}")
    (tmp_path / f".ds.building-{dead}").mkdir()
    (tmp_path / f".ds.building-{dead}" / "train.jsonl.tmp").write_text("half")
    with pytest.raises(InputError, match="holds another dataset"):
        build_dataset([source], out, NEW)
    assert snapshot(out) == old and litter(out) == []


def _cli(out: Path, context_rounds: int) -> list[str]:
    return [sys.executable, "-m", "swe_srl.cli", "build-dataset", "-o", str(out), "-q", "--overwrite",
            "--decontaminate", "off", "-k", str(context_rounds)]


def test_kill_9_mid_write_leaves_old_or_new_never_a_mix(tmp_path):
    """Real SIGKILLs of `swe-srl build-dataset` on the bundled data (2,457 step targets), timed
    by what the write has reached: just started, streaming the splits, converting to parquet,
    about to swap."""
    if not all(p.exists() for p in default_trajectory_inputs()):
        pytest.skip("bundled trajectories missing")
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = tmp_path / "ds"
    subprocess.run(_cli(out, 1), check=True, env=env, timeout=300)
    old_fp = assert_whole(out)
    subprocess.run(_cli(tmp_path / "ref", 2), check=True, env=env, timeout=300)
    new_fp = assert_whole(tmp_path / "ref")
    outcomes = []
    # (what must exist in the staging folder before the kill, extra delay in seconds)
    for wait_for, delay in ((None, 0.0), ("train.jsonl.tmp", 0.0), ("train.jsonl.tmp", 0.3), ("train.jsonl", 0.0),
                            ("train.parquet", 0.0), ("stats.json", 0.0), ("provenance.json", 0.0), ("<swapped>", 0.0)):
        proc = subprocess.Popen(_cli(out, 2), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        stage = tmp_path / f".ds.building-{proc.pid}"
        deadline, seen = time.monotonic() + 120, False
        while wait_for and proc.poll() is None and time.monotonic() < deadline:
            seen = seen or stage.exists()
            if (stage / wait_for).exists() or (wait_for == "<swapped>" and seen and not stage.exists()):
                break
            time.sleep(0.002)
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        fingerprint = assert_whole(out)  # one complete dataset, whatever the moment
        assert fingerprint in (old_fp, new_fp)
        assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
        outcomes.append(fingerprint)
    print("kill outcomes:", ["old" if f == old_fp else "new" for f in outcomes])
    assert outcomes[0] == old_fp and outcomes[-1] == new_fp  # killed before the write: old; after the swap: new
    subprocess.run(_cli(out, 2), check=True, env=env, timeout=300)
    assert assert_whole(out) == new_fp and litter(out) == []  # a dead writer's staging folder is gone


def test_a_dataset_from_before_provenance_counts_as_the_same_when_its_stats_say_so(source, tmp_path):
    out = tmp_path / "ds"
    build_dataset([source], out, OLD)
    (out / "provenance.json").unlink()  # what an earlier swe-srl wrote: splits and stats.json only
    build_dataset([source], out, OLD)  # the same command again: rebuilt, now with provenance
    assert_whole(out)
    (out / "provenance.json").unlink()
    with pytest.raises(InputError, match="holds another dataset"):
        build_dataset([source], out, NEW)
