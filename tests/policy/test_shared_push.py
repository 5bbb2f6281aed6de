"""Weight-push buckets through shared-memory files (swe_srl/policy/shared_push.py): what the
engine's worker maps is the trainer's tensor bit for bit, files go once loaded, and a file
system without room falls back to pickling (the real-engine test is test_push_vllm.py)."""

from __future__ import annotations

import pickle

import pytest
import torch

from swe_srl.policy import shared_push
from swe_srl.policy.shared_push import SharedTensor, remove_files, shared_folder, to_shared
from swe_srl.policy.weight_push import push_buckets

TENSORS = [
    ("a.weight", torch.randn(7, 5, dtype=torch.bfloat16)),
    ("a.bias", torch.randn(5, dtype=torch.float32)),
    ("scale", torch.tensor(3.5, dtype=torch.float16)),
    ("ids", torch.arange(11, dtype=torch.int64)),
    ("mask", torch.tensor([True, False, True])),
    ("empty", torch.zeros(0, 4)),
]


def test_mapped_tensors_equal_the_written_ones_bit_for_bit(tmp_path):
    items = list(to_shared(iter(TENSORS), str(tmp_path)))
    assert all(isinstance(t, SharedTensor) for _, t in items)
    for (name, original), (same, shared) in zip(TENSORS, items):
        loaded = shared.load()
        assert same == name and loaded.dtype == original.dtype and loaded.shape == original.shape
        assert torch.equal(loaded, original)
        assert shared.numel() * shared.element_size() == original.numel() * original.element_size()
    # What the RPC carries is small: names, dtypes, shapes, paths.
    assert len(pickle.dumps(items)) < 2048
    remove_files(items)
    assert list(tmp_path.iterdir()) == []


def test_buckets_of_shared_tensors_are_cut_like_buckets_of_tensors(tmp_path):
    named = [(f"layers.{i}.mlp.down_proj.weight", torch.randn(64, 64)) for i in range(6)]
    plain = [[n for n, _ in b] for b in push_buckets(iter(named), 40_000, {})]
    shared = [[n for n, _ in b] for b in push_buckets(to_shared(iter(named), str(tmp_path)), 40_000, {})]
    assert plain == shared and len(plain) > 1


def test_a_tensor_without_room_travels_pickled(tmp_path, monkeypatch):
    def full(tensor, folder, index):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shared_push, "write_shared", full)
    items = list(to_shared(iter(TENSORS[:2]), str(tmp_path)))
    assert [type(t) for _, t in items] == [torch.Tensor, torch.Tensor]


def test_no_folder_where_the_file_system_lacks_room_for_two_buckets(tmp_path):
    assert shared_folder(2**62, root=str(tmp_path)) is None
    assert shared_folder(1024, root=str(tmp_path / "missing")) is None
    folder = shared_folder(1024, root=str(tmp_path))
    assert folder is not None and folder.startswith(str(tmp_path))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_worker_side_reload_receives_mapped_tensors(tmp_path, monkeypatch, dtype):
    got = {}
    monkeypatch.setattr(shared_push, "reload_in_worker", lambda weights, worker: got.update(weights))
    original = torch.randn(3, 4).to(dtype)
    items = list(to_shared(iter([("w", original), ("b", torch.ones(2))]), str(tmp_path)))
    items[1] = ("b", torch.ones(2))  # a mixed bucket: one tensor fell back to pickling
    shared_push.reload_shared_in_worker(items, worker=None)
    assert torch.equal(got["w"], original) and torch.equal(got["b"], torch.ones(2))
