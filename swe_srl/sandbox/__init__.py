"""Sandboxes where agent episodes run: one Docker container per episode (or, when asked, a
non-isolating local copy), with timeouts, output caps and resource limits.

    from swe_srl.sandbox import SandboxConfig, open_sandbox
    with open_sandbox(SandboxConfig(image="swe-srl/task-demo:abc123")) as box:
        box.exec("pytest -q").output
        patch = box.diff()
"""

from __future__ import annotations

from .base import Sandbox, SandboxFileNotFound
from .config import Backend, SandboxConfig
from .docker import DockerSandbox
from .local import LocalSandbox
from .tools import run_tool

__all__ = ["Backend", "DockerSandbox", "LocalSandbox", "Sandbox", "SandboxConfig", "SandboxFileNotFound",
           "open_sandbox", "run_tool"]


def open_sandbox(config: SandboxConfig) -> Sandbox:
    """Start a sandbox of the configured backend (the caller closes it, best with ``with``)."""
    if config.backend == "local":
        return LocalSandbox(config)
    return DockerSandbox(config)
