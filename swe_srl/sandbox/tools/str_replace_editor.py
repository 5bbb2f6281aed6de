#!/usr/bin/env python3
"""str_replace_editor: view, create and edit files (the editor tool of SWE-agent / OpenHands).

Shipped by swe-srl into sandboxes as /usr/local/bin/str_replace_editor; stdlib only and
Python 3.6+ (it runs under whatever python3 the task image has). Called either with its
arguments as base64 JSON (``--b64 B64`` or ``--json-file PATH``, how swe-srl's run_tool calls it:
nothing is shell-interpolated) or with a command line:

    str_replace_editor view /testbed/pkg/mod.py --view_range 10 40
    str_replace_editor str_replace /testbed/pkg/mod.py --old_str OLD --new_str NEW

Errors are printed on stdout (they are the agent's observation) with exit status 1.
Files are read and written as UTF-8 with surrogateescape: bytes that are not UTF-8 survive
an edit unchanged. Undo history lives outside the repository, in $SWE_SRL_EDITOR_STATE.
"""

import argparse
import base64
import hashlib
import json
import os
import subprocess
import sys

COMMANDS = ("view", "create", "str_replace", "insert", "undo_edit")
SNIPPET_LINES = 4
MAX_RESPONSE_LEN = 16000
CLIPPED_NOTE = (
    "<response clipped><NOTE>To save on context only part of this file has been shown to you. "
    "You should retry this tool after you have searched inside the file with `grep -n` in order "
    "to find the line numbers of what you are looking for.</NOTE>"
)
STATE_DIR = os.environ.get("SWE_SRL_EDITOR_STATE", "/run/swe-srl/editor")
# "FROM=TO": paths under FROM are edited under TO (swe-srl's local backend, whose repository
# copy is not at the /testbed the agent was told about).
PATH_MAP = os.environ.get("SWE_SRL_PATH_MAP", "")


def map_path(path):
    source, _, target = PATH_MAP.partition("=")
    if source and target and (path == source or path.startswith(source.rstrip("/") + "/")):
        return target + path[len(source):]
    return path


class ToolError(Exception):
    """A mistake in the call: reported to the agent, exit status 1."""


def maybe_truncate(text):
    if len(text) <= MAX_RESPONSE_LEN:
        return text
    return text[:MAX_RESPONSE_LEN] + CLIPPED_NOTE


def numbered(text, first_line=1):
    lines = text.split("\n")
    return "\n".join("{:6}\t{}".format(i + first_line, line) for i, line in enumerate(lines))


def cat_n(text, label, first_line=1):
    return "Here's the result of running `cat -n` on {}:\n{}\n".format(
        label, maybe_truncate(numbered(text, first_line)))


def read_text(path):
    with open(path, "rb") as fh:
        return fh.read().decode("utf-8", errors="surrogateescape")


def write_text(path, text):
    with open(path, "wb") as fh:
        fh.write(text.encode("utf-8", errors="surrogateescape"))


# ----------------------------------------------------------------------------- history


def history_dir(path):
    return os.path.join(STATE_DIR, hashlib.sha1(path.encode("utf-8", "surrogateescape")).hexdigest())


def push_history(path, text):
    folder = history_dir(path)
    os.makedirs(folder, exist_ok=True)
    count = len([n for n in os.listdir(folder) if n.endswith(".bak")])
    write_text(os.path.join(folder, "{:06d}.bak".format(count)), text)


def pop_history(path):
    folder = history_dir(path)
    names = sorted(n for n in os.listdir(folder) if n.endswith(".bak")) if os.path.isdir(folder) else []
    if not names:
        return None
    last = os.path.join(folder, names[-1])
    text = read_text(last)
    os.remove(last)
    return text


# ----------------------------------------------------------------------------- checks


def validate_path(command, path):
    if not os.path.isabs(path):
        suggestion = os.path.join(os.getcwd(), path)
        raise ToolError("The path {} is not an absolute path, it should start with `/`. "
                        "Maybe you meant {}?".format(path, suggestion))
    exists = os.path.exists(path)
    if not exists and command != "create":
        raise ToolError("The path {} does not exist. Please provide a valid path.".format(path))
    if exists and command == "create":
        raise ToolError("File already exists at: {}. Cannot overwrite files using command `create`.".format(path))
    if os.path.isdir(path) and command != "view":
        raise ToolError("The path {} is a directory and only the `view` command can be used on "
                        "directories".format(path))


def require(args, name, command):
    if args.get(name) is None:
        raise ToolError("Parameter `{}` is required for command: {}".format(name, command))
    return args[name]


def as_int(value, name):
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ToolError("Invalid `{}` parameter: {!r}. It should be an integer.".format(name, value))


# ----------------------------------------------------------------------------- commands


