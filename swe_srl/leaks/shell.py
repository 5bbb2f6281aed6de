"""The simple commands a bash script runs, as argv lists, for the leak rules to inspect.

A small bash lexer (quotes, escapes, comments, operators, here-documents, ``$(...)`` and
backtick substitutions) splits a script at ``;``, ``&&``, ``||``, ``|``, ``&``, newlines and
subshell parentheses, drops redirections, and unwraps what only launches another command:
``sudo``/``env``/``timeout``/``xargs``/... prefixes, ``bash -c SCRIPT``, ``eval``, a shell fed
a here-document, ``python -m pip``, and the shell commands a Python snippet starts
(``subprocess.run``, ``os.system``; IPython ``!cmd`` lines and ``%%bash`` cells). A URL a
Python snippet fetches (``urlopen``, ``requests.get``, ...) becomes a ``curl URL`` command, so
the fetch rules see one shape. The lexer never raises: an unbalanced quote runs to the end of
the text. Not seen through (documented limits): commands assembled at run time from
variables, encoded payloads, and scripts the agent wrote to a file and then ran.
"""

from __future__ import annotations

import ast
import re
import shlex
from dataclasses import dataclass, field

MAX_DEPTH = 6  # nesting of bash -c / eval / substitutions / python followed

_OPERATORS = sorted(("&&", "||", ";;", "|&", "<<<", "<<-", "<<", ">>", "&>>", "&>", ">&", "<&", ">|", "<>",
                     ";", "|", "&", "(", ")", "<", ">", "\n"), key=len, reverse=True)
_CONTROL = frozenset({"&&", "||", ";;", "|&", ";", "|", "&", "(", ")", "\n"})
_OPERATOR_START = frozenset(op[0] for op in _OPERATORS)
# Words that open or close a compound command: dropped so the command inside is seen.
_RESERVED = frozenset({"!", "{", "}", "then", "do", "else", "elif", "if", "while", "until", "fi",
                       "done", "esac", "time"})
_SKIP_WHOLE = frozenset({"for", "case", "select", "function", "[[", "[", "test"})
# Launchers: name -> options that take a separate value.
_WRAPPERS: dict[str, frozenset[str]] = {
    "sudo": frozenset({"-u", "-g", "-h", "-p", "-C", "-D", "-U", "-r", "-t"}),
    "env": frozenset({"-u", "-C", "-S", "--unset", "--chdir"}),
    "timeout": frozenset({"-s", "-k", "--signal", "--kill-after"}),
    "nice": frozenset({"-n", "--adjustment"}),
    "xargs": frozenset({"-I", "-n", "-P", "-L", "-d", "-E", "-s", "-a", "--max-args", "--max-procs",
                        "--delimiter", "--arg-file", "--replace"}),
    "watch": frozenset({"-n", "--interval"}),
    "stdbuf": frozenset({"-i", "-o", "-e"}),
    "exec": frozenset({"-a"}),
    "nohup": frozenset(), "command": frozenset(), "builtin": frozenset(), "unbuffer": frozenset(),
    "chronic": frozenset(), "time": frozenset(),
}
_SHELLS = frozenset({"bash", "sh", "zsh", "dash", "ksh"})
_PYTHON_RE = re.compile(r"(?:python|pypy|ipython)[\d.]*")
_ASSIGNMENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\+?=")
# Python callables that run a shell command / fetch a URL.
_PY_SHELL_CALLS = frozenset({"system", "popen", "getoutput", "getstatusoutput", "run", "call", "check_call",
                             "check_output", "Popen"})
_PY_FETCH_RE = re.compile(r"urlopen|urlretrieve|requests\.|httpx\.|urllib3|http\.client|wget\.download|aiohttp")
URL_RE = re.compile(r"""\b(?:https?|ftp)://[^\s'"<>()]+""")
"""A URL in free text (code, a browser action)."""
_IPY_SHELL_LINE = re.compile(r"^(\s*)(?:[A-Za-z_]\w*\s*=\s*)?!!?(.*)$")
_IPY_MAGIC_LINE = re.compile(r"^(\s*)%(\w+)\s*(.*)$")
_ORDINARY_RUN = re.compile(r"[^\s'\"\\$`#;&|()<>]+")  # characters with no meaning to the lexer


