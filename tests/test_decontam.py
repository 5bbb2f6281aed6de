"""Decontamination in build-dataset: planted eval instances (by id, by repo + base commit under
another id, by a lightly edited issue text) are dropped, unrelated ones kept, and the false
positives on the bundled and real-sample trajectories are counted."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from swe_srl.cli import main
from swe_srl.dataset import DatasetConfig, build_dataset, load_step_targets
from swe_srl.decontam import VERIFIED_FILE, Decontaminator, load_eval_set, parse_specs, shingles
from swe_srl.errors import ConfigError, InputError
from swe_srl.formats import read_trajectories
from swe_srl.paths import SAMPLES_DIR, default_trajectory_inputs
from tests.test_dataset import make_traj, write_trajs

REAL = Path(__file__).resolve().parents[2] / "shared" / "real-samples"
if not REAL.is_dir():
    REAL = Path("/work/shared/real-samples")
VERIFIED_RECORDS = REAL / "swebench" / "verified_records.sample.jsonl"
OPENHANDS_SAMPLE = SAMPLES_DIR / "openhands" / "output.jsonl"

# An issue text of our own, written for these tests, as an eval row would carry it.
ISSUE = (
    "Paginator.page_range raises TypeError when the object list is a generator\n\n"
    "Creating a Paginator from a generator expression and then asking for page_range fails with "
    "TypeError: object of type 'generator' has no len(). The count property calls len() on the object "
    "list when it has no count() method, and generators have neither. Expected: the paginator either "
    "materialises the generator once or raises a clear error at construction time that explains that "
    "sequences are required. Steps: build Paginator((x for x in range(10)), 3), read page_range, see "
    "the traceback from django/core/paginator.py line 85 in count."
)
EDITED = (ISSUE.replace("raises TypeError", "throws a TypeError").replace("Expected:", "What I expected:")
          .replace("Steps:", "To reproduce:") + "\nThanks!")


def verified_rows() -> list[dict]:
    return [json.loads(line) for line in VERIFIED_FILE.read_text().splitlines()]


def test_bundled_verified_list_is_the_500_instances_with_repo_and_commit():
    rows = verified_rows()
    assert len(rows) == 500 == len({r["instance_id"] for r in rows})
    assert all(set(r) == {"instance_id", "repo", "base_commit"} and len(r["base_commit"]) == 40 for r in rows)
    ids = REAL / "swebench" / "verified.ids.txt"
    if ids.is_file():  # the same list as the published one
        assert {r["instance_id"] for r in rows} == set(ids.read_text().split())


def test_eval_set_files_in_every_shape(tmp_path):
    (tmp_path / "ids.txt").write_text("# eval ids\nfoo__bar-1\n\nfoo__bar-2\n")
    (tmp_path / "ids.json").write_text(json.dumps(["foo__bar-1", "foo__bar-2"]))
    (tmp_path / "rows.jsonl").write_text(json.dumps({"instance_id": "foo__bar-1", "repo": "Foo/Bar",
                                                     "base_commit": "A" * 40, "problem_statement": ISSUE}) + "\n")
    (tmp_path / "rows.json").write_text(json.dumps({"instances": [{"instance_id": "foo__bar-1"}]}))
    assert [i.instance_id for i in load_eval_set(str(tmp_path / "ids.txt")).instances] == ["foo__bar-1", "foo__bar-2"]
    assert len(load_eval_set(str(tmp_path / "ids.json")).instances) == 2
    row = load_eval_set(str(tmp_path / "rows.jsonl")).instances[0]
    assert (row.repo, row.base_commit, row.problem_statement) == ("foo/bar", "a" * 40, ISSUE)
    assert load_eval_set(str(tmp_path / "rows.json")).instances[0].instance_id == "foo__bar-1"
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([{"instance_id": "foo__bar-9", "problem_statement": "x"}]),
                   tmp_path / "rows.parquet")
    assert load_eval_set(str(tmp_path / "rows.parquet")).instances[0].instance_id == "foo__bar-9"
    import gzip

    (tmp_path / "rows.jsonl.gz").write_bytes(gzip.compress((tmp_path / "rows.jsonl").read_bytes()))
    assert load_eval_set(str(tmp_path / "rows.jsonl.gz")).instances[0].problem_statement == ISSUE
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(InputError, match="not a readable Parquet"):
        load_eval_set(str(tmp_path / "broken.parquet"))
    (tmp_path / "bad.jsonl").write_text('{"repo": "a/b"}\n')
    with pytest.raises(InputError, match="row 0"):
        load_eval_set(str(tmp_path / "bad.jsonl"))
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(InputError, match="no eval instances"):
        load_eval_set(str(tmp_path / "empty.txt"))
    with pytest.raises(InputError, match="no such file"):
        load_eval_set(str(tmp_path / "missing.txt"))
    assert parse_specs("off") == [] and parse_specs("verified, x.txt") == ["verified", "x.txt"]
    with pytest.raises(ConfigError):
        parse_specs("off,verified")


def openhands_record(instance_id: str, repo: str, commit: str, statement: str) -> dict:
    """The bundled OpenHands sample row, re-pointed at another task."""
    row = json.loads(OPENHANDS_SAMPLE.read_text().splitlines()[0])
    row = copy.deepcopy(row)
    row["instance_id"] = instance_id
    row["instance"].update(instance_id=instance_id, repo=repo, base_commit=commit, problem_statement=statement)
    return row


@pytest.mark.skipif(not OPENHANDS_SAMPLE.is_file(), reason="bundled samples missing")
def test_planted_verified_instances_are_dropped_and_unrelated_kept(tmp_path):
    verified = {r["instance_id"]: r for r in verified_rows()}
    django = verified["django__django-11099"]
    sympy = verified["sympy__sympy-20590"]
    eval_file = tmp_path / "eval.jsonl"
    eval_file.write_text(json.dumps({"instance_id": "django__django-9296", "repo": "django/django",
                                     "base_commit": verified["django__django-9296"]["base_commit"],
                                     "problem_statement": ISSUE}) + "\n")
    planted = [
        make_traj(task_id="django__django-11099"),  # by id
        make_traj(task_id="astropy__astropy-12907_3"),  # by id, with a dump's run suffix
        openhands_record("mirror__copy-77", django["repo"], django["base_commit"], "unrelated words " * 20),
        openhands_record("sympy-fork__sympy-1", "sympy/sympy", sympy["base_commit"][:8], "other words " * 20),
        openhands_record("myorg__tool-5", "myorg/tool", "b" * 40, EDITED),  # near-duplicate issue text
    ]
    kept = [make_traj(task_id="django__django-99999"),
            openhands_record("django__django-424242", "django/django", "c" * 40,
                             "QuerySet.union() drops ordering on a sliced queryset " * 3)]
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r if isinstance(r, dict) else r.to_dict()) + "\n" for r in planted + kept))
    out = tmp_path / "ds"
    result = build_dataset([src], out, DatasetConfig(val_fraction=0.0, decontaminate=f"verified,{eval_file}"))
    found = result.stats["decontamination"]
    assert found["by_reason"] == {"instance_id": 2, "repo_commit": 2, "issue_text": 1}
    assert found["dropped_trajectories"] == 5 and result.stats["dropped_trajectories"] == {"eval instance": 5}
    assert found["dropped_step_targets"] > 0 and found["eval_instances_matched"] == 4  # django-11099 twice
    examples = {e["task_id"]: e for e in found["examples"]}
    assert examples["mirror__copy-77"]["eval_instance"] == "django__django-11099"
    assert examples["sympy-fork__sympy-1"]["eval_instance"] == "sympy__sympy-20590"
    assert examples["myorg__tool-5"]["reason"] == "issue_text" and 0.5 <= examples["myorg__tool-5"]["similarity"] < 1
    assert {t.task_id for t in load_step_targets(out)} == {"django__django-99999", "django__django-424242"}
    stats = json.loads((out / "stats.json").read_text())
    assert stats["decontamination"] == found
    assert [s["name"] for s in found["eval_sets"]] == ["verified", str(eval_file)]

    # the threshold is a setting: at 0.95 the edited issue is not a duplicate any more
    strict = build_dataset([src], tmp_path / "strict", DatasetConfig(
        val_fraction=0.0, decontaminate=str(eval_file), near_duplicate_threshold=0.95))
    assert strict.stats["decontamination"]["by_reason"]["issue_text"] == 0
    off = build_dataset([src], tmp_path / "off", DatasetConfig(val_fraction=0.0, decontaminate="off"))
    assert off.stats["decontamination"]["enabled"] is False and "eval instance" not in off.stats["dropped_trajectories"]


def test_near_duplicate_needs_the_text_not_the_topic():
    finder = Decontaminator([load_eval_set(str(VERIFIED_FILE))])
    assert not finder.texts  # the bundled list has no issue texts: text matching needs eval rows with them
    a, b = shingles(ISSUE), shingles(EDITED)
    assert len(a & b) / len(a | b) > 0.6
    other = shingles("Paginator.page_range is slow for large querysets because count() runs twice; cache it.")
    assert len(a & other) / len(a | other) < 0.05


def test_the_shingle_prefilter_changes_no_verdict_and_skips_the_index_for_unrelated_texts():
    """Texts whose shingles are mostly not eval shingles skip MinHash/LSH (a necessary condition
    of Jaccard >= t); every verdict equals the exact Jaccard over all eval texts."""
    import dataclasses
    import random

    from swe_srl.decontam import EvalInstance, EvalSet

    rng = random.Random(0)
    words = ISSUE.split()
    evals = [ISSUE] + [" ".join(rng.sample(words, len(words))) for _ in range(20)]
    finder = Decontaminator([EvalSet("rows", "", tuple(EvalInstance(f"e-{i}", problem_statement=t)
                                                       for i, t in enumerate(evals)))], threshold=0.5)
    unrelated = make_traj("x-1")
    assert finder.match(unrelated) is None and finder.lsh is None  # no index built for it
    texts = [EDITED, ISSUE]
    for keep in (0.3, 0.45, 0.5, 0.55, 0.6, 0.7, 0.8, 0.9):  # ISSUE with words dropped: around the threshold
        for _ in range(5):
            texts.append(" ".join(w for w in words if rng.random() < keep))
    exact_hits = 0
    for i, text in enumerate(texts):
        items = shingles(text)
        best = max(len(items & shingles(e)) / len(items | shingles(e)) for e in evals)
        hit = finder.match(dataclasses.replace(make_traj(f"t-{i}"), problem_statement=text))
        assert (hit is not None) == (best >= 0.5), (keep, best, hit)
        exact_hits += hit is not None
        if hit is not None:
            assert hit.similarity == round(best, 4)
    assert 0 < exact_hits < len(texts) and finder.lsh is not None


def test_cli_prints_what_was_dropped_and_refuses_bad_eval_sets(tmp_path, capsys):
    src = write_trajs(tmp_path / "t.jsonl", [make_traj(task_id="psf__requests-2317"), make_traj(task_id="mine__x-1")])
    with pytest.raises(SystemExit) as exc:
        main(["build-dataset", str(src), "-o", str(tmp_path / "ds"), "--val-fraction", "0"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "decontamination against verified (500 instances" in out and "1 of 2" in out
    assert "psf__requests-2317 = psf__requests-2317" in out
    for args, needle in ((["--decontaminate", str(tmp_path / "nope.txt")], "no such file"),
                         (["--no-decontaminate", "--decontaminate", "verified"], "contradict"),
                         (["--near-duplicate-threshold", "1.5"], "near_duplicate_threshold")):
        with pytest.raises(SystemExit) as exc:
            main(["build-dataset", str(src), "-o", str(tmp_path / "ds2"), *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert exc.value.code == 2 and len(err) == 1 and needle in err[0], err
    only = write_trajs(tmp_path / "only.jsonl", [make_traj(task_id="psf__requests-2317")])
    with pytest.raises(InputError, match="--decontaminate"):
        build_dataset([only], tmp_path / "ds3", DatasetConfig())


def test_false_positives_on_the_bundled_trajectories():
    """Every bundled trajectory (format samples, demo experts, 250 synthetic tasks) against
    Verified by id and repo + commit, and against the two full Verified records' texts: 0."""
    sets = [load_eval_set("verified")] + ([load_eval_set(str(VERIFIED_RECORDS))] if VERIFIED_RECORDS.is_file() else [])
    finder = Decontaminator(sets)
    matches = [(t.task_id, finder.match(t)) for t in read_trajectories(default_trajectory_inputs(),
            on_skip=lambda s: None)]
    assert len(matches) > 250
    assert [m for m in matches if m[1] is not None] == []


