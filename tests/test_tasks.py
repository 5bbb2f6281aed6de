"""Task loading: every input shape, bad rows, subsets, selection, SWE-bench names and commands."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from swe_srl import tasks
from swe_srl.errors import ConfigError, InputError
from swe_srl.schemas import Task

REAL_SWEBENCH = Path(__file__).resolve().parents[2] / "shared" / "real-samples" / "swebench"


def _row(i: int = 0, **over) -> dict:
    row = {
        "repo": "acme/widgets",
        "instance_id": f"acme__widgets-{i}",
        "base_commit": "a" * 40,
        "problem_statement": "widgets break",
        "patch": "diff --git a/w.py b/w.py\n",
        "test_patch": "diff --git a/tests/test_w.py b/tests/test_w.py\n--- a/tests/test_w.py\n+++ b/tests/test_w.py\n",
        "FAIL_TO_PASS": json.dumps(["tests/test_w.py::test_new"]),
        "PASS_TO_PASS": ["tests/test_w.py::test_old"],
        "version": "1.0",
        "difficulty": "<15 min fix" if i % 2 == 0 else "15 min - 1 hour",
    }
    row.update(over)
    return row


def test_demo_tasks_load_with_local_defaults():
    demo = tasks.load_tasks("demo")
    assert len(demo) >= 8
    assert [t.instance_id for t in demo] == sorted(t.instance_id for t in demo)
    for task in demo:
        assert task.source == "local" and task.log_parser == "pytest" and task.image == ""
        assert task.fail_to_pass and task.test_files and task.workdir == "/testbed"
        assert Path(task.metadata["task_dir"], "repo").is_dir()
        assert tasks.task_test_command(task).startswith(task.test_cmd + " tests/")


def test_fail_to_pass_as_json_string_or_list():
    task = tasks.task_from_row(_row())
    assert task.fail_to_pass == ("tests/test_w.py::test_new",)
    assert task.pass_to_pass == ("tests/test_w.py::test_old",)
    assert task.test_files == ("tests/test_w.py",)


def test_swebench_rows_get_official_image_and_pytest_command():
    task = tasks.task_from_row(_row())
    assert task.image == "swebench/sweb.eval.x86_64.acme_1776_widgets-0:latest"
    assert tasks.task_test_command(task) == (
        "source /opt/miniconda3/bin/activate && conda activate testbed && pytest -rA tests/test_w.py")
    assert tasks.task_test_command(replace(task, image="mine:1")) == "pytest -rA tests/test_w.py"
    assert task.log_parser == "pytest"  # swebench knows no parser for acme/widgets


def test_row_image_and_parser_fields_win():
    task = tasks.task_from_row(_row(image="my/image:1", log_parser="parse_log_pytest_v2"))
    assert (task.image, task.log_parser) == ("my/image:1", "parse_log_pytest_v2")


@pytest.mark.parametrize("bad, message", [
    ({"instance_id": ""}, "missing instance_id"),
    ({"FAIL_TO_PASS": "not json"}, "not a JSON list"),
    ({"PASS_TO_PASS": [1, 2]}, "list of test names"),
])
def test_bad_rows_are_clear_errors_naming_the_row(bad, message):
    with pytest.raises(InputError, match=rf"rows row 1: .*{message}"):
        tasks.tasks_from_rows([_row(0), _row(1, **bad)])


def test_non_object_row():
    with pytest.raises(InputError, match="must be an object"):
        tasks.tasks_from_rows(["just a string"])


def test_jsonl_json_and_parquet_files_give_the_same_tasks(tmp_path):
    rows = [_row(i) for i in range(3)]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")
    (tmp_path / "t.json").write_text(json.dumps(rows))
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{**r, "PASS_TO_PASS": json.dumps(r["PASS_TO_PASS"])} for r in rows]),
                   tmp_path / "t.parquet")
    loaded = [tasks.load_tasks(str(tmp_path / name)) for name in ("t.jsonl", "t.json", "t.parquet")]
    assert loaded[0] == loaded[1] == loaded[2]
    assert [t.instance_id for t in loaded[0]] == [r["instance_id"] for r in rows]


def test_single_json_object_file(tmp_path):
    (tmp_path / "one.json").write_text(json.dumps(_row(7)))
    assert [t.instance_id for t in tasks.load_tasks(tmp_path / "one.json")] == ["acme__widgets-7"]


def test_broken_files_are_input_errors(tmp_path):
    (tmp_path / "bad.jsonl").write_text(json.dumps(_row()) + "\n{oops\n")
    with pytest.raises(InputError, match=r"bad.jsonl:2: not JSON"):
        tasks.load_tasks(tmp_path / "bad.jsonl")
    (tmp_path / "rows.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="unknown task file type"):
        tasks.load_tasks(tmp_path / "rows.csv")
    with pytest.raises(InputError, match="neither 'demo', a file"):
        tasks.load_tasks(str(tmp_path / "missing.jsonl"))


def test_datasets_dataset_and_dataset_dict():
    datasets = pytest.importorskip("datasets")
    rows = [_row(i) for i in range(4)]
    table = {k: [r[k] for r in rows] for k in rows[0]}
    table["PASS_TO_PASS"] = [json.dumps(r["PASS_TO_PASS"]) for r in rows]
    ds = datasets.Dataset.from_dict(table)
    assert len(tasks.load_tasks(ds)) == 4
    dd = datasets.DatasetDict({"test": ds, "dev": ds.select(range(1))})
    assert len(tasks.load_tasks(dd)) == 4
    assert len(tasks.load_tasks(dd, split="dev")) == 1
    with pytest.raises(InputError, match="no split 'train'"):
        tasks.load_tasks(dd, split="train")


def test_list_of_rows_source():
    assert len(tasks.load_tasks([_row(0), _row(1)])) == 2


def test_task_folder_source(tmp_path):
    demo = tasks.load_local_tasks()
    one = Path(demo[0].metadata["task_dir"])
    assert tasks.load_tasks(one) == [demo[0]]
    with pytest.raises(InputError, match="no task folders"):
        tasks.load_local_tasks(tmp_path)
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "task.json").write_text("{}")
    with pytest.raises(InputError, match="needs task.json and repo/"):
        tasks.load_local_tasks(tmp_path)


def _ids(found: list[Task]) -> list[str]:
    return [t.instance_id for t in found]


def test_selection_ids_slice_filter_repo_difficulty():
    rows = [_row(i, repo="acme/widgets" if i < 6 else "acme/gears") for i in range(10)]
    assert _ids(tasks.load_tasks(rows, ids=["acme__widgets-3", "acme__widgets-1"])) == [
        "acme__widgets-3", "acme__widgets-1"]
    assert _ids(tasks.load_tasks(rows, slice="2:4")) == ["acme__widgets-2", "acme__widgets-3"]
    assert _ids(tasks.load_tasks(rows, slice=":-9")) == ["acme__widgets-0"]
    assert _ids(tasks.load_tasks(rows, filter=r"-[89]$")) == ["acme__widgets-8", "acme__widgets-9"]
    assert len(tasks.load_tasks(rows, repo="acme/gears")) == 4
    assert len(tasks.load_tasks(rows, difficulty="15 min - 1 hour")) == 5


def test_shuffle_is_seeded_and_applied_before_slice():
    rows = [_row(i) for i in range(20)]
    a = _ids(tasks.load_tasks(rows, shuffle=True, seed=3, slice="0:5"))
    b = _ids(tasks.load_tasks(rows, shuffle=True, seed=3, slice="0:5"))
    c = _ids(tasks.load_tasks(rows, shuffle=True, seed=4, slice="0:5"))
    assert a == b and a != c and a != _ids(tasks.load_tasks(rows, slice="0:5"))


@pytest.mark.parametrize("fields, error, message", [
    ({"filter": "(unclosed"}, ConfigError, "not a valid regex"),
    ({"slice": "3"}, ConfigError, "start:stop"),
    ({"ids": ["nope"]}, ConfigError, "not in the source"),
    ({"subset": "no-such-subset"}, ConfigError, "unknown subset"),
    ({"repo": "other/repo"}, InputError, "no tasks left"),
    ({"colour": "blue"}, ConfigError, "bad task selection"),
])
def test_bad_selections_are_clear_errors(fields, error, message):
    with pytest.raises(error, match=message):
        tasks.load_tasks([_row(0)], **fields)


def test_selection_object_and_keywords_are_exclusive():
    with pytest.raises(ConfigError, match="not both"):
        tasks.load_tasks([_row(0)], tasks.TaskSelection(), slice="0:1")


def test_named_subsets():
    assert {"demo", "verified-mini"} <= set(tasks.available_subsets())
    mini = tasks.load_subset("verified-mini")
    assert len(mini) == len(set(mini)) == 50
    assert sum(i.startswith("django__django-") for i in mini) == 25
    assert sum(i.startswith("sphinx-doc__sphinx-") for i in mini) == 25
    assert set(tasks.load_subset("demo")) == {t.instance_id for t in tasks.load_local_tasks()}
    assert len(tasks.load_tasks("demo", subset="demo")) == len(tasks.load_subset("demo"))


def test_subset_keeps_only_ids_present_in_the_source():
    rows = [_row(0, instance_id="django__django-11999", repo="django/django"), _row(1)]
    assert _ids(tasks.load_tasks(rows, subset="verified-mini")) == ["django__django-11999"]


def test_subset_from_an_id_file(tmp_path):
    (tmp_path / "mine.txt").write_text("# my picks\nacme__widgets-1\n\nacme__widgets-0  # second\n")
    rows = [_row(i) for i in range(3)]
    assert _ids(tasks.load_tasks(rows, subset=str(tmp_path / "mine.txt"))) == ["acme__widgets-1", "acme__widgets-0"]


def test_swebench_image_names():
    assert tasks.swebench_image_name("django__django-11999") == (
        "swebench/sweb.eval.x86_64.django_1776_django-11999:latest")
    assert tasks.swebench_image_name("sphinx-doc__sphinx-8721") == (
        "swebench/sweb.eval.x86_64.sphinx-doc_1776_sphinx-8721:latest")


def test_swebench_parsers_and_commands_per_repo():
    assert tasks.swebench_log_parser("django/django") == "parse_log_django"
    assert tasks.swebench_log_parser("sphinx-doc/sphinx") == "parse_log_sphinx"
    assert tasks.swebench_log_parser("unknown/repo") == "pytest"
    cmd = tasks.swebench_test_command("django/django", ["tests/model_fields/tests.py", "docs/x.txt"])
    assert cmd.endswith("--parallel 1 model_fields.tests")
    assert tasks.swebench_test_command("sphinx-doc/sphinx", ["tests/test_ext.py"]).endswith("-- tests/test_ext.py")


def test_files_in_patch_skips_deletions():
    patch = ("diff --git a/tests/a.py b/tests/a.py\n--- a/tests/a.py\n+++ b/tests/a.py\n"
             "diff --git a/tests/new.py b/tests/new.py\nnew file mode 100644\n--- /dev/null\n+++ b/tests/new.py\n"
             "diff --git a/tests/old.py b/tests/old.py\ndeleted file mode 100644\n--- a/tests/old.py\n+++ /dev/null\n")
    assert tasks.files_in_patch(patch) == ("tests/a.py", "tests/new.py")


def test_real_swebench_verified_records():
    sample = REAL_SWEBENCH / "verified_records.sample.jsonl"
    if not sample.is_file():
        pytest.skip("real SWE-bench samples not present")
    loaded = tasks.load_tasks(sample)
    django = [t for t in loaded if t.repo == "django/django"]
    assert django and all(t.log_parser == "parse_log_django" for t in django)
    for task in loaded:
        assert task.fail_to_pass and task.image.startswith("swebench/sweb.eval.x86_64.")
        assert "runtests.py" in tasks.task_test_command(task)


def _task_folder_without_base_commit(tmp_path: Path) -> tuple[Path, str]:
    """A copy of a demo task folder whose task.json lacks base_commit; and the value it had."""
    source = Path(tasks.TASKS_DIR) / "swe-srl-demo__datekit-1"
    folder = tmp_path / "tasks" / source.name
    shutil.copytree(source, folder)
    record = json.loads((folder / "task.json").read_text())
    expected = record.pop("base_commit")
    (folder / "task.json").write_text(json.dumps(record))
    return folder, expected


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_task_folder_without_base_commit_gets_the_image_commit(tmp_path):
    # Adding a task folder needed a hand-computed base_commit ('task row is missing base_commit').
    folder, expected = _task_folder_without_base_commit(tmp_path)
    task = tasks.load_local_task(folder)
    assert task.base_commit == expected
    assert [t.base_commit for t in tasks.load_tasks(folder.parent)] == [expected]


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_task_repo_with_its_own_history_gets_the_commit_the_image_makes(tmp_path):
    # The image commits repo/'s files afresh (its .git is not kept): that commit is the base.
    folder, expected = _task_folder_without_base_commit(tmp_path)
    repo = folder / "repo"
    env = {**os.environ, "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@a.invalid", "GIT_COMMITTER_NAME": "a",
           "GIT_COMMITTER_EMAIL": "a@a.invalid"}
    subprocess.run("git init -q && git add -A && git commit -qm 'their history'", shell=True, cwd=repo, env=env,
                   check=True)
    own_head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    task = tasks.load_local_task(folder)
    assert task.base_commit == expected != own_head


def test_task_folder_without_base_commit_and_without_git_is_an_input_error(tmp_path, monkeypatch):
    folder, _ = _task_folder_without_base_commit(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    with pytest.raises(InputError, match="no base_commit, and it cannot be computed"):
        tasks.load_local_task(folder)