@dataclass(frozen=True)
class Command:
    """One simple command: its words after quote removal, and what it reads on stdin from a
    here-document or here-string (None when nothing)."""

    argv: tuple[str, ...]
    stdin: str | None = None

    @property
    def name(self) -> str:
        """The program's base name (``/usr/bin/git`` -> ``git``)."""
        return self.argv[0].rsplit("/", 1)[-1] if self.argv else ""

    @property
    def text(self) -> str:
        return shlex.join(self.argv)


@dataclass
class _Token:
    kind: str  # "word", "op" or "heredoc"
    value: str = ""
    nested: list[str] = field(default_factory=list)  # scripts of $(...) / `...` inside a word


# --------------------------------------------------------------------------- lexing


def _balanced(text: str, i: int) -> int:
    """Index just past the ``)`` that closes the ``(`` before ``i`` (quotes respected)."""
    depth = 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "'\"":
            end = text.find(ch, i + 1)
            i = len(text) if end < 0 else end + 1
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return len(text)


def _backtick_end(text: str, i: int) -> int:
    while i < len(text) and text[i] != "`":
        i += 2 if text[i] == "\\" else 1
    return min(i, len(text))


def _substitution(text: str, i: int, word: list[str], nested: list[str]) -> int | None:
    """Read a ``$(...)``, ``${...}`` or backtick at ``i`` into ``word``; None if none there."""
    if text.startswith("$(", i):
        end = _balanced(text, i + 2)
        nested.append(text[i + 2:end - 1])
        word.append(text[i:end])
        return end
    if text.startswith("${", i):
        end = text.find("}", i)
        end = len(text) if end < 0 else end + 1
        word.append(text[i:end])
        return end
    if text[i] == "`":
        end = _backtick_end(text, i + 1)
        nested.append(text[i + 1:end])
        word.append(text[i:end + 1])
        return end + 1
    return None


def _double_quoted(text: str, i: int, word: list[str], nested: list[str]) -> int:
    """Read the inside of a double-quoted string starting at ``i``; returns the index past it."""
    while i < len(text) and text[i] != '"':
        if text[i] == "\\" and i + 1 < len(text):
            word.append(text[i + 1] if text[i + 1] in '"\\$`\n' else text[i:i + 2])
            i += 2
            continue
        end = _substitution(text, i, word, nested) if text[i] in "$`" else None
        if end is None:
            word.append(text[i])
            i += 1
        else:
            i = end
    return i + 1


def _heredoc_bodies(text: str, i: int, pending: list[tuple[str, bool, _Token]]) -> int:
    """Fill the pending here-documents from the lines after the newline at ``i - 1``."""
    for delimiter, strip_tabs, token in pending:
        lines = []
        while i < len(text):
            end = text.find("\n", i)
            end = len(text) if end < 0 else end
            line = text[i:end]
            i = end + 1
            if (line.lstrip("\t") if strip_tabs else line) == delimiter:
                break
            lines.append(line)
        token.value = "\n".join(lines)
    pending.clear()
    return i


def _word_part(text: str, i: int, word: list[str], nested: list[str]) -> int:
    """Read the piece of a word at ``i`` (a quoted string, an escape, a substitution, a run of
    plain characters) into ``word``; returns the index past it."""
    ch = text[i]
    if ch == "'":
        end = text.find("'", i + 1)
        end = len(text) if end < 0 else end
        word.append(text[i + 1:end])
        return end + 1
    if ch == '"':
        return _double_quoted(text, i + 1, word, nested)
    if ch == "\\":
        word.append(text[i + 1:i + 2])
        return i + 2
    end = _substitution(text, i, word, nested) if ch in "$`" else None
    if end is None:
        run = _ORDINARY_RUN.match(text, i)
        end = run.end() if run else i + 1
        word.append(text[i:end])
    return end


