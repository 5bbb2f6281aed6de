"""An image with the layout of an official SWE-bench instance image, made from a demo task image
in seconds (one container, one script, ``docker commit``), and the SWE-bench row of its task
with the eval script swebench's harness runs there.

What the official images have and this one copies: the repository at /testbed at the task's
base commit, ``/opt/miniconda3/bin/activate`` (sourced, it makes ``conda activate testbed``
work), the repository's test dependencies in the ``testbed`` environment only (the system
python cannot run pytest), the repository installed in development mode in that environment,
and the name swebench derives for the instance (``swebench/sweb.eval.x86_64.<id>:latest``,
``__`` written ``_1776_``). What it does not: conda itself (the env is a python venv and
``conda`` a shell function that only activates), a nonroot user.

The env also holds a pytest plugin distribution with no hooks, ``testbed-env``: pytest's header
then reads ``plugins: testbed-env-1.0``, so a test log shows the tests ran in that env.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import textwrap
import uuid
from typing import Any

from swe_srl.errors import InfrastructureError
from swe_srl.sandbox.images.build import build_task_image
from swe_srl.schemas import Task

# Bump when the recipe below changes in a way ACTIVATE / SETUP do not show.
RECIPE = "1"
CONDA_ROOT = "/opt/miniconda3"
ENV_PREFIX = f"{CONDA_ROOT}/envs/testbed"
ENV_MARKER = "plugins: testbed-env-1.0"
LABEL = "swe-srl.official-layout"
# What SWE-bench runs for a plain pytest repository (its specs' "test_cmd"), before the test files.
OFFICIAL_TEST_CMD = "pytest -rA"

# Sourced by bash (eval scripts run under `set -u`): every variable has a default.
ACTIVATE = textwrap.dedent("""\
    # Stands in for miniconda's bin/activate (swe-srl test image): sourcing it defines `conda`,
    # whose `activate [NAME]` leaves the active env and puts NAME's bin first on PATH.
    _swe_srl_conda_root=/opt/miniconda3
    conda() {
        if [ "${1:-}" != activate ]; then
            echo "conda: only 'conda activate [NAME]' exists in this image" >&2
            return 2
        fi
        _name=${2:-base}
        _prefix=$_swe_srl_conda_root
        [ "$_name" = base ] || _prefix=$_swe_srl_conda_root/envs/$_name
        if [ ! -d "$_prefix/bin" ]; then
            echo "EnvironmentNameNotFound: Could not find conda environment: $_name" >&2
            return 1
        fi
        if [ -n "${CONDA_PREFIX:-}" ]; then
            _rest=
            _ifs=$IFS
            IFS=:
            for _dir in $PATH; do
                [ "$_dir" = "$CONDA_PREFIX/bin" ] || _rest=${_rest:+$_rest:}$_dir
            done
            IFS=$_ifs
            PATH=$_rest
        fi
        PATH=$_prefix/bin:$PATH
        CONDA_PREFIX=$_prefix
        CONDA_DEFAULT_ENV=$_name
        export PATH CONDA_PREFIX CONDA_DEFAULT_ENV
    }
    conda activate base
