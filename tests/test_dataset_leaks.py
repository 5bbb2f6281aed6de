"""build-dataset's leak handling end to end: a crafted leaky trajectory in every supported
format is dropped (--leaks drop, the default), kept with its step targets marked (flag), or
kept unscanned (keep); counts and examples land in stats.json."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest

from swe_srl.dataset import DatasetConfig, build_dataset, load_step_targets
from swe_srl.errors import InputError
from swe_srl.formats import read_record, read_trajectories
from swe_srl.formats._io import iter_records
from swe_srl.paths import SAMPLES_DIR
from tests.test_dataset import make_traj, write_trajs

# Per format: a leaky command appended to one of the sample's bash commands, and its rule.
CASES = [
    ("mini-swe-agent-1", "git log --all --oneline", "git-all-refs"),
    ("mini-swe-agent-1.1", "git fetch origin", "vcs-fetch"),
    ("nebius", "git reflog", "git-reflog"),
    ("openhands", "git show deadbeef1234", "git-other-revision"),
    ("swe-agent", "git fsck --lost-found", "git-unreachable-objects"),
    ("swe-gym", "cat .git/packed-refs", "git-internals"),
    ("swe-smith", "curl -sL https://github.com/o/p/pull/1.diff", "code-host-fetch"),
    ("swe-srl", "git stash pop", "git-foreign-stash"),
]
# A command that reads back unchanged at every level of a record (no JSON escapes).
_PLAIN = re.compile(r"[\x20-\x7e]{8,}")

pytestmark = pytest.mark.skipif(not SAMPLES_DIR.is_dir(), reason="bundled samples missing")


def _replace(value, old: str, new: str):
    if isinstance(value, str):
        return value.replace(old, new)
    if isinstance(value, list):
        return [_replace(v, old, new) for v in value]
    if isinstance(value, dict):
        return {k: _replace(v, old, new) for k, v in value.items()}
    return value


def craft(folder: str, leak: str, out_dir: Path) -> Path:
    """One record of the format's sample (not known to have failed) with ``; LEAK`` appended
    to one of its bash commands, written in the sample's container (Parquet rows as JSONL:
    detection is by content)."""
    for path in sorted((SAMPLES_DIR / folder).iterdir()):
        for _, record in iter_records(path, lambda *_: None):
            traj = read_record(copy.deepcopy(record), str(path))
            commands = [s.action.arguments.get("command", "") for s in traj.steps if s.action.tool == "bash"]
            plain = [c for c in commands if _PLAIN.fullmatch(c) and '"' not in c and "\\" not in c]
            if traj.resolved is False or not plain:
                continue
            crafted = _replace(record, plain[0], f"{plain[0]}; {leak}")
            if path.suffix in (".jsonl", ".parquet"):
                out = out_dir / "crafted.jsonl"
                out.write_text(json.dumps(crafted, default=str) + "\n")
            else:
                out = out_dir / path.name
                out.write_text(json.dumps(crafted, default=str))
            return out
    raise AssertionError(f"no sample of {folder} has a plain bash command")


@pytest.fixture()
def clean(tmp_path):
    return write_trajs(tmp_path / "clean.jsonl", [make_traj(task_id="clean__clean-1", n=4)])


def _crafted_trajectory(path: Path, leak: str):
    [traj] = list(read_trajectories([path]))
    leaky = {k for k, s in enumerate(traj.steps) if leak in str(s.action.arguments.get("command", ""))}
    assert leaky, "the leak did not reach an action"
    return traj, leaky


@pytest.mark.parametrize("folder, leak, rule", CASES, ids=[c[0] for c in CASES])
def test_drop_flag_keep_in_every_format(tmp_path, clean, folder, leak, rule):
    crafted = craft(folder, leak, tmp_path)
    traj, leaky = _crafted_trajectory(crafted, leak)
    assert traj.source_format == folder

    def build(mode):
        out = tmp_path / mode
        result = build_dataset([crafted, clean], out, DatasetConfig(val_fraction=0.0, leaks=mode), output="jsonl")
        return result.stats, load_step_targets(out / "train.jsonl")

    stats, targets = build("drop")
    assert {t.trajectory_id for t in targets} == {"clean__clean-1"}
    assert stats["dropped_trajectories"] == {"leaky": 1}
    leaks = stats["leaks"]
    assert leaks["by_rule"] == {rule: {"trajectories": 1, "steps": len(leaky)}}
    assert (leaks["trajectories_scanned"], leaks["leaky_trajectories"], leaks["leaky_steps"]) == (2, 1, len(leaky))
    assert (leaks["dropped_trajectories"], leaks["dropped_step_targets"]) == (1, len(traj.steps))
    example = leaks["examples"][0]
    assert example["rule"] == rule and example["step"] in leaky and leak.split()[0] in example["text"]
    assert example["trajectory_id"] == traj.trajectory_id

    stats, targets = build("flag")
    mine = [t for t in targets if t.trajectory_id == traj.trajectory_id]
    assert len(mine) == len(traj.steps)
    assert {t.step_index for t in mine if t.leaks} == leaky
    assert all(t.leaks == (rule,) for t in mine if t.leaks)
    assert all(t.leaks == () for t in targets if t.trajectory_id != traj.trajectory_id)
    assert stats["dropped_trajectories"] == {} and stats["leaks"]["leaky_trajectories"] == 1
    assert stats["leaks"]["dropped_trajectories"] == 0

    stats, targets = build("keep")
    assert len([t for t in targets if t.trajectory_id == traj.trajectory_id]) == len(traj.steps)
    assert all(t.leaks == () for t in targets)
    assert stats["leaks"]["mode"] == "keep" and stats["leaks"]["trajectories_scanned"] == 0


def test_flagged_targets_survive_parquet(tmp_path, clean):
    crafted = craft("swe-smith", "git log --all", tmp_path)
    build_dataset([crafted, clean], tmp_path / "o", DatasetConfig(val_fraction=0.0, leaks="flag"), output="both")
    from_parquet = load_step_targets(tmp_path / "o" / "train.parquet")
    assert from_parquet == load_step_targets(tmp_path / "o" / "train.jsonl")
    assert any(t.leaks == ("git-all-refs",) for t in from_parquet)


def test_only_leaky_trajectories_is_a_clear_error(tmp_path):
    crafted = craft("swe-smith", "git reflog", tmp_path)
    with pytest.raises(InputError, match=r"1 leaky.*--leaks flag"):
        build_dataset([crafted], tmp_path / "o", DatasetConfig())
    assert not (tmp_path / "o" / "train.jsonl").exists()
