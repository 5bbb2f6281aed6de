"""`swe-srl doctor` (is this machine ready?), `swe-srl env build` (sandbox images) and
`swe-srl env prune` (the project's images down to a disk budget) and `swe-srl env calibrate`
(in :mod:`.calibrate`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.table import Table

from ..errors import ConfigError, InfrastructureError
from ..paths import TASKS_DIR
from ..sandbox.doctor import run_checks
from ..sandbox.images.build import MIRROR_ENV, build_all
from ..sandbox.images.cache import ImageCache, budget_bytes
from ..sandbox.images.disk import human_bytes

if TYPE_CHECKING:
    from ..hosts import HostsConfig

env_app = typer.Typer(help="Sandbox environments: build the base image and the task images; calibrate tasks.",
                      no_args_is_help=True)


def doctor_command(
    tasks: Path = typer.Option(TASKS_DIR, "--tasks", help="Task folders whose images should exist."),
    hosts: str | None = typer.Option(None, "--hosts", help="Also check these Docker hosts through their Ray actors: "
                                                           "comma-separated name=docker-url."),
    ray_address: str = typer.Option("", "--ray-address",
                                    help="The Ray cluster the hosts are on [default: a local one]."),
    budget: float | None = typer.Option(None, "--budget", help="Report the project's image bytes against this budget "
                                                               "(GB)."),
) -> None:
    """Check the Docker engine, sandbox images, image bytes, disk, cores, memory, GPU and package
    versions (and, with --hosts, every Docker host: engine, images, disk, running containers)."""
    budget_bytes(budget)  # a bad budget is one line, before any check runs
    checks = run_checks(tasks, budget)
    if hosts:
        from ..hosts import HostsConfig

        checks += check_hosts(HostsConfig(ray_address=ray_address,
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
    only: str | None = typer.Option(None, "--only", help="Build only this task id (and the base image)."),
    method: str = typer.Option("debootstrap", "--method",
                               help="Base image: 'debootstrap' (offline, needs root) or 'dockerfile' (needs a "
                                    "registry)."),
    force: bool = typer.Option(False, "--force", help="Rebuild even when the tag exists."),
    mirror: str | None = typer.Option(
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


@env_app.command("prune")
def env_prune_command(
    budget: float = typer.Option(0.0, "--budget", help="Evict task images, least recently used first, until the "
                                 "project's images take at most this many GB [default: 0: every evictable one]."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only show the images and what they take."),
) -> None:
    """Show the project's images (bytes counted once per shared layer, as Docker stores them)
    and evict task images down to a budget; base images and images in use stay. Evicted
    images are rebuilt when a task needs them again."""
    cache = ImageCache.of(budget)
    before = cache.usage()
    evicted = [] if dry_run else cache.enforce()
    table = Table(title=f"swe-srl images (budget {human_bytes(cache.budget or 0)})")
    for column in ("image", "kind", "bytes", "last used", "status"):
        table.add_column(column, overflow="fold")
    for image in before.images:
        status = "evicted" if image.ref in evicted else (f"kept ({image.pinned})" if image.pinned else "kept")
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(image.last_used)) if image.last_used else "-"
        table.add_row(image.ref, image.kind, human_bytes(image.bytes), used, status)
    Console().print(table)
    after = before if dry_run else cache.usage()
    typer.echo(f"project images: {human_bytes(before.total_bytes)} -> {human_bytes(after.total_bytes)} "
               f"({len(evicted)} evicted; pinned {human_bytes(after.pinned_bytes)})")
    if after.over_budget and not dry_run:
        typer.secho("still over the budget: what is left is pinned (base images, images in use)",
                    fg=typer.colors.YELLOW, err=True)


def register(app: typer.Typer) -> None:
    from .calibrate import calibrate_command

    env_app.command("calibrate")(calibrate_command)
    app.command("doctor")(doctor_command)
    app.add_typer(env_app, name="env")


def check_hosts(config: HostsConfig, tasks_dir: Any = None) -> list:
    """``doctor --hosts``: one line per Docker host, through its Ray actor."""
    from ..hosts import HostPool
    from ..sandbox.doctor import Check

    checks = []
    try:
        pool = HostPool(config)
    except (ConfigError, InfrastructureError) as exc:
        return [Check("hosts", "fail", str(exc), "start Ray on each Docker host (see README: many hosts)")]
    with pool:
        for host in pool.hosts:
            try:
                facts = host.call("ping", timeout=120)
            except InfrastructureError as exc:
                checks.append(Check(f"host {host.name}", "fail", str(exc), "start its engine; check its url"))
                continue
            free = facts["disk_free_bytes"]
            detail = (f"engine {facts['engine']} ({facts['driver']}), {facts['images']} images, base image "
                      f"{'present' if facts['base_image'] else 'missing (built on first use)'}, "
                      f"{facts['containers_running']} containers running ({facts['sandboxes']} swe-srl), "
                      f"project images {human_bytes(facts['image_bytes'])}, "
                      f"disk free {'?' if free is None else f'{free / 2**30:.1f} GiB'}")
            low = free is not None and free < 20 * 2**30
            checks.append(Check(f"host {host.name}", "warn" if low else "ok", detail,
                                "free disk on that host (task images are GBs each)" if low else ""))
    return checks
