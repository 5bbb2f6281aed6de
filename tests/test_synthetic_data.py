"""The bundled synthetic trajectories (trajectories/synthetic/): the generator's output, readable
as swe-srl trajectories, consistent with the generated repositories (checked here independently
of the generator, with swe-srl's own editor tool and, for one task of each bug kind, a real
replay with bash, Python, pytest and git), and the held-out split they give build-dataset."""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from swe_srl.actions import parse_xml, render_xml
from swe_srl.cli import main
from swe_srl.dataset import DatasetConfig, build_dataset
from swe_srl.formats import read_trajectories
from swe_srl.paths import EXPERT_TRAJECTORIES_DIR, REPO_ROOT, SAMPLES_DIR, SYNTHETIC_TRAJECTORIES_DIR
from swe_srl.sandbox.tools import str_replace_editor as editor_tool
from swe_srl.schemas import Trajectory

SHIPPED = SYNTHETIC_TRAJECTORIES_DIR / "trajectories.jsonl.gz"
pytestmark = pytest.mark.skipif(not SHIPPED.is_file(), reason=f"synthetic trajectories missing ({SHIPPED})")


@pytest.fixture(scope="module")
def synthgen():
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(REPO_ROOT / "trajectories"))
        import synthgen as module
    return module


@pytest.fixture(scope="module")
def generated(synthgen):
    """(tasks, records) as the generator makes them with its defaults (~1.5 s)."""
    tasks = synthgen.make_tasks(synthgen.DEFAULT_TASKS, synthgen.DEFAULT_SEED)
    return tasks, [synthgen.record(task, synthgen.DEFAULT_SEED) for task in tasks]


