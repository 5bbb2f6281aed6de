"""Host memory at load for ``run.parallel=fsdp``: every rank loading the whole model, then
sharding (before), vs meta-device init with each rank reading only its rows (after,
swe_srl/rl/meta_init.py). Issue 19, item 4.

A Qwen2.5-Coder-0.5B-shaped model (random weights, float32 safetensors, built offline) is
loaded by 2 processes (torchrun, gloo, CPU). Measured per rank: the peak resident memory the
load adds (``ru_maxrss`` when the weights are in place, minus the resident memory before; the
model's code is imported before that, so what is measured is weights) and the load's wall time.
``whole``: ``from_pretrained`` then every weight read once (a memory-mapped load is resident
only once touched, as the first forward or the sharding copy touches it); ``meta``: meta
parameters, ``fully_shard``, then this rank's rows, taken when the shards are filled (before
the first forward, which all-gathers each layer once in either way).

    .venv/bin/python benchmarks/meta_init.py                 # 0.5b, 3 repeats, 2 processes
    .venv/bin/python benchmarks/meta_init.py --shape 1.5b --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPES = {"0.5b": "Qwen/Qwen2.5-Coder-0.5B-Instruct", "1.5b": "Qwen/Qwen2.5-Coder-1.5B-Instruct"}


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def build(shape: str, out: Path) -> Path:
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from swe_srl.model_shape import KNOWN_SHAPES
    from swe_srl.rl.meta_init import parameters_on_meta

    fields = {k: KNOWN_SHAPES[SHAPES[shape]][k] for k in (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
        "vocab_size", "tie_word_embeddings")}
    config = Qwen2Config(**fields, max_position_embeddings=4096)
    with parameters_on_meta():
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Random values, one tensor at a time (the weights' values do not matter for memory).
    from safetensors.torch import save_file

    gen = torch.Generator().manual_seed(0)
    state = {n: torch.randn(p.shape, generator=gen) * 0.02 for n, p in model.named_parameters()}
    out.mkdir(parents=True)
    save_file(state, out / "model.safetensors", metadata={"format": "pt"})
    config.save_pretrained(out)
    return out


def worker(mode: str, model_dir: str, out: str) -> None:
    import torch

    from swe_srl.rl import meta_init, parallel
    from swe_srl.rl.distributed import exit_process, init_distributed, shutdown_distributed

    torch.set_num_threads(1)
    meta_init.build_on_meta(model_dir, dtype=torch.float32)  # imports the model's code
    d = init_distributed()
    parallel.ensure_process_group(d)
    before, started = rss_kib(), time.perf_counter()
    marks: list[tuple[int, float]] = []
    if mode == "whole":
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        for p in model.parameters():
            float(p.detach().sum())
        marks.append((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()))
        parallel.shard_model(model, d, bf16=False, cpu_offload=False)
    else:
        model = meta_init.build_on_meta(model_dir, dtype=torch.float32)

        def load(m: torch.nn.Module) -> None:
            meta_init.load_local_shards(m, model_dir)
            marks.append((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()))

        parallel.shard_model(model, d, bf16=False, cpu_offload=False, load=load)
    peak, done = marks[0]
    with open(f"{out}/rank{d.rank}.json", "w") as f:
        json.dump({"added_mib": (peak - before) / 1024, "load_s": done - started}, f)
    shutdown_distributed()
    exit_process(0)  # the group FSDP2 keeps alive can abort a rank at interpreter exit


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(mode: str, model_dir: Path, procs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={procs}",
               f"--master-port={free_port()}", __file__, "--worker", mode, str(model_dir), out]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise SystemExit(f"error: {mode} run failed: {done.stderr.strip().splitlines()[-1:]}")
        rows = [json.loads(p.read_text()) for p in sorted(Path(out).glob("rank*.json"))]
    return {"added_mib": max(r["added_mib"] for r in rows), "load_s": max(r["load_s"] for r in rows)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), default="0.5b")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", nargs=3, metavar=("MODE", "MODEL", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build(args.shape, Path(tmp) / "model")
        model_mib = (model_dir / "model.safetensors").stat().st_size / 2**20
        runs = {mode: [one_run(mode, model_dir, args.procs) for _ in range(args.repeats)] for mode in ("whole", "meta")}
    med = {mode: {k: statistics.median(r[k] for r in rows) for k in ("added_mib", "load_s")}
           for mode, rows in runs.items()}
    machine = f"{platform.machine()}, {os.cpu_count()} cores, CPU, gloo"
    print(f"| model | processes | load | peak added per rank MiB (median of {args.repeats}) | load s | machine |")
    print("|---|---|---|---|---|---|")
    for mode, label in (("whole", "whole model per rank, then shard (before)"),
                        ("meta", "meta-device init, own rows only (after)")):
        print(f"| {args.shape} ({model_mib:.0f} MiB fp32) | {args.procs} | {label} | {med[mode]['added_mib']:.0f} | "
              f"{med[mode]['load_s']:.1f} | {machine} |")
    print(f"\nratio after / before: {med['meta']['added_mib'] / med['whole']['added_mib']:.2f} "
          f"(1/{args.procs} of the model would be {1 / args.procs:.2f})")
    print(json.dumps({"runs": runs, "median": med, "model_mib": model_mib}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
