"""Read agent trajectories in every published format into :class:`~swe_srl.schemas.Trajectory`.

Each format is one module with ``NAME``, ``matches(record) -> bool`` and
``read(record, source) -> Trajectory`` (raising :class:`~swe_srl.errors.RecordError` with the
reason a record cannot be used). :data:`FORMATS` maps names to those modules in detection order;
:func:`read_trajectories` streams files or folders and reports unreadable records as
:class:`Skip` instead of raising. Adding a format = one module here + samples under
``trajectories/samples/<format>/``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from ..errors import ConfigError, RecordError, SweSrlError
from ..schemas import Trajectory
from . import mini_swe_agent, mini_swe_agent_tools, native, nebius, openhands, swe_agent, swe_gym, swe_smith
from ._common import decode_json_columns
from ._io import iter_files, iter_records
from ._origin import with_origin

__all__ = ["FORMATS", "FormatReader", "Skip", "detect_format", "read_trajectories", "read_record"]

log = logging.getLogger(__name__)


class FormatReader(Protocol):
    """What a format module provides."""

    NAME: str

    def matches(self, record: Mapping[str, Any]) -> bool: ...

    def read(self, record: Mapping[str, Any], source: str = "") -> Trajectory: ...


# Detection order: the most specific markers first (our own records, mini-swe-agent's
# trajectory_format), then structure (SWE-agent's step list before nebius' chat list, SWE-smith's
# XML text before SWE-Gym's tool calls).
FORMATS: dict[str, FormatReader] = {
    m.NAME: m  # type: ignore[misc]
    for m in (native, mini_swe_agent, mini_swe_agent_tools, swe_agent, openhands, nebius,
              swe_smith, swe_gym)
}


@dataclass(frozen=True)
class Skip:
    """A record (``row``: its 0-based position in ``file``) or a whole file (``row`` None)
    that could not be read, and why."""

    file: str
    row: int | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detect_format(record: Any) -> str | None:
    """The name of the format ``record`` is in, judged from its content; None if unknown."""
    if not isinstance(record, dict):
        return None
    for name, reader in FORMATS.items():
        if reader.matches(record):
            return name
    return None


def read_record(record: Any, source: str = "", fmt: str = "auto") -> Trajectory:
    """One record as a Trajectory (JSON-string columns decoded, format detected unless given).
    Raises SweSrlError (RecordError) when the record cannot be used."""
    if not isinstance(record, dict):
        raise RecordError(f"record is a {type(record).__name__}, expected an object")
    decode_json_columns(record)
    name = detect_format(record) if fmt == "auto" else fmt
    if name is None:
        keys = ", ".join(sorted(record)[:8]) or "none"
        raise RecordError(f"unknown trajectory format (top-level keys: {keys})")
    # repo / base commit, wherever this format keeps them (decontamination matches on them)
    return with_origin(FORMATS[name].read(record, source), record)


def read_trajectories(
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    fmt: str = "auto",
    on_skip: Callable[[Skip], None] | None = None,
) -> Iterator[Trajectory]:
    """Stream the trajectories in ``inputs`` (files, or folders searched recursively for
    .json/.jsonl/.traj/.parquet, optionally .gz). ``fmt`` names one format or ``"auto"`` to
    detect it per record. Unreadable records and files are passed to ``on_skip`` (logged when
    None) and skipped. Raises InputError for a missing path and ConfigError for an unknown
    ``fmt``, both before anything is read."""
    if fmt != "auto" and fmt not in FORMATS:
        raise ConfigError(f"unknown trajectory format {fmt!r}; choose 'auto' or one of: {', '.join(FORMATS)}")
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    files = iter_files(inputs)
    return _stream(files, fmt, on_skip or _log_skip)


def _stream(files: list[Path], fmt: str, on_skip: Callable[[Skip], None]) -> Iterator[Trajectory]:
    for path in files:
        file = str(path)

        def problem(row: int | None, reason: str, file: str = file) -> None:
            on_skip(Skip(file, row, reason))

        for row, record in iter_records(path, problem):
            try:
                yield read_record(record, f"{file}:{row}", fmt)
            except SweSrlError as exc:
                problem(row, str(exc))
            except Exception as exc:  # a reader tripping over an odd value must not end the run
                problem(row, f"unreadable record ({type(exc).__name__}: {exc})")


def _log_skip(skip: Skip) -> None:
    where = skip.file if skip.row is None else f"{skip.file}:{skip.row}"
    log.warning("skipped %s: %s", where, skip.reason)
