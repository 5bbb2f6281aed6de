"""Loads a model folder the way a run does and prints one JSON line per rank: the peak resident
memory the load added, and a checksum of the weights. Used by tests/rl/test_meta_init.py.

    python meta_load_driver.py whole MODEL_DIR OUT          # from_pretrained, one process
    torchrun --nproc-per-node N meta_load_driver.py meta MODEL_DIR OUT   # meta_init + fully_shard

Each rank writes OUT/rank<R>.json.
"""

from __future__ import annotations

import json
import resource
import sys


def rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


def main() -> None:
    mode, model_dir, out = sys.argv[1:4]
    import torch
    from transformers import AutoModelForCausalLM

    from swe_srl.rl import meta_init

    torch.set_num_threads(1)
    # The model's code imported in both modes before measuring: what is measured is weights.
    del meta_init
    from swe_srl.rl.meta_init import build_on_meta

    build_on_meta(model_dir, dtype=torch.float32)
    if mode == "whole":
        before = rss_kib()
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        # Every weight read once (a memory-mapped load is resident only once touched, as the
        # first forward touches it): the one-process load holds the whole model.
        sums = {n: float(p.detach().double().sum()) for n, p in model.named_parameters()}
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        rank = 0
    else:
        from swe_srl.rl import meta_init, parallel
        from swe_srl.rl.distributed import exit_process, init_distributed, shutdown_distributed

        d = init_distributed()
        parallel.ensure_process_group(d)
        before = rss_kib()
        model = meta_init.build_on_meta(model_dir, dtype=torch.float32)
        peaks = []

        def load(m: torch.nn.Module) -> None:
            meta_init.load_local_shards(m, model_dir)
            peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)

        # The peak is taken when the shards are loaded, before shard_model's first forward
        # (which all-gathers every layer once, as any first step would, in either way of loading).
        parallel.shard_model(model, d, bf16=False, cpu_offload=False, load=load)
        peak = peaks[0]
        sums = {n: float(p.detach().full_tensor().double().sum()) for n, p in model.named_parameters()}
        rank = d.rank
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump({"rank": rank, "added_mib": (peak - before) / 1024, "sums": sums}, f)
    if mode == "meta":
        # End the group, then leave as the CLI does (swe_srl.rl.distributed.exit_process):
        # left to the interpreter's finalization, the group FSDP2 keeps alive aborted rank 0 in
        # CI ("terminate called without an active exception", SIGABRT). What this driver
        # measures is written above.
        d.barrier()
        shutdown_distributed()
        exit_process(0)


if __name__ == "__main__":
    main()
