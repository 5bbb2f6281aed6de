"""A small exception family. Each subclasses the builtin that fits, so callers may catch either."""

from __future__ import annotations


class SweSrlError(Exception):
    """Base of every error swe-srl raises on purpose. The CLI prints its message as one line."""


class ConfigError(SweSrlError, ValueError):
    """A configuration value or command-line option a user must fix."""


class InputError(SweSrlError, ValueError):
    """Input data that cannot be used at all (missing path, unknown format, empty result)."""


class RecordError(SweSrlError, ValueError):
    """One record of an input that cannot be read; the caller skips it and reports why."""


class ActionParseError(SweSrlError, ValueError):
    """Text that does not hold exactly one well-formed action."""


class InfrastructureError(SweSrlError, RuntimeError):
    """The sandbox or harness failed (container died, image missing, harness timeout).

    Never the model's fault: rewards built on it are None, and summaries count it apart."""


class SandboxTimeout(InfrastructureError, TimeoutError):
    """A sandbox operation (not a model command) ran past its limit."""


class SandboxDied(InfrastructureError):
    """The container stopped while a command ran in it (its processes killed PID 1, or it ran
    out of memory); the engine itself still answers.

    Before the model's code runs (sandbox start, applying patches) that is an infrastructure
    failure like any other. Once the model's commands, or tests importing its code, run in the
    container, callers that know it (the agent loop, grading after the tests start) count it as
    the model's result. ``output``: what the command printed before the container went down."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output

    def __reduce__(self):  # picklable with its output (it crosses process boundaries on Ray)
        return type(self), (str(self), self.output)


class PatchTooLarge(SweSrlError):
    """The model's patch is larger than the configured maximum: its result (not resolved),
    never read whole into memory or stored."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"patch too large: {size} bytes > {limit}")
        self.size, self.limit = size, limit

    def __reduce__(self):
        return type(self), (self.size, self.limit)


class DiskLimitExceeded(SweSrlError):
    """A container wrote more than its disk budget (``sandbox.disk_limit``): the model's
    result, never an infrastructure failure. ``output``: what the command printed."""

    def __init__(self, message: str, output: str = "") -> None:
        super().__init__(message)
        self.output = output

    def __reduce__(self):
        return type(self), (str(self), self.output)


class StaleWeights(SweSrlError, RuntimeError):
    """A rollout engine sampled a batch with other weights than the trained model's (a weight
    push was missed or failed): training on it would be silently off-policy."""
