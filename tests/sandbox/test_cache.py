"""The image cache under a disk budget: bytes counted as Docker stores them (a shared layer
once), least-recently-used eviction that never touches base images or held images, and an
eval over every demo task under a budget smaller than their images, which resolves every
expert while the project's image bytes, sampled throughout, stay within the budget.

The Docker tests hold every project image they did not make (or that is not a demo task's), so
only images they can rebuild are evicted, and leave every demo image present when they end."""

from __future__ import annotations

import threading
import time

import pytest

from swe_srl.errors import ConfigError
from swe_srl.evaluate import EvalConfig, evaluate_tasks
from swe_srl.experts import ExpertReplay, load_scripts
from swe_srl.harness import HarnessConfig
from swe_srl.sandbox.images.cache import ImageCache, budget_bytes
from swe_srl.sandbox.images.disk import (
    GB,
    ImageRecord,
    Snapshot,
    all_images_bytes,
    chain_ids,
    pair_layers,
    take_snapshot,
)
from swe_srl.sandbox.images.index import ImageIndex, add_hold, holder_id
from swe_srl.schemas import Task
from swe_srl.tasks import load_tasks

from ..conftest import write_sample_task

docker = pytest.mark.docker
DEMO = load_tasks("demo")


# --------------------------------------------------------------------------- counting bytes


def test_chain_ids_follow_the_oci_definition():
    import hashlib

    a, b = "sha256:" + "a" * 64, "sha256:" + "b" * 64
    assert chain_ids([a, b]) == [a, "sha256:" + hashlib.sha256(f"{a} {b}".encode()).hexdigest()]
    assert chain_ids([b, a])[1] != chain_ids([a, b])[1]  # the same layer on other parents is another layer


def test_pair_layers_skips_history_steps_that_made_no_layer():
    diffs = ["sha256:1", "sha256:2", "sha256:3"]
    chains = chain_ids(diffs)
    # A Dockerfile's ENV / CMD / WORKDIR steps are history entries of size 0 without a layer.
    assert pair_layers(diffs, [100, 0, 0, 20, 0, 3]) == tuple(zip(chains, [100, 20, 3]))
    # A layer of 0 bytes (a step that changed no file) takes a zero entry.
    assert pair_layers(diffs, [100, 0, 20, 0]) == tuple(zip(chains, [100, 0, 20]))
    assert pair_layers(diffs, [100, 5, 20]) == tuple(zip(chains, [100, 5, 20]))


def _image(name: str, layers: list[tuple[str, int]], parent: str = "", kind: str = "task") -> ImageRecord:
    return ImageRecord(name, (f"x/{name}:1",), {"swe-srl.kind": kind}, 0.0, parent, tuple(layers))


def test_a_shared_layer_counts_once_and_is_freed_only_with_its_last_image():
    base = _image("base", [("L0", 1000)], kind="base")
    a = _image("a", [("L0", 1000), ("La", 30)], parent="base")
    b = _image("b", [("L0", 1000), ("Lb", 20)], parent="base")
    snap = Snapshot.of({i.id: i for i in (base, a, b)}, parents={"base"})
    assert snap.total_bytes() == 1050  # not 1000 + 1030 + 1020
    assert snap.freed_by(["a"]) == 30 and snap.freed_by(["a", "b"]) == 50
    assert snap.freed_by(["a", "b", "base"]) == 1050
    assert snap.own_bytes("a") == 30 and snap.own_bytes("b") == 20
    chosen, freed = snap.covering([a, b], excess=25)
    assert chosen == [a] and freed == 30


def test_index_forgets_holders_whose_process_is_gone(tmp_path):
    index = ImageIndex(tmp_path / "images" / "engine.json")
    with index.locked() as data:
        add_hold(data, "x/a:1", 1)
        data["holders"]["x/b:1"] = {f"{holder_id().split('|')[0]}|999999999|1": 1}  # no such pid
    with index.locked() as data:
        assert data["holders"] == {"x/a:1": {holder_id(): 1}}
        add_hold(data, "x/a:1", -1)
    with index.locked() as data:
        assert data["holders"] == {}
    (tmp_path / "images" / "engine.json").write_text("{torn")  # a cache: a torn file starts afresh
    with index.locked() as data:
        assert data["images"] == {} and data["holders"] == {}


def test_budget_settings_are_checked():
    with pytest.raises(ConfigError, match="image_budget_gb"):
        HarnessConfig(image_budget_gb=-1.0)
    with pytest.raises(ConfigError, match="image_prefetch"):
        HarnessConfig(image_prefetch=-1)
    assert budget_bytes(None) is None and budget_bytes(1.5) == 1_500_000_000


# --------------------------------------------------------------------------- Docker


@docker
def test_project_bytes_are_counted_as_the_engine_counts_its_layers(docker_client):
    for _ in range(3):  # another process may add or remove an image in between: retry
        before = docker_client.df()["LayersSize"]
        counted = all_images_bytes(docker_client)
        if docker_client.df()["LayersSize"] == before:
            break
    assert counted == before


def _others(client, mine: set[str]) -> list[str]:
    """Every project image whose id is not in ``mine``: held by the tests, never evicted."""
    return [i.ref for i in take_snapshot(client).images.values() if i.id not in mine]


def _image_id(client, tag: str) -> str:
    return client.images.get(tag).id


