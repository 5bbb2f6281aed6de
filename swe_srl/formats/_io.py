"""Stream records out of trajectory files: JSON (one object, an array, or concatenated
objects), JSONL, Parquet (by record batch), each optionally gzip-compressed. The container is
recognised from the bytes (magic numbers, first character), not the file name."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from ..errors import InputError

# Files picked up when a directory is given (explicitly named files are read whatever their name).
SUFFIXES = (".json", ".jsonl", ".ndjson", ".traj", ".parquet",
            ".json.gz", ".jsonl.gz", ".ndjson.gz", ".traj.gz")
PARQUET_BATCH_ROWS = 256
_PARQUET_MAGIC = b"PAR1"
_GZIP_MAGIC = b"\x1f\x8b"
_SNIFF_BYTES = 8192

# on_problem(row or None, reason): a record or a whole file could not be read.
Problem = Callable[["int | None", str], None]


def iter_files(inputs) -> list[Path]:
    """Every file named by ``inputs`` (directories searched recursively, sorted), checking all
    paths first so that a typo fails before any work is done."""
    paths = [Path(p) for p in inputs]
    for path in paths:
        if not path.exists():
            raise InputError(f"no such file or directory: {path}")
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(
                f for f in path.rglob("*")
                if f.is_file() and f.name.lower().endswith(SUFFIXES)
                and not any(part.startswith(".") for part in f.relative_to(path).parts)))
        else:
            files.append(path)
    return files


def iter_records(path: Path, on_problem: Problem) -> Iterator[tuple[int, object]]:
    """``(row, value)`` for each record of ``path``; unreadable parts go to ``on_problem``.
    ``row`` is the 0-based position of the record in the file (for JSONL: its line index)."""
    try:
        with open(path, "rb") as raw:
            magic = raw.read(4)
            raw.seek(0)
            if magic == _PARQUET_MAGIC:
                yield from _parquet(path, on_problem)
            elif magic[:2] == _GZIP_MAGIC:
                with gzip.GzipFile(fileobj=raw) as unzipped:
                    yield from _text(unzipped, on_problem)  # type: ignore[arg-type]
            else:
                yield from _text(raw, on_problem)
    except (OSError, EOFError, zlib.error) as exc:  # truncated gzip, unreadable file
        on_problem(None, f"cannot read file: {exc}")


def _text(stream: IO[bytes], on_problem: Problem) -> Iterator[tuple[int, object]]:
    head = stream.read(_SNIFF_BYTES)
    if b"\x00" in head:
        on_problem(None, "binary file (not JSON, JSONL or Parquet)")
        return
    first = head.lstrip()[:1]
    if not first:
        on_problem(None, "empty file")
        return
    if first not in (b"{", b"["):
        on_problem(None, "not JSON: the file does not start with '{' or '['")
        return
    if first == b"{" and b"\n" not in head:
        head += stream.readline()  # complete the first line, however long, to classify it
    first_line = head.split(b"\n", 1)[0]
    if first == b"{" and _is_json(first_line):
        yield from _jsonl(head, stream, on_problem)
    else:
        yield from _whole_json(head + stream.read(), on_problem)


def _is_json(line: bytes) -> bool:
    try:
        json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return False
    return True


def _jsonl(head: bytes, stream: IO[bytes], on_problem: Problem) -> Iterator[tuple[int, object]]:
    """One record per line; a broken line is reported and the next one read."""
    pending = head
    row = 0
    while True:
        chunk = stream.read(1 << 20)
        pending += chunk
        lines = pending.split(b"\n")
        pending = lines.pop() if chunk else b""
        for line in lines:
            if line.strip():
                try:
                    yield row, json.loads(line)
                except (ValueError, UnicodeDecodeError) as exc:
                    on_problem(row, f"invalid JSON line: {_json_reason(exc)}")
            row += 1
        if not chunk:
            return


def _whole_json(data: bytes, on_problem: Problem) -> Iterator[tuple[int, object]]:
    """A JSON document: an array of records, one object, or objects one after another."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        on_problem(None, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
        return
    decoder = json.JSONDecoder()
    index, row = 0, 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return
        try:
            value, index = decoder.raw_decode(text, index)
        except json.JSONDecodeError as exc:
            on_problem(None if row == 0 else row, f"truncated or invalid JSON: {_json_reason(exc)}")
            return
        if isinstance(value, list) and row == 0:
            yield from enumerate(value)
            row = len(value)
        else:
            yield row, value
            row += 1


def _parquet(path: Path, on_problem: Problem) -> Iterator[tuple[int, object]]:
    try:
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises its own ArrowInvalid/OSError family
        on_problem(None, f"unreadable Parquet file: {exc}")
        return
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            for value in batch.to_pylist():
                yield row, value
                row += 1
    except Exception as exc:
        on_problem(row, f"unreadable Parquet data after row {row}: {exc}")


def _json_reason(exc: Exception) -> str:
    if isinstance(exc, json.JSONDecodeError):
        return f"{exc.msg} (line {exc.lineno} column {exc.colno})"
    if isinstance(exc, UnicodeDecodeError):
        return f"not UTF-8 ({exc.reason})"
    return str(exc)