def lex(text: str) -> list[_Token]:
    """Words (quotes removed) and operators of a bash script; here-document bodies become
    ``heredoc`` tokens where their ``<<`` stood."""
    tokens: list[_Token] = []
    pending: list[tuple[str, bool, _Token]] = []
    word: list[str] = []
    nested: list[str] = []
    started = False  # a word is in progress (even an empty quoted one)
    heredoc_next: _Token | None = None
    strip_tabs = False
    i = 0

    def end_word() -> None:
        nonlocal word, nested, started, heredoc_next
        if started:
            value = "".join(word)
            if heredoc_next is not None:
                pending.append((value, strip_tabs, heredoc_next))
                heredoc_next = None
            else:
                tokens.append(_Token("word", value, nested))
        word, nested, started = [], [], False

    while i < len(text):
        ch = text[i]
        if ch == "\\" and text.startswith("\\\n", i):
            i += 2
        elif ch in " \t\r":
            end_word()
            i += 1
        elif ch == "#" and not started:
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
        elif ch in _OPERATOR_START:
            op = next(o for o in _OPERATORS if text.startswith(o, i))
            if op[0] in "<>" and started and "".join(word).isdigit():
                word, nested, started = [], [], False  # an fd number (2>&1): not an argument
            end_word()
            i += len(op)
            if op in ("<<", "<<-"):
                heredoc_next, strip_tabs = _Token("heredoc"), op == "<<-"
                tokens.append(heredoc_next)
            else:
                tokens.append(_Token("op", op))
            if op == "\n" and pending:
                i = _heredoc_bodies(text, i, pending)
        else:
            started, i = True, _word_part(text, i, word, nested)
    end_word()
    if pending:
        _heredoc_bodies(text, len(text), pending)
    return tokens


# --------------------------------------------------------------------------- commands


def commands(script: str, depth: int = 0) -> list[Command]:
    """Every simple command ``script`` runs, in order (substitutions before the command that
    holds them), with launchers and interpreters unwrapped."""
    if depth > MAX_DEPTH or not script.strip():
        return []
    out: list[Command] = []
    words: list[str] = []
    subs: list[str] = []
    stdin: str | None = None
    tokens = lex(script)
    i = 0
    while i <= len(tokens):
        tok = tokens[i] if i < len(tokens) else _Token("op", "\n")
        if tok.kind == "op" and tok.value in _CONTROL:
            for sub in subs:
                out.extend(commands(sub, depth + 1))
            out.extend(_unwrap(words, stdin, depth))
            words, subs, stdin = [], [], None
        elif tok.kind == "op":  # a redirection: its target word is not an argument
            if tok.value == "<<<" and i + 1 < len(tokens):
                stdin = tokens[i + 1].value
            i += 1
        elif tok.kind == "heredoc":
            stdin = tok.value
        else:
            words.append(tok.value)
            subs.extend(tok.nested)
        i += 1
    return out


def _skip_options(argv: list[str], value_options: frozenset[str]) -> list[str]:
    i = 1
    while i < len(argv) and argv[i].startswith("-") and argv[i] != "-":
        if argv[i] == "--":
            return argv[i + 1:]
        i += 2 if argv[i] in value_options else 1
    return argv[i:]


