"""Per-process bytes of weights, gradients and AdamW states: ``run.parallel`` ddp vs fsdp.

Two processes (torchrun, gloo on CPU; nccl where there are GPUs) build a ``Session`` for SFT
with each strategy, take one optimizer step (AdamW states exist from then on), run one more
forward/backward (gradients held), and count the bytes each process holds of each
(:func:`swe_srl.rl.parallel.state_bytes`: the local shards under fsdp). Also the median time of
a further three SFT steps, for scale only (CPU, gloo, a tiny model: communication dominates).

    .venv/bin/python benchmarks/fsdp_memory.py                      # the tiny model, 2 processes
    .venv/bin/python benchmarks/fsdp_memory.py --model DIR --procs 4 --precision bf16
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_targets(path: Path, n: int = 16) -> Path:
    """Short synthetic step targets (an issue naming a file, the action that reads it)."""
    from swe_srl.actions import make_action, render_xml
    from swe_srl.schemas import StepTarget

    rows = []
    for i in range(n):
        target = render_xml(make_action("bash", {"command": f"cat src/mod{i}.py"}))
        rows.append(StepTarget(id=f"t-{i}#0", trajectory_id=f"t-{i}", task_id=f"t-{i}", step_index=0, num_steps=1,
                               problem_statement=f"The bug is in src/mod{i}.py.", context=(), target=target,
                               target_tool="bash", split="train").to_dict())
    path.mkdir(parents=True, exist_ok=True)
    (path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def worker(out: Path, parallel: str, data: Path, model: Path, precision: str) -> None:
    """One process of the torchrun job: measure, write ``{parallel}-{rank}.json``."""
    from swe_srl.config import TrainConfig
    from swe_srl.config_loader import load_config
    from swe_srl.rl.logprobs import TokenBatch, completion_logprobs
    from swe_srl.rl.parallel import state_bytes
    from swe_srl.rl.session import Session
    from swe_srl.rl.sft import encode_example, sft_step

    overrides = {"method": "sft", "data.train": str(data), "model.path": str(model), "run.out_dir": str(out / parallel),
                 "run.parallel": parallel, "run.precision": precision, "run.eval_every": 0, "run.max_steps": 4,
                 "run.progress": False, "optim.batch_size": 4, "sft.max_length": 256}
    cfg = load_config(TrainConfig, "tiny-cpu", flags=overrides)
    with Session(cfg) as s:
        sft_step(s, list(range(cfg.optim.batch_size)))
        times = []
        for step in range(1, 4):
            s.step = step
            started = time.perf_counter()
            sft_step(s, list(range(step * 4, step * 4 + 4)))
            times.append(time.perf_counter() - started)
        prompt, label = encode_example(s.tokenizer, s.items[0], cfg.sft)
        batch = TokenBatch.build([prompt], [label], s.tokenizer.pad_token_id, s.dist.device)
        (-completion_logprobs(s.model, batch).sum()).backward()
        sizes = {**state_bytes(s.model, s.optimizer), "step_s": statistics.median(times),
                 "params_total": sum(p.numel() for p in s.model.parameters())}
        (out / f"{parallel}-{s.dist.rank}.json").write_text(json.dumps(sizes))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="model folder [default: the tiny model]")
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--worker", nargs=4, metavar=("OUT", "PARALLEL", "DATA", "MODEL"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        out, parallel, data, model = args.worker
        worker(Path(out), parallel, Path(data), Path(model), args.precision)
        from swe_srl.rl.distributed import exit_process, shutdown_distributed

        shutdown_distributed()
        exit_process(0)  # the group FSDP2 keeps alive can abort a rank at interpreter exit
        return
    from swe_srl.tiny_model import make_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="fsdp-memory-"))
    model = args.model or make_tiny_model(tmp / "model", seed=0)
    data = write_targets(tmp / "data")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for parallel in ("ddp", "fsdp"):
        subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.procs),
                        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), __file__,
                        "--precision", args.precision, "--worker", str(tmp), parallel, str(data), str(model)],
                       env=env, check=True, capture_output=True, text=True)
    rows = {p: [json.loads((tmp / f"{p}-{r}.json").read_text()) for r in range(args.procs)] for p in ("ddp", "fsdp")}
    print(f"model {model} ({rows['ddp'][0]['params_total']:,} parameters), {args.procs} processes, {args.precision}")
    print("| per process | ddp | fsdp (rank 0 / max) | fsdp / ddp |")
    print("|---|---|---|---|")
    for key in ("params", "grads", "optimizer"):
        ddp, fsdp = rows["ddp"][0][key], [r[key] for r in rows["fsdp"]]
        print(f"| {key} | {ddp:,} B | {fsdp[0]:,} / {max(fsdp):,} B | {max(fsdp) / ddp:.3f} |")
    total = {p: max(r["params"] + r["grads"] + r["optimizer"] for r in rows[p]) for p in rows}
    print(f"| total | {total['ddp']:,} B | {total['fsdp']:,} B | {total['fsdp'] / total['ddp']:.3f} |")
    step = {p: statistics.median(r["step_s"] for r in rows[p]) for p in rows}
    print(f"SFT step (median of 3, batch 4): ddp {step['ddp']:.3f} s, fsdp {step['fsdp']:.3f} s")


if __name__ == "__main__":
    main()
