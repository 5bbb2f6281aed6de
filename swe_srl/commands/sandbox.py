"""`swe-srl doctor` (is this machine ready?), `swe-srl env build` (sandbox images) and
`swe-srl env calibrate` (in :mod:`.calibrate`)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError
from ..paths import TASKS_DIR
from ..sandbox.doctor import run_checks
from ..sandbox.images import MIRROR_ENV, build_all

env_app = typer.Typer(help="Sandbox environments: build the base image and the task images; calibrate tasks.",
                      no_args_is_help=True)


def doctor_command(
    tasks: Path = typer.Option(TASKS_DIR, "--tasks", help="Task folders whose images should exist."),
    hosts: Optional[str] = typer.Option(None, "--hosts", help="Also check these Docker hosts through their Ray actors: comma-separated name=docker-url."),
    ray_address: str = typer.Option("", "--ray-address", help="The Ray cluster the hosts are on [default: a local one]."),
) -> None:
    """Check the Docker engine, sandbox images, disk, cores, memory, GPU and package versions
    (and, with --hosts, every Docker host: engine, images, disk, running containers)."""
    checks = run_checks(tasks)
    if hosts:
        from ..hosts import HostsConfig, check_hosts

        checks += check_hosts(HostsConfig(backend="ray", ray_address=ray_address,
                                          hosts=tuple(h.strip() for h in hosts.split(",") if h.strip())), tasks)
    colour = {"ok": "green", "warn": "yellow", "fail": "red"}
    table = Table(title="swe-srl doctor", show_lines=False)
    for column in ("check", "status", "found", "to fix"):
        table.add_column(column, overflow="fold")
    for check in checks:
        table.add_row(check.name, f"[{colour[check.status]}]{check.status}[/]", check.detail,
                      check.fix if check.status != "ok" else "")
    Console().print(table)
    failed = [c.name for c in checks if c.status == "fail"]
    if failed:
        typer.secho(f"not ready: {', '.join(failed)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)


@env_app.command("build")
def env_build_command(
    tasks: Path = typer.Option(TASKS_DIR, "--tasks", help="Folder of task folders (<id>/{task.json, repo/})."),
    only: Optional[str] = typer.Option(None, "--only", help="Build only this task id (and the base image)."),
    method: str = typer.Option("debootstrap", "--method",
                               help="Base image: 'debootstrap' (offline, needs root) or 'dockerfile' (needs a registry)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when the tag exists."),
    mirror: Optional[str] = typer.Option(
        None, "--mirror", envvar=MIRROR_ENV,
        help="Debian mirror URL for debootstrap (default: debootstrap's own)."),
) -> None:
    """Build the sandbox base image (if missing) and one image per task folder; print the tags."""
    if method not in ("debootstrap", "dockerfile"):
        raise ConfigError(f"--method must be 'debootstrap' or 'dockerfile', not {method!r}")
    tags = build_all(tasks, only, method=method, force=force, mirror=mirror,  # type: ignore[arg-type]
                     echo=lambda line: typer.secho(line, fg=typer.colors.BRIGHT_BLACK, err=True))
    for name, tag in tags.items():
        typer.echo(f"{name}\t{tag}")


def register(app: typer.Typer) -> None:
    from .calibrate import calibrate_command

    env_app.command("calibrate")(calibrate_command)
    app.command("doctor")(doctor_command)
    app.add_typer(env_app, name="env")
