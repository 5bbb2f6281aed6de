"""Load tasks: SWE-bench-style rows (jsonl / json / parquet / ``datasets``), the bundled demo
tasks in ``environments/tasks/``, named subsets, and selection (ids, slice, regex, repo,
difficulty, shuffle). Also: SWE-bench image names, test commands and log parsers per repo.
(Making a task's image present in the engine is :func:`swe_srl.sandbox.images.source.ensure_image`.)
"""

from __future__ import annotations

import json
import random
import re
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError, InfrastructureError, InputError, RecordError
from .paths import TASKS_DIR
from .schemas import Task

SUBSETS_DIR = Path(__file__).resolve().parent / "subsets"
DEMO_SOURCE = "demo"
LOCAL_TEST_CMD = "python3 -m pytest -rA -p no:cacheprovider"

# Test commands of the SWE-bench Python repositories (the harness runs them on the files the
# test patch touches). Repos not listed run pytest; versions differ only in details we do not
# need for grading with the official images, where the command is what matters.
_DJANGO_CMD = "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1"
_SWEBENCH_TEST_CMDS = {
    "django/django": _DJANGO_CMD,
    "sphinx-doc/sphinx": "tox --current-env -epy39 -v --",
    "sympy/sympy": "PYTHONWARNINGS='ignore::UserWarning,ignore::SyntaxWarning' bin/test -C --verbose",
    "mwaskom/seaborn": "pytest --no-header -rA",
    "astropy/astropy": "pytest -rA -vv -o console_output_style=classic --tb=no",
}
_DEFAULT_SWEBENCH_CMD = "pytest -rA"
_SWEBENCH_IMAGE_PREFIX = "swebench/sweb.eval."
_SWEBENCH_ENV_SETUP = "source /opt/miniconda3/bin/activate && conda activate testbed"


@dataclass(frozen=True)
class TaskSelection:
    """Which tasks of a source to keep, applied in this order: subset / ids, repo, difficulty,
    filter (regex searched in instance_id), shuffle (seeded), slice ("start:stop")."""

    subset: str | None = None
    ids: tuple[str, ...] = ()
    repo: str | None = None
    difficulty: str | None = None
    filter: str | None = None
    shuffle: bool = False
    seed: int = 0
    slice: str | None = None

    def __post_init__(self) -> None:
        if self.filter is not None:
            try:
                re.compile(self.filter)
            except re.error as exc:
                raise ConfigError(f"task filter {self.filter!r} is not a valid regex: {exc}") from None
        if self.slice is not None:
            _parse_slice(self.slice)


# ---------------------------------------------------------------- rows -> Task