@pytest.fixture(scope="module")
def shipped() -> list:
    with gzip.open(SHIPPED, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_shipped_file_is_what_the_generator_writes(synthgen, generated):
    data = SHIPPED.read_bytes()
    assert data[4:8] == b"\0\0\0\0", "gzip mtime must be 0 (reproducible bytes)"
    # Compare the content, not the compressed bytes (those depend on the zlib build).
    assert gzip.decompress(data) == gzip.decompress(synthgen.to_bytes(generated[1])), \
        "stale: run python3 trajectories/generate_synthetic.py"


def test_generator_is_deterministic_and_seeded(synthgen):
    first, again = synthgen.generate(12, seed=5), synthgen.generate(12, seed=5)
    assert synthgen.to_bytes(first) == synthgen.to_bytes(again)
    other = synthgen.generate(12, seed=6)
    assert [r["steps"] for r in other] != [r["steps"] for r in first]


def test_records_read_as_synthetic_swe_srl_trajectories(shipped):
    skips = []
    trajectories = list(read_trajectories([SHIPPED], on_skip=skips.append))
    assert not skips and len(trajectories) == len(shipped) == 250
    assert len({t.task_id for t in trajectories}) == 250
    kinds = {r["metadata"]["bug_kind"] for r in shipped}
    assert len(kinds) >= 10
    for record, traj in zip(shipped, trajectories):
        assert Trajectory.from_dict(record).to_dict() == record
        assert traj.source_format == "swe-srl" and traj.resolved is True and traj.exit_status == "submitted"
        assert traj.task_id.startswith("synth-") and traj.model == "synthetic-expert"
        assert record["metadata"]["synthetic"] is True and "synthetic" in record["source"]
        assert 5 <= len(traj.steps) <= 12
        assert traj.steps[-1].action.tool == "submit"
        assert {s.action.tool for s in traj.steps} <= {"bash", "str_replace_editor", "submit"}
        for step in traj.steps:
            assert parse_xml(render_xml(step.action)).arguments == step.action.arguments
        assert traj.final_patch.startswith("diff --git ")


# ----------------------------------------------------------------- consistency, replayed here


_HEREDOC = re.compile(r"cat (>>?) (\S+) << 'EOF'\n(.*\n)EOF(?:\n(.*))?", re.S)
_SED_I = re.compile(r"sed -i '(\d*)s/((?:[^/\\]|\\.)*)/((?:[^/\\]|\\.)*)/' (\S+)")
_PYTEST = re.compile(r"python3? -m pytest -q(?: (\S+))?(?: -k (\S+))?")


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


class Repo:
    """A generated task's files on disk, edited by the trajectory's actions as a shell would."""

    def __init__(self, root: Path, files: dict) -> None:
        self.root = root
        for path, text in files.items():
            (root / path).parent.mkdir(parents=True, exist_ok=True)
            (root / path).write_text(text)

    def files(self) -> dict:
        return {p.relative_to(self.root).as_posix(): p.read_text() for p in sorted(self.root.rglob("*"))
                if p.is_file()}

    def text(self, path: str) -> str:
        return (self.root / path).read_text()

    def check_bash(self, command: str, observation: str) -> None:
        """Apply a command's effect; assert its observation where it shows the repository."""
        if (m := _HEREDOC.fullmatch(command)):
            mode, path, content, rest = m.groups()
            with open(self.root / path, "a" if mode == ">>" else "w") as fh:
                fh.write(content)
            return  # the rest runs the script: output checked by the real replay
        for part in command.split(" && "):
            self.check_part(part, observation)

    def check_part(self, part: str, observation: str) -> None:
        files = self.files()
        if part.startswith("rm "):
            (self.root / part[3:]).unlink()
        elif (m := _SED_I.fullmatch(part)):
            address, old, new, path = m.groups()
            lines = self.text(path).split("\n")
            for i, line in enumerate(lines):
                if (not address or i + 1 == int(address)) and _unescape(old) in line:
                    lines[i] = line.replace(_unescape(old), _unescape(new), 1)
            (self.root / path).write_text("\n".join(lines))
        elif (m := re.fullmatch(r"cat (\S+)", part)):
            assert observation == files[m.group(1)]
        elif (m := re.fullmatch(r"sed -n '(\d+),(\d+)p' (\S+)", part)):
            first, last = int(m.group(1)), int(m.group(2))
            assert observation == "".join(f"{line}\n" for line in files[m.group(3)].split("\n")[:-1][first - 1:last])
        elif (m := re.fullmatch(r'grep -rn "([^"]+)" (.+)', part)):
            self.check_grep(m.group(1), m.group(2).split(), observation, files)
        elif part == "ls":
            assert observation.split() == sorted({p.split("/")[0] for p in files if not p.startswith(".")})
        elif (m := re.fullmatch(r"ls (\S+) (\S+)", part)):
            blocks = [f"{d}:\n" + "".join(f"{p.split('/')[1]}\n" for p in files if p.startswith(d + "/"))
                      for d in sorted(m.groups())]
            assert observation == "\n".join(blocks)
        elif part.startswith("find "):
            assert observation == "".join(f"./{p}\n" for p in files if p.endswith(".py"))
        elif (m := _PYTEST.fullmatch(part)):
            self.check_pytest(m.group(1), m.group(2), observation, files)

    def check_grep(self, pattern: str, args: list, observation: str, files: dict) -> None:
        py_only = "--include=*.py" in args
        roots = [a for a in args if not a.startswith("--")]
        expected = set()
        for root in roots:
            prefix = "" if root == "." else root.rstrip("/") + "/"
            for path, text in files.items():
                if path.startswith(prefix) and (path.endswith(".py") or not py_only):
                    expected |= {(path, i) for i, line in enumerate(text.split("\n"), 1) if pattern in line}
        shown = set()
        for line in observation.splitlines():
            path, number, text = line.split(":", 2)
            path = path.removeprefix("./")
            assert files[path].split("\n")[int(number) - 1] == text
            shown.add((path, int(number)))
        assert shown == expected

    def check_pytest(self, target, keyword, observation: str, files: dict) -> None:
        paths = [target] if target and target.endswith(".py") else [p for p in files if p.startswith("tests/test_")]
        names = [n for p in paths for n in re.findall(r"^def (test_\w+)\(", files[p], re.M)]
        selected = [n for n in names if not keyword or keyword.lower() in n.lower()]
        summary = f"{len(selected)} passed" + (f", {len(names) - len(selected)} deselected" if keyword else "")
        first, second = observation.split("\n")[:2]
        assert first == "." * len(selected) + " " * (72 - len(selected)) + " [100%]"
        assert re.fullmatch(re.escape(summary) + r" in \d\.\d\ds", second), (summary, second)


def _editor(args: dict, root: Path) -> str:
    out = editor_tool.run(dict(args))
    return (out if out.endswith("\n") else out + "\n").replace(str(root), "/testbed")


def test_observations_match_the_generated_repository(generated, tmp_path, monkeypatch):
    """Every file view, grep line, listing and test count matches the repository at that point;
    editor observations are what swe-srl's str_replace_editor prints; the end state is the fix."""
    tasks, records = generated
    monkeypatch.setattr(editor_tool, "STATE_DIR", str(tmp_path / "editor-state"))
    views = 0
    for task, record in zip(tasks, records):
        root = tmp_path / task.task_id / "testbed"
        repo = Repo(root, task.files)
        monkeypatch.setattr(editor_tool, "PATH_MAP", f"/testbed={root}")
        for step in record["steps"]:
            tool, args, observation = step["action"]["tool"], step["action"]["arguments"], step["observation"]
            if tool == "str_replace_editor":
                got = _editor(args, root)
                if args["path"] == "/testbed":  # a tree listing: find's order is the file system's
                    assert sorted(got.split("\n")) == sorted(observation.split("\n"))
                else:
                    assert got == observation, (task.task_id, args)
                views += 1
            elif tool == "bash":
                command = args["command"]
                assert command.startswith("cd /testbed && ")
                repo.check_bash(command.removeprefix("cd /testbed && "), observation)
        end = repo.files()
        assert set(end) == set(task.files), "the reproduction script must be gone before submit"
        assert end[task.mod_path] == task.files[task.mod_path].replace(task.bug.old, task.bug.new)
        changed = sorted(p for p in end if end[p] != task.files[p])
        assert re.findall(r"^diff --git a/(\S+) ", record["final_patch"], re.M) == changed
    assert views > 100


# ----------------------------------------------------------------- a real replay


def _normalise(text: str, root: Path) -> str:
    text = re.sub(r" in \d+\.\d+s\n", " in Xs\n", text.replace(str(root), "/testbed"))
    # Python 3.11+ marks the failing expression under a traceback line; the data has 3.10's shape.
    return "\n".join(line for line in text.split("\n") if not re.fullmatch(r"\s*[~^]+\s*", line))


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None or shutil.which("bash") is None, reason="needs git and bash")
def test_one_session_per_bug_kind_replays_with_the_real_tools(generated, tmp_path, monkeypatch):
    """bash (grep, sed, ls, find, heredocs), python and pytest, git diff/status and the editor
    tool give the recorded observation at every step, and git gives the recorded patch."""
    pytest.importorskip("pytest")
    tasks, records = generated
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("python", "python3"):
        os.symlink(sys.executable, bin_dir / name)
    # No bytecode: a .pyc is trusted when the source has the same size and mtime in seconds, and
    # a same-size `sed -i` fix within the same second (a replay, not a session) would look stale.
    env = os.environ | {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "LC_ALL": "C",
                        "PYTHONDONTWRITEBYTECODE": "1", "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1",
                        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_GLOBAL": os.devnull}
    for name in ("PYTHONPATH", "PYTEST_ADDOPTS"):
        env.pop(name, None)
    monkeypatch.setattr(editor_tool, "STATE_DIR", str(tmp_path / "editor-state"))
    one_per_kind = {}
    for task, record in zip(tasks, records):
        one_per_kind.setdefault(record["metadata"]["bug_kind"], (task, record))
    for task, record in one_per_kind.values():
        root = tmp_path / task.task_id / "testbed"
        Repo(root, task.files)
        subprocess.run("git init -q && git add -A && git commit -qm base", shell=True, cwd=root, env=env, check=True)
        monkeypatch.setattr(editor_tool, "PATH_MAP", f"/testbed={root}")
        for step in record["steps"]:
            tool, args = step["action"]["tool"], step["action"]["arguments"]
            if tool == "submit":
                continue
            if tool == "str_replace_editor":
                got, code = _editor(args, root), 0
            else:
                command = args["command"].replace("cd /testbed", f"cd {root}", 1)
                done = subprocess.run(["bash", "-c", command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, env=env, timeout=120)
                got, code = done.stdout, done.returncode
            expected, got = _normalise(step["observation"], root), _normalise(got, root)
            if tool == "str_replace_editor" and args["path"] == "/testbed" or "grep -r" in args.get("command", ""):
                expected, got = sorted(expected.split("\n")), sorted(got.split("\n"))  # directory order
            assert (got, code) == (expected, step["exit_code"]), (task.task_id, args)
        diff = subprocess.run(["git", "diff"], cwd=root, env=env, capture_output=True, text=True, check=True)
        assert diff.stdout == record["final_patch"], task.task_id


# ----------------------------------------------------------------- what build-dataset gets


def test_default_build_dataset_holds_out_enough_unseen_tasks(tmp_path, capsys):
    """Without INPUT: at least 64 val step targets (default val_fraction 0.05), from tasks that
    are not in train; the other bundled data is split as it is without the synthetic file."""
    with pytest.raises(SystemExit) as done:
        main(["build-dataset", "-o", str(tmp_path / "all"), "-q", "--output", "jsonl"])
    assert done.value.code in (0, None), capsys.readouterr().err
    stats = json.loads((tmp_path / "all" / "stats.json").read_text())
    assert stats["config"]["val_fraction"] == 0.05
    assert any(p.endswith("trajectories.jsonl.gz") for p in stats["inputs"])

    def rows(folder: Path, split: str) -> list:
        return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]

    train, val = rows(tmp_path / "all", "train"), rows(tmp_path / "all", "val")
    assert len(val) >= 64
    assert not {r["task_id"] for r in train} & {r["task_id"] for r in val}
    assert sum(r["task_id"].startswith("synth-") for r in val) >= 48

    others = [SAMPLES_DIR] + [p for p in (EXPERT_TRAJECTORIES_DIR / "demo-experts.jsonl",) if p.is_file()]
    build_dataset(others, tmp_path / "others", DatasetConfig(), output="jsonl")
    for split, got in (("train", train), ("val", val)):
        assert [r for r in got if not r["task_id"].startswith("synth-")] == rows(tmp_path / "others", split)
