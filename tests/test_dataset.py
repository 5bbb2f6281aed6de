"""Trajectory -> step targets: context window, truncation, filters, split, writers, stats."""

from __future__ import annotations

import json

import pytest

from swe_srl.actions import make_action, render_xml
from swe_srl.dataset import (
    DatasetConfig,
    build_dataset,
    drop_reason,
    load_step_targets,
    split_of,
    step_targets,
    truncate_middle,
)
from swe_srl.errors import ConfigError, InputError
from swe_srl.schemas import Step, Trajectory


def make_traj(task_id="repo__t-1", n=5, resolved=True, traj_id="", obs_len=10):
    steps = [Step(action=make_action("bash", {"command": f"cmd {i}"}), thought=f"thought {i}",
                  observation=f"out {i} " + "x" * obs_len, exit_code=0) for i in range(n - 1)]
    steps.append(Step(action=make_action("submit"), thought="done"))
    return Trajectory(task_id=task_id, trajectory_id=traj_id or task_id, problem_statement=f"issue of {task_id}",
                      steps=tuple(steps), source_format="swe-srl", resolved=resolved)


def test_context_is_issue_plus_last_k_rounds():
    traj = make_traj(n=5)
    targets = list(step_targets(traj, DatasetConfig(context_rounds=2, val_fraction=0)))
    assert [t.step_index for t in targets] == [0, 1, 2, 3, 4]
    assert targets[0].context == ()  # first step: the issue alone
    assert [r.action for r in targets[1].context] == [render_xml(traj.steps[0].action)]
    assert [r.action for r in targets[3].context] == [render_xml(s.action) for s in traj.steps[1:3]]
    assert targets[3].context[-1].observation == traj.steps[2].observation
    assert targets[3].target == render_xml(traj.steps[3].action)
    assert targets[3].expert_thought == "thought 3"
    assert targets[4].target_tool == "submit" and targets[4].num_steps == 5
    assert all(t.problem_statement == "issue of repo__t-1" for t in targets)


def test_k_zero_and_large_k():
    traj = make_traj(n=4)
    assert all(t.context == () for t in step_targets(traj, DatasetConfig(context_rounds=0)))
    last = list(step_targets(traj, DatasetConfig(context_rounds=10)))[-1]
    assert len(last.context) == 3


def test_observation_truncation_keeps_head_and_tail():
    text = "HEAD" + "m" * 5000 + "TAIL"
    cut = truncate_middle(text, 300)
    assert cut.startswith("HEAD") and cut.endswith("TAIL")
    assert "characters omitted" in cut and len(cut) < 400
    assert truncate_middle("short", 300) == "short"
    assert truncate_middle(text, 0) == text  # 0 = no limit
    traj = make_traj(n=3, obs_len=10_000)
    target = list(step_targets(traj, DatasetConfig(observation_budget=500)))[-1]
    assert all(len(r.observation) < 600 for r in target.context)


def test_submit_steps_can_be_excluded():
    traj = make_traj(n=4)
    kept = list(step_targets(traj, DatasetConfig(include_submit=True)))
    dropped = list(step_targets(traj, DatasetConfig(include_submit=False)))
    assert len(kept) == 4 and len(dropped) == 3
    assert all(t.target_tool != "submit" for t in dropped)


def test_resolved_filters():
    cfg = DatasetConfig()
    assert drop_reason(make_traj(resolved=False), cfg) == "unresolved"
    assert drop_reason(make_traj(resolved=None), cfg) is None
    assert drop_reason(make_traj(resolved=None), DatasetConfig(require_resolved=True)) == "outcome unknown"
    assert drop_reason(make_traj(resolved=False), DatasetConfig(resolved_only=False)) is None
    assert drop_reason(make_traj(n=1), DatasetConfig(include_submit=False)) == "no usable steps"


def test_split_is_deterministic_and_by_trajectory():
    keys = [f"repo__task-{i}" for i in range(2000)]
    first = [split_of(k, 0.1, seed=0) for k in keys]
    assert first == [split_of(k, 0.1, seed=0) for k in keys]
    assert 0.07 < first.count("val") / len(keys) < 0.13
    assert first != [split_of(k, 0.1, seed=1) for k in keys]
    # every step of a trajectory shares its split; no trajectory is in both
    trajs = [make_traj(task_id=f"repo__t-{i}", n=6) for i in range(200)]
    seen: dict[str, set] = {}
    for traj in trajs:
        for t in step_targets(traj, DatasetConfig(val_fraction=0.3)):
            seen.setdefault(t.trajectory_id, set()).add(t.split)
    assert all(len(s) == 1 for s in seen.values())
    assert {"train", "val"} == set().union(*seen.values())