def _unwrap(words: list[str], stdin: str | None, depth: int) -> list[Command]:
    argv = list(words)
    while argv and (argv[0] in _RESERVED or _ASSIGNMENT_RE.match(argv[0])):
        argv.pop(0)
    while argv:
        name = argv[0].rsplit("/", 1)[-1]
        if name not in _WRAPPERS:
            break
        argv = _skip_options(argv, _WRAPPERS[name])
        while name == "env" and argv and _ASSIGNMENT_RE.match(argv[0]):
            argv.pop(0)
        if name == "timeout" and argv:
            argv.pop(0)  # the duration
    if not argv or argv[0] in _SKIP_WHOLE:
        return []
    name = argv[0].rsplit("/", 1)[-1]
    if name in _SHELLS:
        return _shell(argv, stdin, depth)
    if name == "eval":
        return commands(" ".join(argv[1:]), depth + 1)
    if _PYTHON_RE.fullmatch(name):
        return _python_launch(argv, stdin, depth)
    return [Command(tuple(argv), stdin)]


def _shell(argv: list[str], stdin: str | None, depth: int) -> list[Command]:
    for k, arg in enumerate(argv[1:], 1):
        if arg.startswith("-") and not arg.startswith("--") and "c" in arg[1:]:
            return commands(argv[k + 1], depth + 1) if k + 1 < len(argv) else []
        if not arg.startswith("-"):
            return [Command(tuple(argv), stdin)]  # runs a script file: not visible here
    return commands(stdin or "", depth + 1)


def _python_launch(argv: list[str], stdin: str | None, depth: int) -> list[Command]:
    for k, arg in enumerate(argv[1:], 1):
        if arg == "-c":
            return python_commands(argv[k + 1], depth + 1) if k + 1 < len(argv) else []
        if arg == "-m":
            rest = argv[k + 1:]
            return _unwrap(rest, stdin, depth) if rest[:1] == ["pip"] else [Command(tuple(argv), stdin)]
        if arg == "-":
            break
        if not arg.startswith("-"):
            return [Command(tuple(argv), stdin)]
    return python_commands(stdin or "", depth + 1)


# --------------------------------------------------------------------------- python / ipython


def _call_name(func: ast.expr) -> str:
    return func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""


def python_commands(code: str, depth: int = 0) -> list[Command]:
    """Shell commands a Python snippet starts, and ``curl URL`` for the URLs it fetches."""
    if depth > MAX_DEPTH or not code.strip():
        return []
    out: list[Command] = []
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        tree = None
    if tree is not None:
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and node.args and _call_name(node.func) in _PY_SHELL_CALLS):
                continue
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                out.extend(commands(first.value, depth + 1))
            elif isinstance(first, (ast.List, ast.Tuple)) and first.elts and all(
                    isinstance(e, ast.Constant) and isinstance(e.value, str) for e in first.elts):
                out.extend(_unwrap([e.value for e in first.elts], None, depth + 1))  # type: ignore[attr-defined]
    if _PY_FETCH_RE.search(code):
        out.extend(Command(("curl", url)) for url in URL_RE.findall(code))
    return out


def ipython_commands(code: str, depth: int = 0) -> list[Command]:
    """Shell commands of an IPython cell: ``%%bash``/``%%sh`` cells, ``!cmd`` and ``x = !cmd``
    lines, ``%pip``/``%conda``/``%sx``/``%system`` magics, and those of its Python code."""
    lines = code.split("\n")
    head = lines[0].strip() if lines else ""
    if re.fullmatch(r"%%(?:bash|sh|script\s+(?:ba)?sh)", head):
        return commands("\n".join(lines[1:]), depth + 1)
    out: list[Command] = []
    python_lines = []
    for line in lines:
        shell = _IPY_SHELL_LINE.match(line)
        magic = _IPY_MAGIC_LINE.match(line)
        if shell:
            out.extend(commands(shell.group(2), depth + 1))
        elif magic and magic.group(2) in ("pip", "conda"):
            out.extend(commands(f"{magic.group(2)} {magic.group(3)}", depth + 1))
        elif magic and magic.group(2) in ("sx", "system"):
            out.extend(commands(magic.group(3), depth + 1))
        if shell or magic:
            line = (shell or magic).group(1) + "pass"  # type: ignore[union-attr]
        python_lines.append(line)
    return out + python_commands("\n".join(python_lines), depth + 1)
