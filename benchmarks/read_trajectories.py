"""Throughput of swe_srl.formats.read_trajectories on a 5,000-trajectory JSONL and Parquet file.

Corpora: the bundled samples (all 8 formats, mixed, ~8 steps each) and, where the development
checkout has them, the real published samples (../shared/real-samples, 9-59 steps each),
cycled to 5,000 records with distinct instance ids. Baseline, run in the same script: bare
``json.loads`` of every line (the floor any JSONL reader pays). Median of --runs runs.
Also the peak Python heap while streaming the JSONL (tracemalloc), against the file size.

    .venv/bin/python benchmarks/read_trajectories.py [--n 5000] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from swe_srl.formats import read_record, read_trajectories  # noqa: E402
from swe_srl.formats._io import iter_files, iter_records  # noqa: E402


def raw_records(folder: Path) -> list[dict]:
    out = []
    for path in iter_files([folder]):
        out.extend(r for _, r in iter_records(path, lambda row, reason: None) if isinstance(r, dict))
    return out


def write_corpus(records: list[dict], n: int, out: Path) -> Path:
    jsonl = out / "corpus.jsonl"
    with open(jsonl, "w") as f:
        for i in range(n):
            record = dict(records[i % len(records)])
            if "instance_id" in record:
                record["instance_id"] = f"{record['instance_id']}-{i}"
            f.write(json.dumps(record) + "\n")
    return jsonl


def time_it(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench(name: str, records: list[dict], n: int, runs: int, tmp: Path) -> dict:
    jsonl = write_corpus(records, n, tmp)
    size_mb = jsonl.stat().st_size / 1e6
    skips: list = []

    def ours() -> int:
        return sum(1 for _ in read_trajectories([jsonl], on_skip=skips.append))

    def baseline() -> int:
        with open(jsonl, "rb") as f:
            return sum(1 for line in f if json.loads(line) is not None)

    assert ours() == n and not skips, skips[:3]
    t_ours, t_base = time_it(ours, runs), time_it(baseline, runs)
    per_format: dict[str, list[float]] = {}
    for _, record in iter_records(jsonl, lambda row, reason: None):
        start = time.perf_counter()
        traj = read_record(record)
        per_format.setdefault(traj.source_format, []).append(time.perf_counter() - start)
    tracemalloc.start()
    ours()
    peak = tracemalloc.get_traced_memory()[1] / 1e6
    tracemalloc.stop()
    return {"corpus": name, "n": n, "file_mb": round(size_mb, 1), "read_s": round(t_ours, 3),
            "traj_per_s": round(n / t_ours), "json_loads_s": round(t_base, 3),
            "ratio_vs_json_loads": round(t_ours / t_base, 2), "peak_heap_mb": round(peak, 1),
            "traj_per_s_by_format": {k: round(len(v) / sum(v)) for k, v in sorted(per_format.items())}}


def bench_parquet(records: list[dict], n: int, runs: int, tmp: Path) -> dict:
    """Parquet of one format (SWE-smith rows, messages as a JSON-string column, as on the hub)."""
    rows = [dict(r, instance_id=f"{r['instance_id']}-{i}", messages=json.dumps(r["messages"]))
            for i, r in ((i, records[i % len(records)]) for i in range(n))]
    path = tmp / "corpus.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)

    def ours() -> int:
        return sum(1 for _ in read_trajectories([path]))

    assert ours() == n
    t = time_it(ours, runs)
    return {"corpus": "swe-smith rows (parquet)", "n": n, "file_mb": round(path.stat().st_size / 1e6, 1),
            "read_s": round(t, 3), "traj_per_s": round(n / t)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        samples = raw_records(REPO / "trajectories" / "samples")
        results.append(bench("bundled samples (8 formats)", samples, args.n, args.runs, Path(tmp)))
        real_dir = REPO.parent / "shared" / "real-samples"
        if real_dir.is_dir():
            real = [r for r in raw_records(real_dir) if "FAIL_TO_PASS" not in r]
            results.append(bench("real published samples (7 formats)", real, args.n, args.runs, Path(tmp)))
        smith = [r for r in samples if "traj_id" in r]
        results.append(bench_parquet(smith, args.n, args.runs, Path(tmp)))
    for r in results:
        print(json.dumps(r))


if __name__ == "__main__":
    main()
