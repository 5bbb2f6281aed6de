"""One training run's state, shared by every method (sft, srl, rlvr, hybrid).

A :class:`Session` owns the process group, the run directory (config.yaml, metrics,
checkpoints), the policy whose ``.model`` is trained, the optimizer, the data items with their
resumable order (step targets, or tasks for the episode methods) and the step counter. It knows
how to resume a killed run, log a step, save a checkpoint, and validate the policy on held-out
step targets (greedy decoding, mean similarity reward, format errors). The loop itself is
:func:`swe_srl.rl.trainer.train`. The policy and the KL reference are loaded by
:class:`~swe_srl.rl.model_loader.ModelLoader`. With ``run.parallel=fsdp`` the model is sharded
over the processes (:mod:`.parallel`) and checkpoints are sharded too (:mod:`.sharded`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from .. import paths
from ..calibration import resolve_calibration
from ..config import TrainConfig
from ..config_loader import save_config, to_mapping
from ..dataset import load_step_targets
from ..errors import ConfigError, InputError
from ..jsonio import write_json_atomic
from ..prompts import messages_for_target
from ..provenance import PROVENANCE_FILE, run_provenance, task_entries
from ..rewards.similarity import StepScores
from ..schemas import StepTarget, Task
from ..tasks import load_tasks
from ..versions import require
from . import checkpoint as ckpt
from . import parallel, sharded
from .data_order import DataOrder
from .distributed import init_distributed, seed_everything, shard
from .engine import Engine, RolloutEngine
from .logprobs import resolve_precision
from .model_loader import ModelLoader
from .optim import build_optimizer
from .records import DrawLog
from .run_log import METRICS_FILE, ROLLOUTS_FILE, ProgressView, RunLogger

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
# What the progress line shows of each method's metrics, and which count gives tokens/s.
PROGRESS = {"sft": (("loss", "train/loss"),), "grpo": (("reward", "reward/mean"), ("filtered", "filter_rate"))}
# tokens_per_s: every token an SFT step forwards and back-propagates (prompts too); the
# completions a GRPO step sampled.
TOKENS_KEY = {"sft": "train/forward_tokens", "grpo": "completion_tokens"}


@dataclass(frozen=True)
class TrainResult:
    """What ``train()`` returns: where the run lives and how it ended."""

    run_dir: Path
    steps: int
    final_checkpoint: Path | None
    val_metrics: dict


def _target_file(path: str | Path, name: str) -> Path:
    path = Path(path)
    return path / name if path.is_dir() else path


def load_items(config: TrainConfig) -> tuple[list[StepTarget] | list[Task], list[StepTarget]]:
    """(train items, val step targets): step targets for sft/srl, tasks for rlvr/hybrid (which
    validate on step targets only when ``data.val`` names them)."""
    if config.on_episodes:
        e = config.episodes
        items: list[Any] = load_tasks(e.tasks, ids=e.ids or None, filter=e.filter or None, slice=e.slice or None)
        resolve_calibration(e.calibration)  # a named file that is not one fails before a model loads
        val_path = _target_file(config.data.val, "val.jsonl") if config.data.val else None
    else:
        train_path = _target_file(config.data.train or paths.DEFAULT_DATASET_DIR, "train.jsonl")
        if not train_path.exists():
            raise InputError(f"no step targets at {train_path}: run `swe-srl build-dataset` first or pass --data")
        items = load_step_targets(train_path)
        if config.data.limit:
            items = items[: config.data.limit]
        if not items:
            raise InputError(f"{train_path} holds no step targets")
        val_path = _target_file(config.data.val, "val.jsonl") if config.data.val else None
        if val_path is None:
            sibling = train_path.with_name("val" + "".join(train_path.suffixes))
            val_path = sibling if sibling.exists() and sibling != train_path else None
    if val_path is not None and not val_path.exists():
        raise InputError(f"validation step targets not found: {val_path}")
    val = load_step_targets(val_path) if val_path is not None else []
    return items, (val[: config.data.val_limit] if config.data.val_limit else val)


def _quiet_transformers() -> None:
    """No tqdm bars for every checkpoint load/save in the training log."""
    from transformers.utils import logging as hf_logging  # a train dependency, loaded with the model

    hf_logging.disable_progress_bar()


class Session:
    """Set up (or resume) a run; see the module docstring. Use as a context manager."""

    def __init__(self, config: TrainConfig, *, resume: bool = False, sampler: Any = None) -> None:
        _quiet_transformers()
        for package in ("torch", "transformers") + (("peft",) if config.model.lora is not None else ()):
            require(package)
        self.config = config
        self.dist = init_distributed()
        self.run_dir = Path(config.run.out_dir)
        found = ckpt.latest_checkpoint(self.run_dir)
        if found is not None and not resume:
            raise ConfigError(f"{self.run_dir} already holds a run (checkpoint {found.path.name}); "
                              "pass --resume to continue it or -o to start a new one")
        self.skipped_checkpoints: tuple[tuple[str, str], ...] = ()
        if resume:
            found = self._resume_point()
        if resume and found is None and not any(
                (self.run_dir / name).is_file() for name in (CONFIG_FILE, METRICS_FILE, ROLLOUTS_FILE)):
            # A run killed before its first checkpoint (it left config.yaml or log rows) restarts;
            # a folder that never held a run is a mistyped path, not a run to resume.
            raise InputError(f"--resume: {self.run_dir} holds no run (no checkpoint, no {CONFIG_FILE}, "
                             f"no {METRICS_FILE}); check the path, or drop --resume to start a new run")
        if config.optim.batch_size % self.dist.world_size:
            raise ConfigError(f"optim.batch_size {config.optim.batch_size} must be a multiple of the "
                              f"{self.dist.world_size} processes")
        seed_everything(config.run.seed + self.dist.rank)
        if config.run.threads:
            torch.set_num_threads(config.run.threads)
        self.items, self.val_targets = load_items(config)
        self.resumed_from = found
        self._models = ModelLoader(config, self.dist)
        # The model the run started from: the KL reference, on every resume too.
        self.start_model: Path | None
        if found is None:
            self.start_model = start = self._start_model()
            self.policy = self._models.policy(start, meta=True)
        else:
            self.start_model = Path(found.state["start_model"]) if found.state.get("start_model") else None
            if (self.start_model is not None and self._reads_start_model_on_resume()
                    and not (self.start_model / "config.json").is_file()):
                raise InputError(f"--resume: the model this run started from, {self.start_model}, is gone (a "
                                 "resume reads it for LoRA, the KL reference or the vLLM engine); put it back there")
            self.policy = self._models.checkpoint_policy(found, self._initial_model)
        self.bf16 = resolve_precision(config.run.precision, self.dist.device)
        if hasattr(self.policy, "autocast_bf16"):  # sampling and validation in the update's numerics
            self.policy.autocast_bf16 = self.bf16
        # Activation checkpointing; fsdp: sharded in place, before the optimizer sees the weights.
        self.model = parallel.prepare_model(self.policy.model, config.run, self.dist, bf16=self.bf16,
                                            load=self._models.shard_loader)
        # Who samples rollouts (rollout.engine): the trained policy itself, a given Policy (a
        # scripted one in tests), or a vLLM engine whose weights follow the model's. The engine
        # starts from the run's start model (a sharded or LoRA checkpoint folder holds no whole
        # model) and is sent the restored weights below; started before the RNG state is
        # restored, in case starting it draws random numbers.
        self.engine: Engine = RolloutEngine.start(
            config, self.policy, self.start_model or (found.model_dir if found else None),
            device=self.dist.device, seed=config.run.seed + self.dist.rank, sampler=sampler)
        self.sampler = self.engine.sampler
        try:
            self._set_up(found)
        except BaseException:  # no engine process left behind by a run that failed to set up
            self.engine.close()
            raise

    def _set_up(self, found: ckpt.Checkpoint | None) -> None:
        """Optimizer, data order, the checkpoint's state when resuming, the engine's first
        weight push, the run folder and its logs."""
        config = self.config
        self.tokenizer = self.policy.tokenizer
        self.model.train()
        self.optimizer = build_optimizer(self.model, config.optim)
        self.step = 0
        self.order = DataOrder(len(self.items), config.run.seed, config.data.shuffle)
        if found is not None:
            self._restore(found)
        # The engine starts from the weights of step ``self.step`` (version = step).
        self.engine.push(self.model, self.step)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(config, self.run_dir / CONFIG_FILE)
            if found is None or not (self.run_dir / PROVENANCE_FILE).exists():  # a resume keeps the start's
                self._write_provenance()
        self.logger = RunLogger(self.run_dir, config.run, enabled=self.dist.is_main,
                                # A fresh start drops whatever a run killed before its
                                # first checkpoint left in the folder (-1 keeps no row).
                                resume_step=self.step if found is not None else -1,
                                hparams=to_mapping(config))
        self.progress = ProgressView(config.run.max_steps, self.step, label=config.method,
                                     enabled=self.dist.is_main and config.run.progress)

    def _write_provenance(self) -> None:
        """provenance.json: dataset hash + provenance, config, seeds, code, the start model's own."""
        config = self.config
        data = "" if config.on_episodes else str(config.data.train or paths.DEFAULT_DATASET_DIR)
        tasks = task_entries(self.items) if config.on_episodes else None
        write_json_atomic(self.run_dir / PROVENANCE_FILE,
                          run_provenance(to_mapping(config), data, self.start_model, tasks))

    def item_id(self, index: int) -> str:
        """The id of data item ``index`` (for the rollout log)."""
        item = self.items[index]
        return item.instance_id if isinstance(item, Task) else item.id

    def _reads_start_model_on_resume(self) -> bool:
        """LoRA (base weights), a KL reference, a vLLM engine: a resume loads the start model."""
        cfg = self.config
        return cfg.model.lora is not None or cfg.grpo.beta > 0 or (cfg.rollout.engine == "vllm" and cfg.method != "sft")

    def _start_model(self) -> Path:
        """The model a fresh run starts from (rank 0 creates the tiny default model), kept in the
        run folder when a resume will read it again (``run.keep_start_model``)."""
        path = ckpt.resolve_model_dir(self.config.model.path or None, make_default=self.dist.is_main)
        if self.config.run.keep_start_model and self._reads_start_model_on_resume():
            kept = self.run_dir / ckpt.START_MODEL_DIR
            if self.dist.is_main:
                ckpt.keep_model_folder(path, kept)
            self.dist.barrier()
            return kept
        self.dist.barrier()
        return path

    def reference_model(self) -> torch.nn.Module | None:
        """The frozen KL reference, only when ``grpo.beta`` > 0: the run's initial model, also
        after a resume (not the resumed weights)."""
        if self.config.grpo.beta <= 0:
            return None
        return self._models.reference(self.model, bf16=self.bf16, resumed=self.resumed_from is not None,
                                      start_model=self._initial_model)

    def _initial_model(self) -> Path:
        """The model this run started from: as recorded, else found again (checkpoints from
        before the start model was recorded)."""
        return self.start_model or self._start_model()

    def _resume_point(self) -> ckpt.Checkpoint | None:
        """The newest checkpoint whose files verify (rank 0 checks them, every rank gets its
        answer); one warning line for each newer one passed over. None when the run has no
        checkpoint folder at all; an error when it has some and none is usable."""
        choice = ckpt.find_resumable(self.run_dir) if self.dist.is_main else None
        choice = self.dist.gather(choice)[0]
        if choice.checkpoint is None and choice.skipped:
            reasons = "; ".join(f"{name}: {reason}" for name, reason in choice.skipped)
            raise InputError(f"--resume: no usable checkpoint in {self.run_dir / ckpt.CHECKPOINTS} ({reasons}); "
                             "restore or delete the damaged ones, or start a new run with another -o")
        self.skipped_checkpoints = choice.skipped
        for name, reason in choice.skipped if self.dist.is_main else ():
            log.warning("--resume: skipping checkpoint %s: %s", name, reason)
        return choice.checkpoint

    def _restore(self, found: ckpt.Checkpoint) -> None:
        if found.sharded:  # the weights too: the model was built without them
            sharded.load_sharded_state(found, self.model, self.optimizer)
        else:
            try:
                self.optimizer.load_state_dict(found.optimizer_state())
            except ValueError as exc:  # saved for other parameters (another model or optimizer setting)
                raise InputError(f"checkpoint {found.path}: its optimizer state does not fit this run's "
                                 f"model and optimizer ({exc})") from exc
        self.step = found.step
        self.order = DataOrder.from_state(len(self.items), self.config.run.seed,
                                          self.config.data.shuffle, found.state["data_position"])
        states = found.rng_states()
        # RNG last: loading weights above may have drawn random numbers.
        if self.dist.rank < len(states):
            ckpt.restore_rng(states[self.dist.rank])
        if self.dist.is_main and self.skipped_checkpoints:
            log.warning("--resume: resuming from checkpoint %s (step %d), the newest whose files verify",
                        found.path.name, self.step)
        elif self.dist.is_main:
            log.info("resumed %s at step %d (data position %s)", self.run_dir, self.step, found.state["data_position"])

    # ------------------------------------------------------------------ checkpoints

    def save(self) -> Path | None:
        """Checkpoint the current step (rank 0 writes; under fsdp every rank writes its shards;
        every rank's RNG state is kept)."""
        rng_states = self.dist.gather(ckpt.capture_rng())
        lora = self.config.model.lora
        state = {"data_position": self.order.state(), "method": self.config.method,
                 "world_size": self.dist.world_size, "parallel": self.config.run.parallel,
                 "start_model": str(self.start_model) if self.start_model else None,
                 **({"lora": to_mapping(lora)} if lora is not None else {})}
        if self.dist.is_main:
            self.logger.flush()
        if parallel.is_sharded(self.model):  # every rank writes its shards
            return sharded.save_sharded_checkpoint(
                self.run_dir, self.step, model=self.model, optimizer=self.optimizer, tokenizer=self.tokenizer,
                d=self.dist, rng_states=rng_states, state=state, keep=self.config.run.keep_checkpoints)
        path = None
        if self.dist.is_main:
            path = ckpt.save_checkpoint(
                self.run_dir, self.step, model=self.model, tokenizer=self.tokenizer,
                optimizer=self.optimizer, rng_states=rng_states, keep=self.config.run.keep_checkpoints,
                state=state)
        self.dist.barrier()
        return path

    def sampling_weights(self) -> contextlib.AbstractContextManager:
        """Around sampling with the trained policy (every rank enters): fsdp gathers the whole
        model (:func:`swe_srl.rl.parallel.full_weights`); nothing to do otherwise."""
        if self.sampler is self.policy:
            return parallel.full_weights(self.model)
        return contextlib.nullcontext()

    def due(self, every: int) -> bool:
        return every > 0 and self.step % every == 0

    def log_step(self, metrics: dict[str, Any], drawn: DrawLog, elapsed: float) -> None:
        """metrics.jsonl / TensorBoard (every ``run.log_every`` steps and the last), the draw
        log (rollouts.jsonl, every step: it is what a resumed run's data order is checked
        against) and the progress line."""
        kind = "sft" if self.config.method == "sft" else "grpo"
        metrics.update(step_time=elapsed, epoch=self.order.epoch)
        metrics["tokens_per_s"] = metrics[TOKENS_KEY[kind]] / elapsed
        if self.dist.device.type == "cuda":  # the trainer's own tensors (a colocated vLLM reserves apart)
            metrics["memory/peak_gib"] = torch.cuda.max_memory_allocated(self.dist.device) / 2**30
        if self.due(self.config.run.log_every) or self.step == self.config.run.max_steps:
            self.logger.log(self.step, metrics)
        self.logger.log_rollouts(self.step, {"data_position": self.order.state(), **drawn.to_dict()})
        self.progress.update(self.step, {label: metrics[key] for label, key in PROGRESS[kind]}
                             | {"tok/s": metrics["tokens_per_s"]})

    # ------------------------------------------------------------------ validation

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """Greedy completions on the val step targets: mean SRL reward, format error rate,
        mean similarity of the well-formed ones, exact-match rate (all over ranks)."""
        if not self.val_targets:
            return {}
        mine: Sequence[StepTarget] = shard(self.val_targets, self.dist)
        gen = replace(self.config.generation, temperature=0.0, n=1)
        with parallel.full_weights(self.model):  # every rank, even one with no targets
            samples = [group[0] for group in self.policy.generate([messages_for_target(t) for t in mine],
                                                                  gen)] if mine else []
        rewards = self.config.reward.step_reward()(
            [s.text for s in samples], [{"target": t.target} for t in mine])
        local = StepScores.of([float(r) for r in rewards if r is not None])
        # Sums over ranks first, means after: the same metric as `swe-srl eval --mode steps`.
        n, total, bad, sim, exact = self.dist.all_sum(
            [local.n, local.reward_sum, local.format_errors, local.similarity_sum, local.exact])
        metrics = StepScores(n=int(n), reward_sum=total, format_errors=int(bad), similarity_sum=sim,
                             exact=int(exact)).metrics()
        # A policy that answers every step with one "average" action can score a fair similarity
        # (benchmarks/README.md, learning): the share of distinct answers shows such a collapse.
        answers = {a for part in self.dist.gather([s.text.rsplit("</think>", 1)[-1].strip() for s in samples])
                   for a in part}
        metrics["distinct_answers"] = len(answers) / max(len(self.val_targets), 1)
        return {f"val/{k}": v for k, v in metrics.items()}

    def validate_and_log(self) -> dict[str, float]:
        metrics = self.validate()
        if metrics:
            self.logger.log(self.step, metrics)
        return metrics

    # ------------------------------------------------------------------ lifetime

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.close()
        self.logger.close()
        self.engine.close()
