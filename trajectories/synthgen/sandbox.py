"""The in-memory repository a synthetic expert works in: every observation is computed here.

Python runs for real (the repository's packages installed as in-memory modules); the shell and
editor outputs are those of the real tools on the same files: grep, ls, sed, git diff/status,
and swe-srl's own ``sandbox/tools/str_replace_editor.py`` (view, str_replace, insert).
tests/test_synthetic_data.py replays trajectories with the real tools to keep it so.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import io
import re
import sys
import traceback
import types

WORKDIR = "/testbed"
SNIPPET_LINES = 4  # as in swe_srl/sandbox/tools/str_replace_editor.py


@contextlib.contextmanager
def installed(files: dict):
    """The repository's packages importable (as in-memory modules) for the duration."""
    added = []
    try:
        packages = sorted(p.split("/")[0] for p in files if p.count("/") == 1 and p.endswith("/__init__.py"))
        for pkg in packages:
            if pkg in sys.modules:
                raise RuntimeError(f"package name {pkg!r} shadows an imported module")
            package = types.ModuleType(pkg)
            package.__path__, package.__package__ = [], pkg
            package.__file__ = f"{WORKDIR}/{pkg}/__init__.py"
            sys.modules[pkg] = package
            added.append(pkg)
            for path in sorted(files):
                if path.startswith(pkg + "/") and path.count("/") == 1 and path.endswith(".py") \
                        and not path.endswith("/__init__.py"):
                    name = path[:-3].replace("/", ".")
                    module = types.ModuleType(name)
                    module.__package__, module.__file__ = pkg, f"{WORKDIR}/{path}"
                    sys.modules[name] = module
                    added.append(name)
                    exec(compile(files[path], f"{WORKDIR}/{path}", "exec"), module.__dict__)
                    setattr(package, name.rsplit(".", 1)[1], module)
            exec(compile(files[f"{pkg}/__init__.py"], package.__file__, "exec"), package.__dict__)
        yield
    finally:
        for name in added:
            sys.modules.pop(name, None)


def _exception_line(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def evaluate(files: dict, header: str, expr: str):
    """("value", result) or ("error", "KeyError: 'x'") of one expression."""
    with installed(files):
        namespace: dict = {}
        exec(header, namespace)
        try:
            return "value", eval(expr, namespace)
        except Exception as exc:
            return "error", _exception_line(exc)


def _traceback(exc: BaseException, sources: dict) -> str:
    lines = ["Traceback (most recent call last):\n"]
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename != "<string>" and not frame.filename.startswith(WORKDIR + "/"):
            continue  # this generator's own frames
        if frame.name in ("<listcomp>", "<dictcomp>", "<setcomp>"):  # inlined since Python 3.12
            raise AssertionError("a bug kind raises inside a comprehension: the traceback depends on the Python")
        lines.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.name}\n')
        source = sources.get(frame.filename)
        if source is not None:
            lines.append("    " + source.split("\n")[frame.lineno - 1].strip() + "\n")
    return "".join(lines) + _exception_line(exc) + "\n"


def run_script(files: dict, source: str, filename: str):
    """Output (stdout and stderr merged) and exit code of ``python FILE`` (or ``python -c``,
    filename ``<string>``). Python flushes stdout before it prints a traceback."""
    out = io.StringIO()
    error, code = "", 0
    with installed(files), contextlib.redirect_stdout(out):
        try:
            exec(compile(source, filename, "exec"), {"__name__": "__main__"})
        except Exception as exc:
            sources = {f"{WORKDIR}/{p}": t for p, t in files.items()}
            if filename != "<string>":
                sources[filename] = source
            error, code = _traceback(exc, sources), 1
    return out.getvalue() + error, code


def run_tests(files: dict, paths) -> list:
    """(test file, test name, passed) for every test function, in pytest's collection order."""
    results = []
    with installed(files):
        for path in paths:
            namespace: dict = {"__name__": path[:-3].replace("/", ".")}
            exec(compile(files[path], f"{WORKDIR}/{path}", "exec"), namespace)
            for name, func in list(namespace.items()):
                if name.startswith("test_") and callable(func):
                    try:
                        func()
                        results.append((path, name, True))
                    except AssertionError:
                        results.append((path, name, False))
    return results


def blob_id(text: str) -> str:
    data = text.encode("utf-8")
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()[:7]


def _git_funcname(lines: list, before: int) -> str:
    """git's default hunk-header context: the last line before the hunk that starts with a
    letter, '_' or '$'."""
    for line in reversed(lines[:before]):
        if line[:1].isalpha() or line[:1] in ("_", "$"):
            return " " + line.rstrip()
    return ""


def git_diff(original: dict, files: dict) -> str:
    out = []
    for path in sorted(p for p in original if p in files and original[p] != files[p]):
        a, b = original[path].split("\n")[:-1], files[path].split("\n")[:-1]
        out += [f"diff --git a/{path} b/{path}", f"index {blob_id(original[path])}..{blob_id(files[path])} 100644",
                f"--- a/{path}", f"+++ b/{path}"]
        for group in difflib.SequenceMatcher(None, a, b, autojunk=False).get_grouped_opcodes(3):
            i1, i2, j1, j2 = group[0][1], group[-1][2], group[0][3], group[-1][4]
            out.append(f"@@ -{_range(i1, i2)} +{_range(j1, j2)} @@{_git_funcname(a, i1)}")
            for tag, a1, a2, b1, b2 in group:
                if tag == "equal":
                    out += [" " + line for line in a[a1:a2]]
                    continue
                out += ["-" + line for line in a[a1:a2]]
                out += ["+" + line for line in b[b1:b2]]
    return "\n".join(out) + "\n" if out else ""