def _test_list(value: Any, field_name: str) -> tuple[str, ...]:
    """FAIL_TO_PASS / PASS_TO_PASS: a JSON-encoded list (published Verified) or a list."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise RecordError(f"{field_name} is a string but not a JSON list") from None
    if hasattr(value, "tolist"):  # numpy arrays from parquet
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise RecordError(f"{field_name} must be a list of test names")
    return tuple(value)


def files_in_patch(patch: str) -> tuple[str, ...]:
    """Files a diff creates or changes (the ``b/`` side; deletions are left out)."""
    files = []
    for match in re.finditer(r"^diff --git a/(\S+) b/(\S+)$", patch, re.MULTILINE):
        files.append(match.group(2))
    deleted = set(re.findall(r"^--- a/(\S+)\n\+\+\+ /dev/null$", patch, re.MULTILINE))
    return tuple(dict.fromkeys(f for f in files if f not in deleted))



def swebench_image_name(instance_id: str) -> str:
    """The official prebuilt SWE-bench instance image (repo at /testbed)."""
    return f"{_SWEBENCH_IMAGE_PREFIX}x86_64.{instance_id.replace('__', '_1776_').lower()}:latest"


def swebench_log_parser(repo: str) -> str:
    """Name (a key of swebench's PARSER_REGISTRY) of the log parser for a SWE-bench repo;
    ``"pytest"`` (swe-srl's own -rA parser) for repos swebench does not know."""
    try:
        from swebench.harness.log_parsers import PARSER_REGISTRY
        from swebench.harness.log_parsers.python import MAP_REPO_TO_PARSER_PY
    except ImportError:
        return "pytest"
    func = MAP_REPO_TO_PARSER_PY.get(repo)
    # Parsers are aliased (parse_log_sphinx is parse_log_pytest_v2): prefer the repo's own name.
    names = sorted((name for name, f in PARSER_REGISTRY.items() if f is func),
                   key=lambda name: name != f"parse_log_{repo.split('/')[-1]}")
    return names[0] if names else "pytest"


def _directives(repo: str, test_files: Sequence[str]) -> list[str]:
    if repo == "django/django":
        # Django's runner takes dotted test modules relative to tests/.
        return [
            f[len("tests/"):-len(".py")].replace("/", ".") if f.startswith("tests/") else f
            for f in test_files
            if f.endswith(".py")
        ]
    return list(test_files)


def swebench_test_command(repo: str, test_files: Sequence[str] = ()) -> str:
    """The command that runs ``test_files`` of a SWE-bench repo, as its harness does."""
    cmd = _SWEBENCH_TEST_CMDS.get(repo, _DEFAULT_SWEBENCH_CMD)
    return " ".join([cmd, *map(shlex.quote, _directives(repo, test_files))])


def task_from_row(row: Mapping[str, Any], *, source: str = "swebench") -> Task:
    """A :class:`Task` from a SWE-bench-style record; RecordError names what is wrong."""
    if not isinstance(row, Mapping):
        raise RecordError(f"a task row must be an object, got {type(row).__name__}")
    missing = [k for k in ("instance_id", "repo", "base_commit", "problem_statement") if not row.get(k)]
    if missing:
        raise RecordError(f"task row is missing {', '.join(missing)}")
    instance_id, repo = str(row["instance_id"]), str(row["repo"])
    f2p = _test_list(row.get("FAIL_TO_PASS", row.get("fail_to_pass")), "FAIL_TO_PASS")
    p2p = _test_list(row.get("PASS_TO_PASS", row.get("pass_to_pass")), "PASS_TO_PASS")
    test_patch = str(row.get("test_patch") or "")
    test_files = tuple(row.get("test_files") or ()) or files_in_patch(test_patch)
    local = source == "local"
    test_cmd = str(row.get("test_cmd") or "")
    if not test_cmd:
        test_cmd = LOCAL_TEST_CMD if local else swebench_test_command(repo)
    return Task(
        instance_id=instance_id,
        repo=repo,
        base_commit=str(row["base_commit"]),
        problem_statement=str(row["problem_statement"]),
        patch=str(row.get("patch") or ""),
        test_patch=test_patch,
        fail_to_pass=f2p,
        pass_to_pass=p2p,
        image=str(row.get("image") or ("" if local else swebench_image_name(instance_id))),
        test_cmd=test_cmd,
        test_files=test_files,
        log_parser=str(row.get("log_parser") or ("pytest" if local else swebench_log_parser(repo))),
        workdir=str(row.get("workdir") or "/testbed"),
        version=str(row.get("version") or ""),
        difficulty=str(row.get("difficulty") or ""),
        hints_text=str(row.get("hints_text") or ""),
        created_at=str(row.get("created_at") or ""),
        environment_setup_commit=str(row.get("environment_setup_commit") or ""),
        source=source,
    )


def task_test_command(task: Task) -> str:
    """The shell command that runs ``task``'s test files in its workdir."""
    repo = "" if task.source == "local" else task.repo
    command = " ".join([task.test_cmd, *map(shlex.quote, _directives(repo, task.test_files))])
    if task.image.startswith(_SWEBENCH_IMAGE_PREFIX):
        # Official instance images keep the repo's environment in a conda env a bare exec lacks.
        command = f"{_SWEBENCH_ENV_SETUP} && {command}"
    return command



# ---------------------------------------------------------------- sources


def _rows_from_file(path: Path) -> Iterator[tuple[int, Any]]:
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        yield from enumerate(pq.read_table(path).to_pylist())
    elif suffix == ".jsonl":
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh):
                if line.strip():
                    try:
                        yield number, json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise InputError(f"{path}:{number + 1}: not JSON: {exc.msg}") from None
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: not JSON: {exc.msg} (line {exc.lineno})") from None
        yield from enumerate(data if isinstance(data, list) else [data])
    else:
        raise InputError(f"{path}: unknown task file type {suffix!r} (use .jsonl, .json or .parquet)")


def tasks_from_rows(rows: Iterable[Any], *, origin: str = "rows", source: str = "swebench") -> list[Task]:
    """Tasks from records; a bad record is an InputError naming its origin and row."""
    tasks = []
    for number, row in enumerate(rows):
        try:
            tasks.append(task_from_row(row, source=source))
        except RecordError as exc:
            raise InputError(f"{origin} row {number}: {exc}") from None
    return tasks


def load_local_task(task_dir: str | Path) -> Task:
    """One task folder: ``task.json`` (a SWE-bench record + test_cmd, difficulty) and ``repo/``.

    ``base_commit`` may be left out of task.json: it is then computed, as the commit the task
    image makes of repo/'s files (fixed author, dates and message: the same hash on any
    machine). A git history inside repo/ is not kept by the image, so its HEAD is not used."""
    task_dir = Path(task_dir)
    spec = task_dir / "task.json"
    if not spec.is_file() or not (task_dir / "repo").is_dir():
        raise InputError(f"{task_dir}: a task folder needs task.json and repo/")
    try:
        row = json.loads(spec.read_text(encoding="utf-8"))
        if isinstance(row, dict) and not row.get("base_commit"):
            row = {**row, "base_commit": _computed_base_commit(spec, task_dir / "repo")}
        task = task_from_row(row, source="local")
    except (json.JSONDecodeError, RecordError) as exc:
        raise InputError(f"{spec}: {exc}") from None
    return replace(task, metadata={**task.metadata, "task_dir": str(task_dir.resolve())})


def _computed_base_commit(spec: Path, repo: Path) -> str:
    from .sandbox.images.build import compute_base_commit  # host git only; no engine needed

    try:
        return compute_base_commit(repo)
    except InfrastructureError as exc:
        raise InputError(f"{spec}: no base_commit, and it cannot be computed ({exc}): "
                         "add it to task.json or install git") from None


def load_local_tasks(tasks_dir: str | Path = TASKS_DIR) -> list[Task]:
    """Every task folder under ``tasks_dir`` (default: the bundled environments/tasks), by id."""
    tasks_dir = Path(tasks_dir)
    if (tasks_dir / "task.json").is_file():
        return [load_local_task(tasks_dir)]
    if not tasks_dir.is_dir():
        raise InputError(f"task folder {tasks_dir} does not exist")
    tasks = [load_local_task(d) for d in sorted(tasks_dir.iterdir()) if (d / "task.json").is_file()]
    if not tasks:
        raise InputError(f"no task folders (with task.json) under {tasks_dir}")
    return tasks


def _load_source(source: Any, split: str) -> list[Task]:
    if isinstance(source, (list, tuple)):
        return tasks_from_rows(source)
    if hasattr(source, "keys") and hasattr(source, "column_names") and not hasattr(source, "features"):
        if split not in source:  # a datasets.DatasetDict
            raise InputError(f"dataset has no split {split!r} (splits: {', '.join(source.keys())})")
        source = source[split]
    if hasattr(source, "features") and hasattr(source, "__iter__"):  # a datasets.Dataset
        return tasks_from_rows(iter(source), origin="dataset")
    text = str(source)
    if text == DEMO_SOURCE:
        return load_local_tasks(TASKS_DIR)
    path = Path(text).expanduser()
    if path.is_dir():
        return load_local_tasks(path)
    if path.is_file():
        return tasks_from_rows((row for _, row in _rows_from_file(path)), origin=str(path))
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text):
        return _load_hub_dataset(text, split)
    raise InputError(f"task source {text!r} is neither 'demo', a file, a folder nor a dataset name")


