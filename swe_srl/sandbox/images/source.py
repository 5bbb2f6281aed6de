"""Where a task's image comes from: :func:`ensure_image` makes the image a task is graded in
present in the local engine, and :func:`expected_image_tag` names it without touching the engine.

Two sources today: a bundled task (``source == "local"`` with a ``task_dir``) has its image
built from its folder (:mod:`.build`); any other task names its image (an official SWE-bench
image), which is pulled where a registry answers. A new source is one more branch in both
functions, keyed on what the task carries.
"""

from __future__ import annotations

from pathlib import Path

from ...errors import InfrastructureError
from ...schemas import Task
from ..client import docker_client, infra_error
from .build import base_image_tag, build_task_image, task_image_tag


def _local_task_dir(task: Task) -> str | None:
    """The folder a bundled (local) task's image is built from, if it has one."""
    task_dir = task.metadata.get("task_dir") if isinstance(task.metadata, dict) else None
    return str(task_dir) if task.source == "local" and task_dir else None


def expected_image_tag(task: Task) -> str:
    """The tag :func:`ensure_image` gives ``task``, without building or pulling anything."""
    task_dir = _local_task_dir(task)
    if task_dir and not task.image:
        return task_image_tag(Path(task_dir), base_image_tag())
    if not task.image:
        raise InfrastructureError(f"task {task.instance_id} names no image")
    return task.image


def ensure_image(task: Task) -> str:
    """The image tag to grade ``task`` in, present in the local engine: a bundled task's image
    is built (cached by content; also when its tag is given but was removed, e.g. evicted by
    the image cache); another task's image is pulled where a registry answers.

    Raises InfrastructureError ("image X is not present and cannot be pulled: ...")."""
    client = docker_client()
    task_dir = _local_task_dir(task)
    if task_dir and not task.image:
        return build_task_image(task_dir)
    if not task.image:
        raise InfrastructureError(f"task {task.instance_id} names no image")
    try:
        client.images.get(task.image)
        return task.image
    except Exception as exc:
        if type(exc).__name__ != "ImageNotFound":
            raise infra_error(f"cannot inspect image {task.image}", exc) from exc
    if task_dir and task.image == task_image_tag(Path(task_dir), base_image_tag()):
        return build_task_image(task_dir)  # our own image, gone: rebuilt offline, same tag
    try:
        client.images.pull(task.image)
    except Exception as exc:
        msg = " ".join(str(getattr(exc, "explanation", None) or exc).split())[:200]
        raise InfrastructureError(f"image {task.image} is not present and cannot be pulled: {msg}") from exc
    return task.image