def _range(start: int, stop: int) -> str:
    length = stop - start
    if length == 1:
        return str(start + 1)
    return f"{start + 1 if length else start},{length}"


def git_status_short(original: dict, files: dict) -> str:
    modified = [f" M {p}\n" for p in sorted(original) if p in files and files[p] != original[p]]
    deleted = [f" D {p}\n" for p in sorted(original) if p not in files]
    untracked = [f"?? {p}\n" for p in sorted(files) if p not in original]
    return "".join(sorted(modified + deleted) + untracked)


def numbered(text: str, first: int = 1) -> str:
    return "\n".join(f"{i + first:6}\t{line}" for i, line in enumerate(text.split("\n")))


def cat_n(text: str, label: str, first: int = 1) -> str:
    return f"Here's the result of running `cat -n` on {label}:\n{numbered(text, first)}\n"


def editor_str_replace(files: dict, path: str, old: str, new: str) -> str:
    text = files[path]
    new_text = text.replace(old, new)
    files[path] = new_text
    changed = text.split(old)[0].count("\n")
    first = max(0, changed - SNIPPET_LINES)
    last = changed + SNIPPET_LINES + new.count("\n")
    snippet = "\n".join(new_text.split("\n")[first:last + 1])
    return (f"The file {WORKDIR}/{path} has been edited. " + cat_n(snippet, f"a snippet of {WORKDIR}/{path}", first + 1)
            + "Review the changes and make sure they are as expected. Edit the file again if necessary.\n")


def editor_insert(files: dict, path: str, insert_line: int, new: str) -> str:
    text = files[path]
    lines = text.split("\n")
    new_lines = new.split("\n")
    if text.endswith("\n") and insert_line == len(lines):
        result = lines[:-1] + new_lines + [""]
    else:
        result = lines[:insert_line] + new_lines + lines[insert_line:]
    files[path] = "\n".join(result)
    first = max(0, insert_line - SNIPPET_LINES)
    snippet = "\n".join(result[first:insert_line + len(new_lines) + SNIPPET_LINES])
    return (f"The file {WORKDIR}/{path} has been edited. " + cat_n(snippet, "a snippet of the edited file", first + 1)
            + "Review the changes and make sure they are as expected (correct indentation, no duplicate "
              "lines, etc). Edit the file again if necessary.\n")


def grep(files: dict, pattern: str, roots, *, py_only: bool = False) -> str:
    """``grep -rn PATTERN ROOTS`` (a fixed-string pattern); a single file root drops the name."""
    out = []
    for root in roots:
        if root in files:
            out += [f"{i}:{line}" for i, line in enumerate(files[root].split("\n"), 1) if pattern in line]
            continue
        prefix = "" if root == "." else root.rstrip("/") + "/"
        for path in sorted(files):
            if not path.startswith(prefix) or (py_only and not path.endswith(".py")):
                continue
            shown = "./" + path if root == "." else path
            out += [f"{shown}:{i}:{line}" for i, line in enumerate(files[path].split("\n"), 1) if pattern in line]
    return "".join(line + "\n" for line in out)


def _visible(files: dict) -> list:
    return [p for p in files if not any(part.startswith(".") for part in p.split("/"))]


def ls(files: dict, folder: str = "") -> str:
    prefix = folder + "/" if folder else ""
    return "".join(sorted({p[len(prefix):].split("/")[0] + "\n" for p in _visible(files) if p.startswith(prefix)}))


def tree_view(files: dict) -> str:
    entries, visible = [WORKDIR], sorted(_visible(files))
    for top in sorted({p.split("/")[0] for p in visible}):
        entries.append(f"{WORKDIR}/{top}")
        entries += [f"{WORKDIR}/{p}" for p in visible if p.startswith(top + "/") and p.count("/") == 1]
    return ("Here's the files and directories up to 2 levels deep in /testbed, excluding hidden items:\n"
            + "\n".join(entries) + "\n")


def sed_print(text: str, first: int, last: int) -> str:
    """``sed -n 'FIRST,LASTp'``: the lines in that range that the file has."""
    return "".join(line + "\n" for line in text.split("\n")[:-1][first - 1:last])


def _tokens(line: str) -> list:
    return re.findall(r"\w+|\s+|[^\w\s]", line)


def sed_edit(old_line: str, new_line: str):
    """The (old, new) fragment a person would give ``sed s///`` to turn one line into the other."""
    a, b = _tokens(old_line), _tokens(new_line)
    pre = 0
    while pre < min(len(a), len(b)) and a[pre] == b[pre]:
        pre += 1
    suf = 0
    while suf < min(len(a), len(b)) - pre and a[-1 - suf] == b[-1 - suf]:
        suf += 1
    while True:
        frag_a, frag_b = "".join(a[pre:len(a) - suf]), "".join(b[pre:len(b) - suf])
        if (len(frag_a.strip()) >= 4 and old_line.count(frag_a) == 1) or (pre == 0 and suf == 0):
            return frag_a, frag_b
        pre, suf = max(pre - 1, 0), max(suf - 1, 0)


def sed_pattern(text: str) -> str:
    return "".join("\\" + c if c in "\\.*[^$/" else c for c in text)


def sed_replacement(text: str) -> str:
    return "".join("\\" + c if c in "\\&/" else c for c in text)