@docker
def test_least_recently_used_goes_first_and_held_and_base_images_stay(docker_client, base_image, tmp_path):
    tasks = []
    for i in range(3):
        folder = write_sample_task(tmp_path, f"lru-{i}")
        (folder / "repo" / "VERSION").write_text(f"{i}\n")
        tasks.append(Task(instance_id=folder.name, repo="local/calc", base_commit="", problem_statement="",
                          source="local", metadata={"task_dir": str(folder)}))
    cache = ImageCache()
    tags = [cache.acquire(t) for t in tasks]
    for i in (1, 0, 2):  # last used in this order: 1 is the least recently used
        cache.release(tags[i])
        time.sleep(0.01)
    ids = {_image_id(docker_client, tag) for tag in tags}
    try:
        with ImageCache().hold(_others(docker_client, ids)):
            snap = take_snapshot(docker_client)
            budget = snap.total_bytes() - min(snap.own_bytes(i) for i in ids)  # one of the three must go
            with ImageCache(budget).hold([tags[1]]):
                evicted = ImageCache(budget).enforce()
            assert evicted == [tags[0]]  # 1 was used longer ago, but is held
            assert [bool(docker_client.images.list(name=t)) for t in tags] == [False, True, True]
            assert take_snapshot(docker_client).total_bytes() <= budget
            assert not any(i.kind == "base" and i.ref in evicted for i in snap.images.values())
            again = ImageCache(budget)
            assert again.acquire(tasks[0]) == tags[0]  # back on demand, same tag, within the budget
            assert take_snapshot(docker_client).total_bytes() <= budget and again.stats.built == 1
            again.release(tags[0])
    finally:
        for tag in tags:
            if docker_client.images.list(name=tag):
                docker_client.images.remove(tag)


@docker
def test_a_fresh_untagged_image_is_not_evicted_as_a_commit_may_be_about_to_tag_it(docker_client, base_image):
    container = docker_client.containers.create(base_image, command=["true"], labels={"swe-srl.kind": "task"})
    try:
        image = container.commit()  # a project image (its label) that has no tag yet
    finally:
        container.remove(force=True)
    try:
        assert {i.ref: i.pinned for i in ImageCache().usage().images}[image.id] == "new"
        with ImageCache().hold(_others(docker_client, {image.id})):
            assert ImageCache(0).enforce() == []
        assert docker_client.images.get(image.id)
    finally:
        docker_client.images.remove(image.id, force=True)


class _Sampler(threading.Thread):
    """Samples the project's image bytes and which of ``tags`` are present, every 50 ms."""

    def __init__(self, client, tags: list[str]) -> None:
        super().__init__(daemon=True)
        self.client, self.tags = client, tags
        self.samples: list[tuple[int, frozenset[str]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            snap = take_snapshot(self.client)
            present = frozenset(t for t in self.tags if any(t in i.tags for i in snap.images.values()))
            self.samples.append((snap.total_bytes(), present))
            self.stop.wait(0.05)


@docker
def test_eval_under_a_budget_smaller_than_the_demo_images_resolves_every_expert(docker_client, base_image,
                                                                                tmp_path):
    from swe_srl.sandbox.images.source import ensure_image

    tags = {t.instance_id: ensure_image(t) for t in DEMO}
    demo_ids = {_image_id(docker_client, tag) for tag in tags.values()}
    keeper = ImageCache()
    try:
        with keeper.hold(_others(docker_client, demo_ids)):
            snap = take_snapshot(docker_client)
            room = 3 * max(snap.own_bytes(i) for i in demo_ids)  # 2 episodes in flight + 1 prefetched
            budget = budget_bytes((snap.total_bytes() - snap.freed_by(demo_ids) + room) / GB)
            assert budget < snap.total_bytes()
            assert ImageCache(budget).enforce()  # the run starts at the budget
            sampler = _Sampler(docker_client, list(tags.values()))
            sampler.start()
            replay = ExpertReplay.from_scripts(load_scripts(DEMO), DEMO)
            config = EvalConfig(workers=2, model_name="expert-script",
                                harness=HarnessConfig(image_budget_gb=budget / GB, image_prefetch=2))
            summary = evaluate_tasks(replay.policy(), DEMO, tmp_path / "eval", config, thread_safe_policy=True)
            sampler.stop.set()
            sampler.join()
        assert summary["resolved"] == len(DEMO) and summary["infrastructure_failures"] == 0, summary
        sizes = [size for size, _ in sampler.samples]
        assert len(sizes) >= 20 and max(sizes) <= budget, (max(sizes), budget)
        stats = summary["image_cache"]
        assert stats["evicted"] > 0 and stats["built"] + stats["prefetched"] > 0 and stats["peak_bytes"] <= budget
        # Some demo image was gone while the run went on, and present again later: rebuilt offline.
        assert any(_present_after_gone(sampler.samples, t) for t in tags.values())
    finally:  # the other tests use the demo images
        assert {t.instance_id: ensure_image(t) for t in DEMO} == tags


def _present_after_gone(samples: list[tuple[int, frozenset[str]]], tag: str) -> bool:
    """Whether ``tag`` is present in a sample after one where it was absent."""
    gone = False
    for _, present in samples:
        gone = gone or tag not in present
        if gone and tag in present:
            return True
    return False

