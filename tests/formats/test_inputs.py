"""read_trajectories on damaged and unusual inputs: every bad record is reported as a Skip and
the good ones around it are still read; containers are recognised from their bytes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from swe_srl.formats import Skip, read_trajectories

SAMPLES = Path(__file__).resolve().parents[2] / "trajectories" / "samples"


def sample(fmt: str, name: str, row: int = 0) -> dict:
    path = SAMPLES / fmt / name
    text = path.read_text()
    if path.suffix == ".jsonl":
        return json.loads(text.splitlines()[row])
    data = json.loads(text)
    return data[row] if isinstance(data, list) else data


MINI = ("mini-swe-agent-1", "slugkit__slugkit-12.traj.json")
SMITH = ("swe-smith", "trajectories.jsonl")


def collect(*paths, fmt="auto"):
    skips: list[Skip] = []
    trajs = list(read_trajectories(list(paths), fmt=fmt, on_skip=skips.append))
    return trajs, skips


def test_jsonl_with_one_broken_line_keeps_the_good_ones(tmp_path):
    good = json.dumps(sample(*SMITH))
    path = tmp_path / "mixed.jsonl"
    path.write_text("\n".join([good, '{"instance_id": "x", "messages": [', "", good]) + "\n")
    trajs, skips = collect(path)
    assert len(trajs) == 2
    assert [t.source for t in trajs] == [f"{path}:0", f"{path}:3"]
    assert [(s.row, s.reason.split(":")[0]) for s in skips] == [(1, "invalid JSON line")]


def test_truncated_json_file_is_one_skip(tmp_path):
    path = tmp_path / "cut.traj.json"
    path.write_text(json.dumps(sample(*MINI), indent=1)[:5000])
    trajs, skips = collect(path)
    assert trajs == []
    assert len(skips) == 1 and skips[0].row is None
    assert skips[0].reason.startswith("truncated or invalid JSON")


@pytest.mark.parametrize("content, reason", [
    (b"", "empty file"),
    (b"  \n\n ", "empty file"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary file"),
    (b"instance_id,messages\nx,y\n", "not JSON"),
])
def test_unreadable_files_are_reported(tmp_path, content, reason):
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    trajs, skips = collect(path)
    assert trajs == [] and len(skips) == 1
    assert skips[0].reason.startswith(reason) and skips[0].file == str(path)


@pytest.mark.parametrize("mutate, reason", [
    (lambda r: r.update(messages="not a list"), "'messages' must be a list"),
    (lambda r: r.update(messages=[1, 2, 3]), "message 0 must be an object"),
    (lambda r: r.update(messages=[{"role": "system", "content": "hi"}]), "no user message"),
    (lambda r: r["messages"][2].update(content=42), "message content must be text"),
    (lambda r: r.update(messages=r["messages"][:2]), "no agent steps"),
])
def test_wrong_types_are_precise_skips(tmp_path, mutate, reason):
    record = sample(*MINI)
    mutate(record)
    path = tmp_path / "one.jsonl"
    path.write_text(json.dumps(record) + "\n")
    trajs, skips = collect(path)
    assert trajs == [] and len(skips) == 1
    assert reason in skips[0].reason


def test_unknown_format_and_non_object_rows(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps([{"id": 1, "text": "hello"}, [1, 2], "x", sample(*MINI)]))
    trajs, skips = collect(path)
    assert len(trajs) == 1
    assert [s.row for s in skips] == [0, 1, 2]
    assert skips[0].reason.startswith("unknown trajectory format (top-level keys: id, text)")
    assert "expected an object" in skips[1].reason


def test_explicit_format_that_does_not_fit_is_a_skip(tmp_path):
    path = tmp_path / "mini.json"
    path.write_text(json.dumps(sample(*MINI)))
    trajs, skips = collect(path, fmt="openhands")
    assert trajs == [] and "missing 'history'" in skips[0].reason


def test_single_object_array_and_concatenated_objects(tmp_path):
    record = sample(*MINI)
    one = tmp_path / "one.json"
    one.write_text(json.dumps(record, indent=2))
    array = tmp_path / "array.json"
    array.write_text(json.dumps([record, record]))
    concatenated = tmp_path / "concat.json"
    concatenated.write_text(json.dumps(record, indent=2) + "\n" + json.dumps(record, indent=2))
    for path, n in ((one, 1), (array, 2), (concatenated, 2)):
        trajs, skips = collect(path)
        assert len(trajs) == n and skips == []


def test_gzip_and_long_first_line_jsonl(tmp_path):
    # a first line longer than the sniffed head is still classified (and streamed) as JSONL
    line = json.dumps(dict(sample(*SMITH), notes="x" * 20_000))
    path = tmp_path / "t.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.write(line + "\n" + line + "\n")
    trajs, skips = collect(path)
    assert len(trajs) == 2 and skips == []
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(path.read_bytes()[:200])
    trajs, skips = collect(truncated)
    assert trajs == [] and skips and skips[-1].reason.startswith("cannot read file")


def test_parquet_with_nested_columns_and_json_strings(tmp_path):
    record = sample(*SMITH)
    nested = tmp_path / "nested.parquet"  # messages as a list<struct> column
    pq.write_table(pa.Table.from_pylist([record, record]), nested, row_group_size=1)
    as_text = tmp_path / "text.parquet"  # messages as a JSON string column (HF exports)
    pq.write_table(pa.Table.from_pylist([dict(record, messages=json.dumps(record["messages"]))]), as_text)
    trajs, skips = collect(nested, as_text)
    assert skips == [] and len(trajs) == 3
    assert trajs[0].steps == trajs[2].steps and trajs[1].source == f"{nested}:1"
    path = nested
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(path.read_bytes()[:64])
    trajs, skips = collect(broken)
    assert trajs == [] and skips[0].reason.startswith("unreadable Parquet")


def test_directories_are_searched_recursively_for_trajectory_files(tmp_path):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (nested / "t.traj.json").write_text(json.dumps(sample(*MINI)))
    (tmp_path / "notes.md").write_text("# not a trajectory")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "old.json").write_text("{")
    trajs, skips = collect(tmp_path)
    assert len(trajs) == 1 and skips == []


def test_content_parts_and_missing_optional_keys(tmp_path):
    record = sample(*MINI)
    for message in record["messages"]:
        message["content"] = [{"type": "text", "text": message["content"]}] if isinstance(message["content"],
                str) else message["content"]
    del record["info"]["config"], record["info"]["model_stats"], record["instance_id"]
    path = tmp_path / "slugkit__slugkit-12.traj.json"
    path.write_text(json.dumps(record))
    [t] = read_trajectories([path])
    assert t.task_id == "slugkit__slugkit-12"  # from the file name, the last resort
    assert t.model is None and len(t.steps) == 8
    assert t.steps[0].thought == "The issue is about slugify; find where it is defined."


def test_skips_are_logged_without_a_callback(tmp_path, caplog):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    assert list(read_trajectories([path])) == []
    assert "empty file" in caplog.text
    assert Skip("f", None, "r").to_dict() == {"file": "f", "row": None, "reason": "r"}