def _load_hub_dataset(name: str, split: str) -> list[Task]:
    try:
        import datasets
    except ImportError:
        raise InputError(f"loading {name!r} needs the datasets package: pip install 'swe-srl[train]'") from None
    try:
        data = datasets.load_dataset(name, split=split)
    except Exception as exc:  # offline hub, unknown name, bad split: all user-fixable
        msg = " ".join(str(exc).split())[:200]
        raise InputError(f"cannot load dataset {name!r} split {split!r}: {msg}") from None
    return tasks_from_rows(iter(data), origin=name)


# ---------------------------------------------------------------- subsets and selection


def available_subsets() -> list[str]:
    """Names of the id lists shipped in swe_srl/subsets/."""
    return sorted(p.stem for p in SUBSETS_DIR.glob("*.txt"))


def load_subset(name: str) -> tuple[str, ...]:
    """The instance ids of a named subset (or of an id-list file given by path)."""
    path = SUBSETS_DIR / f"{name}.txt"
    if not path.is_file():
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"unknown subset {name!r} (known: {', '.join(available_subsets())})")
    lines = (line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines())
    return tuple(line for line in lines if line)


def _parse_slice(text: str) -> slice:
    match = re.fullmatch(r"\s*(-?\d*)\s*:\s*(-?\d*)\s*", text)
    if not match:
        raise ConfigError(f"task slice {text!r} must look like 'start:stop' (e.g. '0:10')")
    start, stop = (int(g) if g else None for g in match.groups())
    return slice(start, stop)


