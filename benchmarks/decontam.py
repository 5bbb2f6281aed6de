"""Benchmark: the decontamination scan of build-dataset at paper scale — what it finds and what
it costs as a share of build-dataset's time.

Input: the 5,000-trajectory SWE-smith corpus of benchmarks/build_dataset.py (132,846 steps, the
size of the SRL paper's SWE data; no paper-scale public corpus is stored here), plus 30 planted
eval instances: 10 under Verified ids, 10 under other ids with a Verified repository + base
commit, 10 whose issue text is an eval issue lightly edited (a few words changed, a line added).

Eval sets, each a run of build_dataset (jsonl output) in its own subprocess, interleaved:
  off       --decontaminate off (the baseline)
  verified  the bundled 500 Verified ids + repos + commits (id and repo+commit checks only)
  +texts    the same 500 with an issue text each (600-2,500 characters), so every
            trajectory's issue text is also shingled and matched

Issue texts (--issue-texts), of the corpus and of the eval rows alike:
  template    build_dataset.py's generator: words drawn from 22, so every word 3-gram of a
              text is also an eval text's and each one goes through MinHash and LSH (the
              worst case of the shingle prefilter, not what issues look like)
  docstrings  paragraphs of natural technical English: the docstrings (600-2,500 characters)
              of the packages installed beside this script, read at run time, eval rows and
              corpus drawn apart (nothing is stored in the project)

It also prints, from an exact inverted index, how many corpus rows have an issue text at
Jaccard >= 0.5 with an eval text (what full recall finds), and how many the scan matches with
LSH candidates from each of --candidate-factors x the threshold (0.8 and 0.6: recall and cost).

Usage: python benchmarks/decontam.py [--trajectories 5000] [--repeats 3] [--issue-texts template|docstrings]
                                     [--candidate-factors 0.8 0.6] [--keep DIR]
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from build_dataset import _text, make_corpus  # noqa: E402

from swe_srl.decontam import VERIFIED_FILE  # noqa: E402

PLANTED = 10  # per reason


@functools.lru_cache(maxsize=1)
def docstrings(limit: int = 20000) -> tuple[str, ...]:
    """Distinct docstrings of 600-2,500 characters (over 80 words) of the installed packages,
    in a fixed order."""
    import sysconfig

    found: set[str] = set()
    for path in sorted(Path(sysconfig.get_paths()["purelib"]).rglob("*.py"))[:limit]:
        try:
            source = path.read_text(encoding="utf-8", errors="ignore")
        except OSError:
            continue
        for text in re.findall(r'"""(.*?)"""', source, re.S):
            if 600 <= len(text) <= 2500 and len(re.findall(r"[a-z]+", text)) > 80:
                found.add(text.strip())
    return tuple(sorted(found))


def issue_texts(kind: str, count: int, seed: int) -> list[str]:
    """``count`` issue texts; ``seed`` 1 draws the eval rows', 3 the corpus's (disjoint)."""
    rng = random.Random(seed)
    if kind == "template":
        return [_text(rng, rng.randint(600, 2500)) for _ in range(count)]
    pool = list(docstrings())
    random.Random(0).shuffle(pool)
    evals, rest = pool[:500], pool[500:]
    if len(rest) < 1000:
        raise SystemExit(f"only {len(pool)} docstrings found: too few for --issue-texts docstrings")
    source = evals if seed == 1 else rest
    return [source[i % len(source)] for i in range(count)]


def eval_rows(seed: int = 1, kind: str = "template") -> list[dict]:
    rows = [json.loads(line) for line in VERIFIED_FILE.read_text().splitlines()]
    return [row | {"problem_statement": text} for row, text in zip(rows, issue_texts(kind, len(rows), seed))]


def _issue_message(text: str) -> str:
    """The user message of a SWE-smith row (build_dataset.py's) carrying issue ``text``."""
    return (f"<uploaded_files>\n/testbed\n</uploaded_files>\n<pr_description>\n"
            f"{text}\n</pr_description>\nMake the changes.")


def corpus_issues(corpus: Path) -> list[str]:
    """Every corpus row's issue text (planted rows included), as :func:`_issue_message` wrote it."""
    with corpus.open(encoding="utf-8") as fh:
        return [json.loads(line)["messages"][1]["content"].split("<pr_description>\n", 1)[-1]
                .split("\n</pr_description>", 1)[0] for line in fh]


def retext(corpus: Path, kind: str) -> None:
    """Give every corpus row an issue text of ``kind`` (the template corpus keeps its own)."""
    if kind == "template":
        return
    lines = corpus.read_text(encoding="utf-8").splitlines()
    texts = issue_texts(kind, len(lines), seed=3)
    with corpus.open("w", encoding="utf-8") as fh:
        for line, text in zip(lines, texts):
            row = json.loads(line)
            row["messages"][1]["content"] = _issue_message(text)
            fh.write(json.dumps(row) + "\n")


def _edit(text: str, rng: random.Random) -> str:
    words = text.split()
    for _ in range(4):
        words[rng.randrange(len(words))] = rng.choice(("quickly", "maybe", "also", "now"))
    return " ".join(words) + "\nThanks for looking!"


def exact_near_duplicates(issues: list[str], rows: list[dict], threshold: float = 0.5) -> int:
    """Issue texts with an exact word-3-gram Jaccard >= ``threshold`` with an eval row's (an
    inverted index of the eval shingles): what a scan with full recall finds."""
    from collections import defaultdict

    from swe_srl.decontam import shingles

    evals = [shingles(r["problem_statement"]) for r in rows]
    postings: dict[str, list[int]] = defaultdict(list)
    for i, items in enumerate(evals):
        for item in items:
            postings[item].append(i)
    found = 0
    for text in issues:
        items = shingles(text)
        shared: dict[int, int] = defaultdict(int)
        for item in items:
            for i in postings.get(item, ()):
                shared[i] += 1
        found += any(c / (len(items) + len(evals[i]) - c) >= threshold for i, c in shared.items())
    return found


def text_matches(issues: list[str], eval_file: Path, factor: float) -> tuple[int, float]:
    """Issue texts the scan matches with LSH candidates from ``factor`` x the threshold, and the
    CPU seconds it took (eval set loaded, index built, every text matched, in this process)."""
    from swe_srl.decontam import Decontaminator, load_eval_set

    start = time.process_time()
    finder = Decontaminator([load_eval_set(str(eval_file))], candidate_factor=factor)
    found = sum(finder._text_match(text) is not None for text in issues)
    return found, time.process_time() - start


def plant(corpus: Path, rows: list[dict], seed: int = 2) -> None:
    """Append 3 x PLANTED eval instances (copies of corpus rows re-pointed at eval tasks)."""
    rng = random.Random(seed)
    with corpus.open(encoding="utf-8") as fh:
        templates = [json.loads(next(fh)) for _ in range(3 * PLANTED)]
    with corpus.open("a", encoding="utf-8") as fh:
        for k, row in enumerate(templates):
            target = rows[(k * 37) % len(rows)]
            row = json.loads(json.dumps(row))
            if k < PLANTED:
                row["instance_id"] = target["instance_id"]
            elif k < 2 * PLANTED:
                row["instance_id"] = f"mirror__copy-{k}"
                row |= {"repo": target["repo"], "base_commit": target["base_commit"]}
            else:
                row["instance_id"] = f"other__task-{k}"
                issue = _edit(target["problem_statement"], rng)
                row["messages"][1]["content"] = _issue_message(issue)
            row["traj_id"] = f"{row['instance_id']}.planted{k}"
            fh.write(json.dumps(row) + "\n")


def _timed(cls, name: str, spent: list[float]) -> None:
    """Count the CPU time spent in ``cls.name`` into ``spent``."""
    real = getattr(cls, name)

    def wrapper(*args, **kwargs):
        start = time.process_time()
        try:
            return real(*args, **kwargs)
        finally:
            spent[0] += time.process_time() - start
    setattr(cls, name, wrapper)


def _child(corpus: str, out: str, spec: str) -> None:
    """One build; the scan's own CPU time (building the index, matching every trajectory,
    loading the eval sets) is counted apart."""
    import swe_srl.dataset as dataset_mod
    from swe_srl.dataset import DatasetConfig, build_dataset
    from swe_srl.decontam import Decontaminator

    spent = [0.0]
    _timed(Decontaminator, "__init__", spent)
    _timed(Decontaminator, "match", spent)
    real_load = dataset_mod.load_eval_sets

    def load(spec_: str):
        start = time.process_time()
        try:
            return real_load(spec_)
        finally:
            spent[0] += time.process_time() - start
    dataset_mod.load_eval_sets = load
    hashed = [0.0]  # provenance: sha256 of the inputs and outputs (not the scan; reported apart)
    for name in ("input_digests", "sha256_file"):
        real = getattr(dataset_mod, name)

        def timed(*args, real=real, **kwargs):
            begin = time.process_time()
            try:
                return real(*args, **kwargs)
            finally:
                hashed[0] += time.process_time() - begin
        setattr(dataset_mod, name, timed)
    start, cpu = time.perf_counter(), time.process_time()
    result = build_dataset([Path(corpus)], Path(out), DatasetConfig(decontaminate=spec), output="jsonl",
                           overwrite=True)
    found = result.stats["decontamination"]
    print(json.dumps({"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu, "scan_cpu": spent[0],
                      "hash_cpu": hashed[0],
                      "by_reason": found["by_reason"], "scanned": found["trajectories_scanned"]}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trajectories", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--issue-texts", choices=("template", "docstrings"), default="template")
    ap.add_argument("--candidate-factors", type=float, nargs="*", default=[0.8, 0.6],
                    help="LSH candidate thresholds (x the match threshold) to count text matches with")
    ap.add_argument("--keep", type=Path, default=None)
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return
    work = args.keep or Path(tempfile.mkdtemp(prefix="swe-srl-decontam-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus, texts = work / "corpus.jsonl", work / "verified_with_texts.jsonl"
    rows = eval_rows(kind=args.issue_texts)
    steps = make_corpus(corpus, args.trajectories)
    retext(corpus, args.issue_texts)
    plant(corpus, rows)
    texts.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}")
    print(f"corpus: {args.trajectories} trajectories ({steps} steps) + {3 * PLANTED} planted, "
          f"{corpus.stat().st_size / 1e6:.0f} MB, issue texts: {args.issue_texts}")
    issues = corpus_issues(corpus)
    print(f"corpus rows whose issue text is at exact Jaccard >= 0.5 with an eval text: "
          f"{exact_near_duplicates(issues, rows)}")
    import datasketch  # noqa: F401  (imported before timing: neither factor pays the import)

    for factor in args.candidate_factors:  # recall and cost of the LSH candidate threshold, in this process
        found, cpu = text_matches(issues, texts, factor)
        print(f"LSH candidates from {factor} x the threshold: {found} issue texts matched, {cpu:.2f} CPU s")
    modes = {"off": "off", "verified": "verified", "+texts": str(texts)}
    results: dict[str, list[dict]] = {m: [] for m in modes}
    for _ in range(args.repeats):
        for mode, spec in modes.items():
            proc = subprocess.run([sys.executable, __file__, "--child", str(corpus), str(work / "out"), spec],
                                  capture_output=True, text=True, check=True)
            results[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    base_cpu = statistics.median(r["cpu"] for r in results["off"])
    print("| eval set | found (id / repo+commit / text) | median wall s | runs | median CPU s | "
          "scan CPU s (share of the build's CPU) | CPU vs off | sha256 CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, runs in results.items():
        wall = statistics.median(r["seconds"] for r in runs)
        cpu = statistics.median(r["cpu"] for r in runs)
        found = runs[0]["by_reason"]
        scan = statistics.median(r["scan_cpu"] for r in runs)
        share = statistics.median(r["scan_cpu"] / r["cpu"] for r in runs)
        walls = ", ".join(f"{r['seconds']:.2f}" for r in runs)
        print(f"| {mode} | {found['instance_id']} / {found['repo_commit']} / {found['issue_text']} | {wall:.2f} | "
              f"{walls} | {cpu:.2f} | {scan:.2f} ({share:.1%}) | {cpu / base_cpu:.2f}x | "
              f"{statistics.median(r['hash_cpu'] for r in runs):.2f} |")
    if args.keep is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
