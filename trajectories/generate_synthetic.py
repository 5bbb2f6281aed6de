#!/usr/bin/env python3
"""Generate swe-srl's bundled SYNTHETIC expert trajectories (stdlib only, deterministic).

    python trajectories/generate_synthetic.py              # 250 tasks, seed 0 -> the shipped file
    python trajectories/generate_synthetic.py --check      # is the shipped file up to date?
    python trajectories/generate_synthetic.py -n 20 --seed 3 -o /tmp/synth.jsonl.gz

writes ``trajectories/synthetic/trajectories.jsonl.gz``: one ``Trajectory.to_dict()`` record a
line (format ``swe-srl``, read by ``swe-srl build-dataset``), gzip with mtime 0, so the same
arguments give the same bytes. Each record is one small synthetic Python bug-fix task (a
package made from word lists, one seeded bug of 12 kinds) and its expert trajectory, marked
synthetic: task id ``synth-<package>-<n>``, ``model`` = ``synthetic-expert``,
``metadata.synthetic`` = true with the bug kind and the seed.

How tasks and sessions are made, and why the observations are consistent with the code: the
``synthgen`` package next to this script (its docstring, and ``synthetic/README.md``).
"""

from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import synthgen  # this script's folder is first on sys.path

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "synthetic" / "trajectories.jsonl.gz"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--tasks", type=int, default=synthgen.DEFAULT_TASKS,
                        help="number of tasks (default %(default)s)")
    parser.add_argument("--seed", type=int, default=synthgen.DEFAULT_SEED, help="seed (default %(default)s)")
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUTPUT, help="output .jsonl.gz")
    parser.add_argument("--check", action="store_true", help="exit 1 if --out differs from what would be written")
    args = parser.parse_args(argv)
    records = synthgen.generate(args.tasks, args.seed)
    data = synthgen.to_bytes(records)
    if args.check:
        same = args.out.is_file() and gzip.decompress(args.out.read_bytes()) == gzip.decompress(data)
        print(f"{args.out}: {'up to date' if same else 'OUT OF DATE: regenerate it'}")
        return 0 if same else 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(args.out)
    steps = sum(len(r["steps"]) for r in records)
    print(f"wrote {args.out}: {len(records)} trajectories, {steps} steps, {len(data)} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