def select_tasks(tasks: Sequence[Task], selection: TaskSelection) -> list[Task]:
    """Apply ``selection`` to ``tasks``; asking for ids the source lacks is a ConfigError."""
    chosen = list(tasks)
    wanted = list(selection.ids) + list(load_subset(selection.subset) if selection.subset else ())
    if wanted:
        by_id = {t.instance_id: t for t in chosen}
        absent = [i for i in wanted if i not in by_id]
        if absent and not selection.subset:
            raise ConfigError(f"{len(absent)} requested task id(s) not in the source, e.g. {absent[0]!r}")
        chosen = [by_id[i] for i in dict.fromkeys(wanted) if i in by_id]
    if selection.repo:
        chosen = [t for t in chosen if t.repo == selection.repo]
    if selection.difficulty:
        chosen = [t for t in chosen if t.difficulty == selection.difficulty]
    if selection.filter:
        pattern = re.compile(selection.filter)
        chosen = [t for t in chosen if pattern.search(t.instance_id)]
    if selection.shuffle:
        random.Random(selection.seed).shuffle(chosen)
    if selection.slice:
        chosen = chosen[_parse_slice(selection.slice)]
    return chosen


def load_tasks(
    source: Any = DEMO_SOURCE,
    selection: TaskSelection | None = None,
    *,
    split: str = "test",
    **selection_fields: Any,
) -> list[Task]:
    """Tasks from ``source`` ('demo', a task folder, a .jsonl/.json/.parquet file of SWE-bench
    rows, a list of rows, a ``datasets`` Dataset/DatasetDict, or a hub dataset name), then
    selected by ``selection`` or by TaskSelection fields given as keywords.

    Raises InputError for unreadable sources and ConfigError for a selection that cannot apply;
    an empty result is an InputError too (nothing to run is never what the user meant)."""
    if selection is None:
        if "ids" in selection_fields and selection_fields["ids"] is not None:
            selection_fields["ids"] = tuple(selection_fields["ids"])
        try:
            selection = TaskSelection(**{k: v for k, v in selection_fields.items() if v is not None})
        except TypeError as exc:
            raise ConfigError(f"bad task selection: {exc}") from None
    elif selection_fields:
        raise ConfigError("give either a TaskSelection or selection keywords, not both")
    tasks = select_tasks(_load_source(source, split), selection)
    if not tasks:
        raise InputError(f"no tasks left in {source!s:.80} after the selection {selection}")
    return tasks

