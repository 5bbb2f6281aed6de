"""The str_replace_editor script (run on the host with this Python: it is stdlib-only).

Each test is named after the mistake it guards against: an ambiguous or missing match edited
silently, off-by-one line numbers, a lost undo, an overwritten file, mangled non-UTF-8 bytes."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest

from swe_srl.sandbox.tools import EDITOR_SCRIPT


@pytest.fixture
def editor(tmp_path, monkeypatch):
    state = tmp_path / "state"

    def call(**args):
        payload = base64.b64encode(json.dumps(args).encode()).decode()
        done = subprocess.run([sys.executable, str(EDITOR_SCRIPT), "--b64", payload], capture_output=True,
                              env={"SWE_SRL_EDITOR_STATE": str(state), "PATH": "/usr/bin:/bin"},
                              cwd=tmp_path)
        return done.returncode, done.stdout.decode("utf-8")

    return call


@pytest.fixture
def sample(tmp_path) -> Path:
    path = tmp_path / "mod.py"
    path.write_text("def f():\n    x = 1\n    return x\n\n\ndef g():\n    x = 1\n    return x\n")
    return path


def test_multiple_matches_are_refused_with_their_line_numbers(editor, sample):
    code, out = editor(command="str_replace", path=str(sample), old_str="x = 1", new_str="x = 2")
    assert code == 1
    assert "Multiple occurrences of old_str `x = 1` in lines [2, 7]" in out
    assert sample.read_text().count("x = 1") == 2


def test_no_match_is_refused_and_file_untouched(editor, sample):
    before = sample.read_text()
    code, out = editor(command="str_replace", path=str(sample), old_str="y = 3", new_str="y = 4")
    assert code == 1
    assert f"old_str `y = 3` did not appear verbatim in {sample}" in out
    assert sample.read_text() == before


def test_unique_replacement_shows_numbered_snippet(editor, sample):
    code, out = editor(command="str_replace", path=str(sample), old_str="def g():\n    x = 1",
                       new_str="def g():\n    x = 42")
    assert code == 0, out
    assert "     7\t    x = 42" in out
    assert "Review the changes" in out
    assert "x = 42" in sample.read_text() and sample.read_text().count("x = 1") == 1


def test_view_numbers_lines_like_cat_n(editor, sample):
    code, out = editor(command="view", path=str(sample))
    assert code == 0
    assert out.startswith(f"Here's the result of running `cat -n` on {sample}:\n")
    assert "     1\tdef f():\n     2\t    x = 1\n" in out


@pytest.mark.parametrize("view_range,expected", [
    ([2, 3], ["     2\t    x = 1", "     3\t    return x"]),
    ([8, -1], ["     8\t    return x", "     9\t"]),
])
def test_view_range_selects_exact_lines(editor, sample, view_range, expected):
    code, out = editor(command="view", path=str(sample), view_range=view_range)
    assert code == 0, out
    body = out.split("\n", 1)[1].rstrip("\n").split("\n")
    assert body == expected


@pytest.mark.parametrize("view_range,message", [
    ([0, 2], "Its first element `0` should be within the range of lines of the file: [1, 9]"),
    ([3, 50], "Its second element `50` should be smaller than the number of lines in the file: `9`"),
    ([5, 2], "Its second element `2` should be larger or equal than its first `5`"),
    ([1], "It should be a list of two integers"),
])
def test_bad_view_range_is_explained(editor, sample, view_range, message):
    code, out = editor(command="view", path=str(sample), view_range=view_range)
    assert code == 1
    assert message in out


def test_view_directory_lists_two_levels_without_hidden(editor, tmp_path):
    (tmp_path / "pkg" / "sub" / "deep").mkdir(parents=True)
    (tmp_path / "pkg" / "sub" / "deep" / "x.py").write_text("")
    (tmp_path / "pkg" / ".hidden").write_text("")
    code, out = editor(command="view", path=str(tmp_path / "pkg"))
    assert code == 0
    assert f"{tmp_path}/pkg/sub\n" in out + "\n"
    assert "deep/x.py" not in out and ".hidden" not in out


def test_insert_at_zero_and_at_end(editor, sample):
    assert editor(command="insert", path=str(sample), insert_line=0, new_str="import os")[0] == 0
    lines = sample.read_text().split("\n")
    assert lines[0] == "import os" and lines[1] == "def f():"
    n = len(sample.read_text().split("\n"))
    code, out = editor(command="insert", path=str(sample), insert_line=n, new_str="# end")
    assert code == 0, out
    assert sample.read_text().endswith("    return x\n# end\n")  # final newline kept last


def test_insert_past_the_end_is_refused(editor, sample):
    code, out = editor(command="insert", path=str(sample), insert_line=99, new_str="x")
    assert code == 1
    assert "It should be within the range of lines of the file: [0, 9]" in out


def test_undo_restores_each_edit_in_turn(editor, sample):
    original = sample.read_text()
    editor(command="str_replace", path=str(sample), old_str="def f", new_str="def f1")
    editor(command="str_replace", path=str(sample), old_str="def g", new_str="def g1")
    assert editor(command="undo_edit", path=str(sample))[0] == 0
    assert "def f1" in sample.read_text() and "def g1" not in sample.read_text()
    assert editor(command="undo_edit", path=str(sample))[0] == 0
    assert sample.read_text() == original
    code, out = editor(command="undo_edit", path=str(sample))
    assert code == 1 and f"No edit history found for {sample}." in out


def test_create_refuses_an_existing_file(editor, sample):
    before = sample.read_text()
    code, out = editor(command="create", path=str(sample), file_text="oops")
    assert code == 1
    assert "File already exists at" in out and "Cannot overwrite" in out
    assert sample.read_text() == before


def test_create_makes_parent_directories(editor, tmp_path):
    target = tmp_path / "new" / "pkg" / "a.py"
    code, out = editor(command="create", path=str(target), file_text="A = 1\n")
    assert code == 0 and out.strip() == f"File created successfully at: {target}"
    assert target.read_text() == "A = 1\n"


def test_missing_path_and_relative_path_are_explained(editor, tmp_path):
    code, out = editor(command="view", path=str(tmp_path / "nope.py"))
    assert code == 1 and "does not exist. Please provide a valid path." in out
    code, out = editor(command="view", path="mod.py")
    assert code == 1 and "is not an absolute path" in out and f"Maybe you meant {tmp_path}/mod.py?" in out


def test_unknown_command_and_missing_parameter(editor, sample):
    code, out = editor(command="delete", path=str(sample))
    assert code == 1 and "Unrecognized command delete" in out and "undo_edit" in out
    code, out = editor(command="str_replace", path=str(sample))
    assert code == 1 and "Parameter `old_str` is required for command: str_replace" in out


def test_directory_accepts_only_view(editor, tmp_path):
    code, out = editor(command="str_replace", path=str(tmp_path), old_str="a", new_str="b")
    assert code == 1 and "is a directory and only the `view` command" in out


def test_non_utf8_bytes_survive_an_edit(editor, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes(b"caf\xe9 = 1\nvalue = 2\n")
    code, out = editor(command="view", path=str(path))
    assert code == 0 and "caf\\udce9" in out  # shown escaped, not a crash
    code, out = editor(command="str_replace", path=str(path), old_str="value = 2", new_str="value = 3")
    assert code == 0, out
    assert path.read_bytes() == b"caf\xe9 = 1\nvalue = 3\n"


def test_long_file_view_is_clipped_with_a_note(editor, tmp_path):
    path = tmp_path / "big.py"
    path.write_text("".join(f"line_{i} = {i}\n" for i in range(5000)))
    code, out = editor(command="view", path=str(path))
    assert code == 0 and "<response clipped>" in out and len(out) < 17000


def test_command_line_form_matches_json_form(tmp_path, sample):
    done = subprocess.run([sys.executable, str(EDITOR_SCRIPT), "view", str(sample), "--view_range", "1", "2"],
                          capture_output=True, text=True, env={"SWE_SRL_EDITOR_STATE": str(tmp_path / "s")})
    assert done.returncode == 0
    assert done.stdout.endswith("     1\tdef f():\n     2\t    x = 1\n")