""")

SETUP = textwrap.dedent(f"""\
    set -euo pipefail
    mkdir -p {CONDA_ROOT}/bin {CONDA_ROOT}/envs
    install -m 755 /tmp/official-layout/activate {CONDA_ROOT}/bin/activate
    python3 -m venv --without-pip {ENV_PREFIX}
    site=$({ENV_PREFIX}/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # The test dependencies live in the env only, as in the official images.
    cp -a /usr/lib/python3/dist-packages/. "$site"/
    rm -rf /usr/lib/python3/dist-packages/* /usr/bin/pytest* /usr/bin/py.test*
    ! python3 -c 'import pytest' 2>/dev/null
    printf '#!{ENV_PREFIX}/bin/python\\nimport sys\\nfrom pytest import console_main\\nsys.exit(console_main())\\n' \\
        > {ENV_PREFIX}/bin/pytest
    chmod 755 {ENV_PREFIX}/bin/pytest
    # The repository installed in development mode (what `pip install -e .` leaves).
    echo /testbed > "$site/__editable__.testbed.pth"
    # A plugin with no hooks: pytest's header names it, so a log shows which env ran the tests.
    echo '# marks the testbed env in pytest headers' > "$site/testbed_env_marker.py"
    mkdir "$site/testbed_env-1.0.dist-info"
    printf 'Metadata-Version: 2.1\\nName: testbed-env\\nVersion: 1.0\\n' > "$site/testbed_env-1.0.dist-info/METADATA"
    printf '[pytest11]\\ntestbed_env = testbed_env_marker\\n' > "$site/testbed_env-1.0.dist-info/entry_points.txt"
    rm -rf /tmp/official-layout
""")


def official_image_name(instance_id: str) -> str:
    """The image swebench's harness runs ``instance_id`` in (its own derivation)."""
    from swebench.task.checks import expected_image

    return expected_image(instance_id)


def _archive(files: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"official-layout/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build_official_layout_image(task: Task, client: Any) -> str:
    """The official-layout image of a demo ``task`` (built from its task image unless an image
    of the same recipe and source is already tagged); returns its name."""
    import docker.errors

    source = client.images.get(build_task_image(task.metadata["task_dir"]))
    name = official_image_name(task.instance_id)
    stamp = hashlib.sha256(f"{RECIPE}\n{source.id}\n{ACTIVATE}\n{SETUP}".encode()).hexdigest()[:12]
    try:
        if (client.images.get(name).labels or {}).get(LABEL) == stamp:
            return name
    except docker.errors.ImageNotFound:
        pass
    container = client.containers.create(source.id, command=["sleep", "infinity"], init=True,
                                         network_mode="none", name=f"swe-srl-official-layout-{uuid.uuid4().hex[:8]}")
    try:
        container.start()
        container.put_archive("/tmp", _archive({"activate": ACTIVATE, "setup.sh": SETUP}))
        exit_code, output = container.exec_run(["bash", "/tmp/official-layout/setup.sh"])
        if exit_code != 0:
            raise InfrastructureError(f"official layout setup failed ({exit_code}): {output.decode()[-500:]}")
        repository, _, tag = name.rpartition(":")
        container.commit(repository=repository, tag=tag, changes=[
            f"ENV PATH={CONDA_ROOT}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "WORKDIR /testbed", f"LABEL {LABEL}={stamp}"])
    finally:
        container.remove(force=True)
    return name


def official_eval_script(row: dict) -> str:
    """The eval.sh SWE-bench publishes for a Python instance (the shape of swebench's
    ``make_eval_script_list_py``): activate the env, reset the test files, apply the test
    patch, run the test command between the start and end markers, reset the test files."""
    from swebench.harness.constants import END_TEST_OUTPUT, NON_TEST_EXTS, START_TEST_OUTPUT
    from swebench.utils import get_modified_files

    base, test_patch = row["base_commit"], row["test_patch"]
    modified = get_modified_files(test_patch)
    new = re.findall(r"^--- /dev/null\n\+\+\+ b/(\S+)$", test_patch, re.MULTILINE)
    reset = ([f"git checkout {base} {' '.join(modified)}"] if modified else []) + (
        [f"rm -f {' '.join(new)}"] if new else [])
    directives = [d for d in re.findall(r"^diff --git a/.* b/(.*)$", test_patch, re.MULTILINE)
                  if not any(d.endswith(ext) for ext in NON_TEST_EXTS)]
    delimiter = "EOF_114329324912"
    activate = ["source /opt/miniconda3/bin/activate", "conda activate testbed"]
    lines = ["#!/bin/bash", "set -uxo pipefail", *activate, "cd /testbed",
             "git config --global --add safe.directory /testbed", "cd /testbed", "git status", "git show",
             f"git -c core.fileMode=false diff {base}", *activate, *reset,
             f"git apply -v - <<'{delimiter}'\n{test_patch}\n{delimiter}",
             f": '{START_TEST_OUTPUT}'", " ".join([OFFICIAL_TEST_CMD, *directives]), f": '{END_TEST_OUTPUT}'",
             *reset]
    return "\n".join(lines) + "\n"


def swebench_row(task: Task) -> dict:
    """``task`` as a row of a SWE-bench dataset (with the columns swebench 5 reads: image,
    log_parser, eval_type, eval_script) that runs in its official-layout image."""
    row = {"instance_id": task.instance_id, "repo": task.repo, "version": task.version,
           "base_commit": task.base_commit, "environment_setup_commit": task.environment_setup_commit,
           "problem_statement": task.problem_statement, "hints_text": task.hints_text,
           "created_at": task.created_at, "patch": task.patch, "test_patch": task.test_patch,
           "FAIL_TO_PASS": list(task.fail_to_pass), "PASS_TO_PASS": list(task.pass_to_pass),
           "image": official_image_name(task.instance_id), "log_parser": "parse_log_pytest",
           "eval_type": "pass_and_fail"}
    return {**row, "eval_script": official_eval_script(row)}
