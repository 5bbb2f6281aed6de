"""Container labels and the reaper: containers whose driver process is gone are removed.

Every sandbox container carries ``swe-srl.run-id``, ``swe-srl.owner-pid``,
``swe-srl.owner-host`` and ``swe-srl.owner-start`` (the owner's start time, so a recycled pid
does not keep a dead run's container alive). A driver killed with SIGKILL cannot clean up; the
next sandbox started on the same host removes what it left.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import Any

from .client import docker_client, infra_error

log = logging.getLogger(__name__)

LABEL_RUN = "swe-srl.run-id"
LABEL_PID = "swe-srl.owner-pid"
LABEL_HOST = "swe-srl.owner-host"
LABEL_START = "swe-srl.owner-start"


def process_start(pid: int) -> str:
    """Start time of a process in clock ticks since boot ('' where /proc is not there)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode(errors="replace")
    except OSError:
        return ""
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    return stat.rsplit(")", 1)[-1].split()[19]


def owner_labels(run_id: str) -> dict[str, str]:
    """The labels a sandbox container of this process carries."""
    pid = os.getpid()
    return {LABEL_RUN: run_id, LABEL_PID: str(pid), LABEL_HOST: socket.gethostname(),
            LABEL_START: process_start(pid)}


def owner_alive(labels: dict[str, str]) -> bool:
    """True unless the labels name a process on this host that is certainly gone."""
    if labels.get(LABEL_HOST) != socket.gethostname():
        return True  # another machine's (or container's) process: not ours to judge
    try:
        pid = int(labels.get(LABEL_PID, ""))
    except ValueError:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    start = labels.get(LABEL_START)
    return not start or process_start(pid) in ("", start)


def _summaries(client: Any, label: str) -> list[dict]:
    # The low-level list: one call, no per-container inspect that races with removals by
    # other runs sharing the engine.
    try:
        return client.api.containers(all=True, filters={"label": label})
    except Exception as exc:
        raise infra_error("listing sandbox containers", exc) from exc


def reap(client: Any = None) -> list[str]:
    """Remove swe-srl containers whose owner process is gone; return their ids."""
    client = client or docker_client()
    dead = [s for s in _summaries(client, LABEL_PID) if not owner_alive(s.get("Labels") or {})]
    return remove_containers(client, dead, "sandbox container(s) left by dead processes")


def remove_containers(client: Any, summaries: list[dict], what: str) -> list[str]:
    """Force-remove the containers of ``summaries`` (engine list rows); return the ids removed.
    One already gone, or being removed by another process, is skipped."""
    removed = []
    for summary in summaries:
        try:
            client.api.remove_container(summary["Id"], force=True)
        except Exception as exc:
            log.debug("removing %s: %s", summary["Id"][:12], exc)
            continue
        removed.append(summary["Id"])
    if removed:
        log.info("removed %d %s", len(removed), what)
    return removed


def list_sandboxes(run_id: str | None = None, client: Any = None) -> list[str]:
    """Ids of swe-srl sandbox containers (of one run when ``run_id`` is given), any state."""
    label = f"{LABEL_RUN}={run_id}" if run_id else LABEL_RUN
    return [summary["Id"] for summary in _summaries(client or docker_client(), label)]