@pytest.mark.skipif(not REAL.is_dir(), reason="real samples absent (../shared/real-samples)")
def test_real_sample_trajectories_that_are_verified_instances_are_found():
    """The real samples include two SWE-bench Verified runs (django__django-9296 and
    django__django-11999, both in the published list): those are true positives; every other
    real sample (SWE-Gym, nebius, SWE-smith, OpenHands, SWE-agent demos) must not match."""
    sets = [load_eval_set("verified")] + ([load_eval_set(str(VERIFIED_RECORDS))] if VERIFIED_RECORDS.is_file() else [])
    finder = Decontaminator(sets)
    folders = [p for p in REAL.iterdir() if p.is_dir() and p.name != "swebench"]
    found = {t.task_id: finder.match(t) for t in read_trajectories(folders, on_skip=lambda s: None)}
    assert len(found) >= 9
    hits = {k: (m.reason, m.instance_id) for k, m in found.items() if m is not None}
    assert hits == {"django__django-9296": ("instance_id", "django__django-9296"),
                    "django__django-11999": ("instance_id", "django__django-11999")}


def test_overlap_by_id_and_by_repo_commit_over_a_chain_of_runs():
    """What eval checks: every train-split task of every run in the model's history (datasets
    and rlvr episode tasks), against the evaluated tasks, by id or by repo + base commit."""
    from swe_srl.decontam import overlap
    from swe_srl.provenance import eval_provenance, trained_tasks

    sft = {"kind": "training-run", "dataset": {"provenance": {"tasks": [
        {"task_id": "a__b-1", "split": "train"},
        {"task_id": "fork__b-9", "repo": "a/b", "base_commit": "1234567890abcdef", "split": "train"},
        {"task_id": "a__b-3", "split": "val"}]}}}
    rlvr = {"kind": "training-run", "dataset": {"provenance": None},
            "episode_tasks": [{"task_id": "c__d-5", "repo": "c/d", "base_commit": "f" * 40}],
            "start_model_provenance": sft}
    assert {t["task_id"] for t in trained_tasks(rlvr)} == {"a__b-1", "fork__b-9", "c__d-5"}
    evaluated = [{"task_id": "a__b-1"}, {"task_id": "a__b-2", "repo": "a/b", "base_commit": "1234567"},
                 {"task_id": "a__b-3"}, {"task_id": "c__d-5"}, {"task_id": "e__f-1"}]
    found = overlap(trained_tasks(rlvr), evaluated)
    assert [(f["evaluated"], f["reason"]) for f in found] == [
        ("a__b-1", "instance_id"), ("a__b-2", "repo_commit"), ("c__d-5", "instance_id")]
    prov = eval_provenance(rlvr, evaluated)
    assert prov["overlap"]["count"] == 3 and prov["evaluated"] == 5
    assert eval_provenance(None, evaluated)["overlap"] == {"checked": False, "count": 0, "instances": []}