def test_split_by_task_keeps_sibling_trajectories_together():
    siblings = [make_traj(task_id=f"repo__t-{i // 4}", traj_id=f"repo__t-{i // 4}.{i}") for i in range(400)]
    by_task: dict[str, set] = {}
    for traj in siblings:
        for t in step_targets(traj, DatasetConfig(val_fraction=0.3, split_by="task")):
            by_task.setdefault(t.task_id, set()).add(t.split)
    assert all(len(s) == 1 for s in by_task.values())


def test_config_validation():
    with pytest.raises(ConfigError, match="val_fraction"):
        DatasetConfig(val_fraction=1.5)
    with pytest.raises(ConfigError, match="syntax"):
        DatasetConfig(syntax="yaml")  # type: ignore[arg-type]


def write_trajs(path, trajs):
    path.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in trajs))
    return path


def test_build_dataset_writes_splits_parquet_and_stats(tmp_path):
    trajs = [make_traj(task_id=f"repo__t-{i}", n=4 + i % 3) for i in range(60)]
    trajs.append(make_traj(task_id="repo__failed", resolved=False))
    src = write_trajs(tmp_path / "trajs.jsonl", trajs)
    result = build_dataset([src], tmp_path / "out", DatasetConfig(val_fraction=0.2), output="both")
    stats = json.loads((tmp_path / "out" / "stats.json").read_text())
    train = load_step_targets(tmp_path / "out" / "train.jsonl")
    val = load_step_targets(tmp_path / "out" / "val.jsonl")
    assert len(train) + len(val) == sum(len(t.steps) for t in trajs[:-1])
    assert {t.trajectory_id for t in train}.isdisjoint({t.trajectory_id for t in val})
    assert stats["dropped_trajectories"] == {"unresolved": 1}
    assert stats["step_targets"] == {"train": len(train), "val": len(val)}
    assert stats["target_tools"]["submit"] == 60
    assert stats["steps_per_trajectory"]["count"] == 60
    assert set(result.files) == {"train.jsonl", "val.jsonl", "train.parquet", "val.parquet"}
    assert load_step_targets(tmp_path / "out" / "train.parquet") == train
    assert not list((tmp_path / "out").glob("*.tmp"))


def test_parquet_and_jsonl_load_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    src = write_trajs(tmp_path / "t.jsonl", [make_traj(task_id=f"r__{i}") for i in range(10)])
    build_dataset([src], tmp_path / "out", DatasetConfig(val_fraction=0.0), output="both")
    for kind in ("parquet", "json"):
        ext = "parquet" if kind == "parquet" else "jsonl"
        ds = datasets.load_dataset(kind, data_files=str(tmp_path / "out" / f"train.{ext}"), split="train",
                                   cache_dir=str(tmp_path / "cache"))
        assert len(ds) == 50 and ds[0]["target"].startswith("<function=")
        assert isinstance(ds[1]["context"], list)


def test_interrupted_build_keeps_previous_outputs(tmp_path):
    good = write_trajs(tmp_path / "good.jsonl", [make_traj(task_id=f"r__{i}") for i in range(5)])
    out = tmp_path / "out"
    build_dataset([good], out, DatasetConfig(val_fraction=0.0), output="jsonl")
    before = (out / "train.jsonl").read_text()

    def explode(traj):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_dataset([good], out, DatasetConfig(val_fraction=0.0, context_rounds=0), output="jsonl",
                      on_trajectory=explode, overwrite=True)
    assert (out / "train.jsonl").read_text() == before
    assert not list(out.glob("*.tmp"))
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left


def test_empty_results_are_input_errors(tmp_path):
    only_failed = write_trajs(tmp_path / "f.jsonl", [make_traj(resolved=False)])
    with pytest.raises(InputError, match="every trajectory was dropped"):
        build_dataset([only_failed], tmp_path / "out", DatasetConfig())
    with pytest.raises(InputError):
        build_dataset([tmp_path / "missing.jsonl"], tmp_path / "out", DatasetConfig())