def view(path, view_range):
    if os.path.isdir(path):
        if view_range:
            raise ToolError("The `view_range` parameter is not allowed when `path` points to a directory.")
        found = subprocess.run(["find", path, "-maxdepth", "2", "-not", "-path", "*/.*"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        listing = found.stdout.decode("utf-8", "replace").strip("\n")
        if found.returncode != 0:
            raise ToolError(found.stderr.decode("utf-8", "replace").strip())
        return ("Here's the files and directories up to 2 levels deep in {}, excluding hidden items:\n"
                "{}\n".format(path, listing))
    text = read_text(path)
    if not view_range:
        return cat_n(text, path)
    if not isinstance(view_range, (list, tuple)) or len(view_range) != 2:
        raise ToolError("Invalid `view_range`. It should be a list of two integers.")
    try:
        first, last = int(view_range[0]), int(view_range[1])
    except (TypeError, ValueError):
        raise ToolError("Invalid `view_range`. It should be a list of two integers.")
    lines = text.split("\n")
    n_lines = len(lines)
    if first < 1 or first > n_lines:
        raise ToolError("Invalid `view_range`: {}. Its first element `{}` should be within the range of "
                        "lines of the file: {}".format([first, last], first, [1, n_lines]))
    if last != -1 and last > n_lines:
        raise ToolError("Invalid `view_range`: {}. Its second element `{}` should be smaller than the number "
                        "of lines in the file: `{}`".format([first, last], last, n_lines))
    if last != -1 and last < first:
        raise ToolError("Invalid `view_range`: {}. Its second element `{}` should be larger or equal than its "
                        "first `{}`".format([first, last], last, first))
    chosen = lines[first - 1:] if last == -1 else lines[first - 1:last]
    return cat_n("\n".join(chosen), path, first)


def create(path, file_text):
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    write_text(path, file_text)
    push_history(path, "")  # no earlier content: undoing a create leaves the file empty
    return "File created successfully at: {}".format(path)


def str_replace(path, old_str, new_str):
    text = read_text(path)
    if old_str == new_str:
        raise ToolError("No replacement was performed, `new_str` and `old_str` must be different.")
    count = text.count(old_str) if old_str else 0
    if count == 0:
        raise ToolError("No replacement was performed, old_str `{}` did not appear verbatim in {}.".format(old_str,
                path))
    if count > 1:
        lines = []
        start = text.find(old_str)
        while start != -1:
            lines.append(text.count("\n", 0, start) + 1)
            start = text.find(old_str, start + 1)
        raise ToolError("No replacement was performed. Multiple occurrences of old_str `{}` in lines {}. "
                        "Please ensure it is unique".format(old_str, lines))
    new_text = text.replace(old_str, new_str)
    write_text(path, new_text)
    push_history(path, text)
    changed_line = text.split(old_str)[0].count("\n")
    first = max(0, changed_line - SNIPPET_LINES)
    last = changed_line + SNIPPET_LINES + new_str.count("\n")
    snippet = "\n".join(new_text.split("\n")[first:last + 1])
    return ("The file {} has been edited. ".format(path)
            + cat_n(snippet, "a snippet of {}".format(path), first + 1)
            + "Review the changes and make sure they are as expected. Edit the file again if necessary.")


def insert(path, insert_line, new_str):
    text = read_text(path)
    lines = text.split("\n")
    n_lines = len(lines)
    if insert_line < 0 or insert_line > n_lines:
        raise ToolError("Invalid `insert_line` parameter: {}. It should be within the range of lines of the "
                        "file: {}".format(insert_line, [0, n_lines]))
    new_lines = new_str.split("\n")
    if text.endswith("\n") and insert_line == n_lines:
        # Past the last line of a file ending in a newline: keep that final newline last.
        result = lines[:-1] + new_lines + [""]
    else:
        result = lines[:insert_line] + new_lines + lines[insert_line:]
    new_text = "\n".join(result)
    write_text(path, new_text)
    push_history(path, text)
    first = max(0, insert_line - SNIPPET_LINES)
    snippet = "\n".join(result[first:insert_line + len(new_lines) + SNIPPET_LINES])
    return ("The file {} has been edited. ".format(path)
            + cat_n(snippet, "a snippet of the edited file", first + 1)
            + "Review the changes and make sure they are as expected (correct indentation, no duplicate "
              "lines, etc). Edit the file again if necessary.")


def undo_edit(path):
    previous = pop_history(path)
    if previous is None:
        raise ToolError("No edit history found for {}.".format(path))
    write_text(path, previous)
    return "Last edit to {} undone successfully. {}".format(path, cat_n(previous, path))


def run(args):
    command = args.get("command")
    if command not in COMMANDS:
        raise ToolError("Unrecognized command {}. The allowed commands for the str_replace_editor tool are: "
                        "{}".format(command, ", ".join(COMMANDS)))
    path = require(args, "path", command)
    if not isinstance(path, str) or not path:
        raise ToolError("Parameter `path` must be a non-empty string.")
    path = map_path(path)
    validate_path(command, path)
    if command == "view":
        return view(path, args.get("view_range"))
    if command == "create":
        return create(path, require(args, "file_text", command))
    if command == "str_replace":
        return str_replace(path, require(args, "old_str", command), args.get("new_str") or "")
    if command == "insert":
        line = as_int(require(args, "insert_line", command), "insert_line")
        return insert(path, line, require(args, "new_str", command))
    return undo_edit(path)


def parse_argv(argv):
    if len(argv) == 2 and argv[0] == "--b64":
        return json.loads(base64.b64decode(argv[1]).decode("utf-8", "surrogateescape"))
    if len(argv) == 2 and argv[0] == "--json-file":
        with open(argv[1], "rb") as fh:
            return json.loads(fh.read().decode("utf-8", "surrogateescape"))
    parser = argparse.ArgumentParser(prog="str_replace_editor")
    parser.add_argument("command")
    parser.add_argument("path")
    parser.add_argument("--file_text")
    parser.add_argument("--old_str")
    parser.add_argument("--new_str")
    parser.add_argument("--insert_line")
    parser.add_argument("--view_range", nargs=2)
    return vars(parser.parse_args(argv))


def main(argv):
    try:
        args = parse_argv(argv)
        if not isinstance(args, dict):
            raise ToolError("The arguments must be a JSON object.")
        out = run(args)
    except ToolError as exc:
        emit(str(exc))
        return 1
    except (OSError, ValueError) as exc:
        emit("str_replace_editor: {}".format(exc))
        return 1
    emit(out)
    return 0


def emit(text):
    if not text.endswith("\n"):
        text += "\n"
    sys.stdout.buffer.write(text.encode("utf-8", errors="backslashreplace"))
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
