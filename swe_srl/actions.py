"""Parse every action syntax agents use into one :class:`Action`, and render it back.

Syntaxes read:
  * XML function calls in text (SWE-agent 1.x "xml", SWE-smith, the SRL paper's data, and
    swe-srl's canonical syntax): ``<function=NAME>\\n<parameter=KEY>VALUE</parameter>\\n</function>``
  * fenced bash blocks (mini-swe-agent 1.x, nebius): the command inside becomes a command string
  * command strings (SWE-agent ACI): ``open``, ``goto``, ``edit 1:3 ... end_of_edit``,
    ``edit 'search' 'replace'``, ``insert``, ``create``, ``search_dir``, ``find_file``,
    ``str_replace_editor view /path --view_range 1 20``, ``submit``; anything else is ``bash``
  * OpenAI tool calls (name + arguments as an object or a JSON string)
  * OpenHands action events (run / read / edit / run_ipython / finish)

Rendering: :func:`render_xml` (canonical) and :func:`render_command` / :func:`render_bash_block`
(for bash-only scaffolds). ``parse_xml(render_xml(a)) == a`` up to ``raw``.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from .errors import ActionParseError
from .schemas import Action

Syntax = Literal["auto", "xml", "bash_block", "command"]
# The syntaxes a policy writes its action in and step targets are rendered in (canonical XML
# function calls, or one fenced bash block for bash-only scaffolds).
ActionSyntax = Literal["xml", "bash_block"]

# Tool names other scaffolds use for the same thing.
TOOL_ALIASES = {
    "execute_bash": "bash",
    "cmd_run": "bash",
    "run": "bash",
    "shell": "bash",
    "finish": "submit",
    "str_replace_based_edit_tool": "str_replace_editor",
    "edit_file": "str_replace_editor",
}
EDITOR_COMMANDS = ("view", "create", "str_replace", "insert", "undo_edit")
# Argument order used when rendering (unknown keys follow in their own order).
ARG_ORDER = {
    "str_replace_editor": ("command", "path", "file_text", "old_str", "new_str", "insert_line", "view_range"),
    "edit": ("start_line", "end_line", "replacement_text", "search", "replace", "replace-all"),
}
INT_ARGS = frozenset({"insert_line", "start_line", "end_line", "line_number", "line"})
LIST_ARGS = frozenset({"view_range"})

_FUNCTION_RE = re.compile(r"<function=([\w.\-]+)>(.*?)</function>", re.DOTALL)
_FUNCTION_OPEN_RE = re.compile(r"<function=([\w.\-]+)>")
_PARAM_RE = re.compile(r"<parameter=([\w.\-]+)>(.*?)</parameter>", re.DOTALL)
_FENCE_RE = re.compile(r"```([\w+\-]*)[ \t]*\n(.*?)\n?```", re.DOTALL)


def normalise_tool(name: str) -> str:
    """Map scaffold-specific tool names onto swe-srl's (``execute_bash`` -> ``bash``)."""
    return TOOL_ALIASES.get(name, name)


def _coerce(key: str, value: Any) -> Any:
    """Argument values are str, int or list[int]; numbers written as text become ints."""
    if key in INT_ARGS and isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    if key in LIST_ARGS:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                value = [v for v in re.split(r"[\s,\[\]]+", value) if v]
        if isinstance(value, (list, tuple)):
            try:
                return [int(v) for v in value]
            except (TypeError, ValueError):
                return list(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def make_action(tool: str, arguments: Mapping[str, Any] | None = None, raw: str = "") -> Action:
    """Build an Action with a normalised tool name and coerced, None-free arguments."""
    tool = normalise_tool(tool.strip())
    args = {k: _coerce(k, v) for k, v in (arguments or {}).items() if v is not None}
    if tool == "bash" and "cmd" in args and "command" not in args:
        args["command"] = args.pop("cmd")
    return Action(tool=tool, arguments=args, raw=raw)


def missing_arguments(action: Action) -> list[str]:
    """The arguments ``action`` needs to do anything and lacks (empty = complete): a bash call
    needs a non-blank command; an editor call a known command, a path, and that command's
    inputs. Other tools are not checked. A policy otherwise learns that an empty, harmless
    ``<function=bash></function>`` is a well-formed action that never scores -1."""
    args = action.arguments

    def blank(key: str) -> bool:
        return key not in args or (isinstance(args[key], str) and not args[key].strip())

    if action.tool == "bash":
        return ["command"] if blank("command") else []
    if action.tool == "str_replace_editor":
        if args.get("command") not in EDITOR_COMMANDS:
            return ["command"]
        need = {"create": ("path", "file_text"), "str_replace": ("path", "old_str"),
                "insert": ("path", "insert_line", "new_str")}.get(args["command"], ("path",))
        return [k for k in need if (k not in args if k in ("file_text", "new_str") else blank(k))]
    return []


# --------------------------------------------------------------------------- XML calls


def _param_value(text: str) -> str:
    # Writers put multi-line values on their own lines; strip exactly that wrapping.
    if len(text) >= 2 and text.startswith("\n") and text.endswith("\n"):
        return text[1:-1]
    return text


def find_xml_calls(text: str) -> list[Action]:
    """All complete ``<function=...>`` calls in ``text``, in order."""
    actions = []
    for match in _FUNCTION_RE.finditer(text):
        args = {k: _param_value(v) for k, v in _PARAM_RE.findall(match.group(2))}
        actions.append(make_action(match.group(1), args, raw=match.group(0)))
    return actions


def parse_xml(text: str) -> Action:
    """Exactly one XML function call, else :class:`ActionParseError`."""
    calls = find_xml_calls(text)
    opened = len(_FUNCTION_OPEN_RE.findall(text))
    if opened > len(calls):
        raise ActionParseError("unterminated <function=...> call (no </function>)")
    if not calls:
        raise ActionParseError("no <function=...> call found")
    if len(calls) > 1:
        raise ActionParseError(f"{len(calls)} function calls found, expected exactly one")
    return calls[0]


def _render_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return json.dumps(list(value))
    text = str(value)
    if len(text) >= 2 and text.startswith("\n") and text.endswith("\n"):
        return "\n" + text + "\n"  # so that _param_value's unwrapping restores it
    return text


def ordered_arguments(action: Action) -> list[tuple[str, Any]]:
    order = ARG_ORDER.get(action.tool, ())
    known = [(k, action.arguments[k]) for k in order if k in action.arguments]
    rest = [(k, v) for k, v in action.arguments.items() if k not in order]
    return known + rest


def render_xml(action: Action) -> str:
    """Canonical text of an action: SWE-agent's XML function-call syntax."""
    lines = [f"<function={action.tool}>"]
    for key, value in ordered_arguments(action):
        lines.append(f"<parameter={key}>{_render_value(value)}</parameter>")
    lines.append("</function>")
    return "\n".join(lines)


canonical = render_xml


# --------------------------------------------------------------------------- fenced blocks


def find_fenced_blocks(text: str, languages: Iterable[str] | None = None) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced code block, optionally only the given languages."""
    wanted = None if languages is None else {lang.lower() for lang in languages}
    return [
        (lang.lower(), body)
        for lang, body in _FENCE_RE.findall(text)
        if wanted is None or lang.lower() in wanted
    ]


def parse_bash_block(text: str, *, which: Literal["only", "last"] = "only") -> Action:
    """The action inside a fenced bash block (mini-swe-agent: exactly one; SWE-agent 0.x
    chat rows: the last fenced block of any language, an ACI command)."""
    if which == "only":
        blocks = find_fenced_blocks(text, ("bash", "sh", "shell"))
        if len(blocks) != 1:
            raise ActionParseError(f"expected exactly one bash block, found {len(blocks)}")
        return make_action("bash", {"command": blocks[0][1].strip("\n")}, raw=blocks[0][1])
    blocks = find_fenced_blocks(text)
    if not blocks:
        raise ActionParseError("no fenced code block found")
    return parse_command(blocks[-1][1])


def render_bash_block(action: Action) -> str:
    """The action as a mini-swe-agent style fenced bash block."""
    return f"```bash\n{render_command(action)}\n```"


# --------------------------------------------------------------------------- command strings

# SWE-agent ACI commands: name -> positional argument names (optional ones last).
ACI_SIGNATURES: dict[str, tuple[str, ...]] = {
    "open": ("path", "line_number"),
    "goto": ("line_number",),
    "scroll_up": (),
    "scroll_down": (),
    "create": ("filename",),
    "search_dir": ("search_term", "dir"),
    "search_file": ("search_term", "file"),
    "find_file": ("file_name", "dir"),
    "insert": ("text", "line"),
    "submit": (),
}
_EDIT_RANGE_RE = re.compile(r"\Aedit\s+(\d+)\s*:\s*(\d+)\s*\n(.*?)\n?end_of_edit\s*\Z", re.DOTALL)


def _split(rest: str) -> list[str]:
    try:
        return shlex.split(rest, posix=True)
    except ValueError as exc:
        raise ActionParseError(f"unbalanced quotes in command: {exc}") from exc


def _parse_editor_cli(rest: str, raw: str) -> Action:
    tokens = _split(rest)
    if not tokens or tokens[0] not in EDITOR_COMMANDS:
        raise ActionParseError(f"str_replace_editor needs one of {EDITOR_COMMANDS}")
    args: dict[str, Any] = {"command": tokens[0]}
    positional = []
    i = 1
    while i < len(tokens):
        tok = tokens[i]
        if tok.startswith("--"):
            key = tok[2:]
            values = []
            while i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
                values.append(tokens[i + 1])
                i += 1
            if key in LIST_ARGS:
                args[key] = values
            else:
                args[key] = " ".join(values) if len(values) != 1 else values[0]
        else:
            positional.append(tok)
        i += 1
    if positional:
        args["path"] = positional[0]
    return make_action("str_replace_editor", args, raw=raw)


def parse_command(command: str) -> Action:
    """A command string as SWE-agent executes it: an ACI command or plain bash."""
    raw = command
    text = command.strip()
    if not text:
        raise ActionParseError("empty command")
    first, _, rest = text.partition(" ")
    first = first.split("\n", 1)[0]
    if first == "edit":
        match = _EDIT_RANGE_RE.match(text)
        if match:
            args = {"start_line": match.group(1), "end_line": match.group(2),
                    "replacement_text": match.group(3)}
            return make_action("edit", args, raw=raw)
        tokens = _split(text[len("edit"):])
        if 1 <= len(tokens) <= 3:
            args = dict(zip(("search", "replace", "replace-all"), tokens))
            return make_action("edit", args, raw=raw)
        raise ActionParseError("edit needs 'START:END ... end_of_edit' or 'SEARCH' 'REPLACE'")
    if first == "str_replace_editor":
        return _parse_editor_cli(rest, raw)
    if first in ACI_SIGNATURES and "\n" not in text and not re.search(r"[|;&><`$]", rest):
        tokens = _split(rest)
        names = ACI_SIGNATURES[first]
        if len(tokens) <= len(names):
            return make_action(first, dict(zip(names, tokens)), raw=raw)
    return make_action("bash", {"command": text}, raw=raw)


def _quote(value: Any) -> str:
    return shlex.quote(str(value))


def render_command(action: Action) -> str:
    """The action as the command string a bash-only scaffold runs."""
    args = action.arguments
    if action.tool == "bash":
        return str(args.get("command", ""))
    if action.tool == "submit" and not args:
        return "submit"
    if action.tool == "edit" and "start_line" in args:
        return (f"edit {args['start_line']}:{args.get('end_line', args['start_line'])}\n"
                f"{args.get('replacement_text', '')}\nend_of_edit")
    if action.tool == "str_replace_editor":
        parts = ["str_replace_editor", str(args.get("command", "")), _quote(args.get("path", ""))]
        for key, value in ordered_arguments(action):
            if key in ("command", "path"):
                continue
            if isinstance(value, (list, tuple)):
                parts.append(f"--{key} " + " ".join(_quote(v) for v in value))
            else:
                parts.append(f"--{key} {_quote(value)}")
        return " ".join(parts)
    return " ".join([action.tool, *(_quote(v) for _, v in ordered_arguments(action))])


# --------------------------------------------------------------------------- structured calls


def from_tool_call(name: str, arguments: str | Mapping[str, Any] | None, raw: str = "") -> Action:
    """An OpenAI-style tool call; ``arguments`` may be a JSON string or an object."""
    if isinstance(arguments, str):
        stripped = arguments.strip()
        if not stripped:
            arguments = {}
        else:
            try:
                arguments = json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise ActionParseError(f"tool call {name!r}: arguments are not valid JSON ({exc.msg})") from exc
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, Mapping):
        raise ActionParseError(f"tool call {name!r}: arguments must be an object")
    if not name:
        raise ActionParseError("tool call without a function name")
    args = dict(arguments)
    tool = normalise_tool(name)
    if tool == "submit":
        args = {}  # finish(message=...) carries prose, not an environment argument
    if tool == "str_replace_editor" and args.get("command") not in EDITOR_COMMANDS and "old_str" in args:
        args.setdefault("command", "str_replace")
    args.pop("is_input", None)
    args.pop("security_risk", None)
    return make_action(tool, args, raw=raw or json.dumps({"name": name, "arguments": arguments}))


def from_openhands_event(event: Mapping[str, Any]) -> Action | None:
    """The Action of an OpenHands action event; None for events that are not tool calls
    (think, message, recall, system, ...)."""
    kind = event.get("action")
    args = event.get("args") or {}
    if kind == "run":
        return make_action("bash", {"command": args.get("command", "")})
    if kind == "run_ipython":
        return make_action("ipython", {"code": args.get("code", "")})
    if kind == "read":
        rng = args.get("view_range")
        return make_action("str_replace_editor", {"command": "view", "path": args.get("path", ""),
                                                  "view_range": rng or None})
    if kind == "edit":
        command = args.get("command") or ""
        if command in EDITOR_COMMANDS:
            keep = ("command", "path", "file_text", "old_str", "new_str", "insert_line")
            return make_action("str_replace_editor", {k: args.get(k) for k in keep if args.get(k) not in (None, "")}
                               | {"command": command, "path": args.get("path", "")})
        # LLM-based whole-file edit (OpenHands "edit" with content): keep it as its own tool.
        return make_action("llm_edit", {"path": args.get("path", ""), "content": args.get("content", "")})
    if kind == "finish":
        return make_action("submit")
    if kind == "browse_interactive" or kind == "browse":
        return make_action("browser", {k: v for k, v in args.items() if isinstance(v, (str, int))})
    return None


# --------------------------------------------------------------------------- any syntax


def find_actions(text: str) -> list[Action]:
    """Every action in a model completion: XML calls if any, else fenced bash blocks."""
    calls = find_xml_calls(text)
    if calls:
        return calls
    return [make_action("bash", {"command": body.strip("\n")}, raw=body)
            for _, body in find_fenced_blocks(text, ("bash", "sh", "shell"))]


def parse_action(text: str, syntax: Syntax = "auto") -> Action:
    """Exactly one action from ``text`` in the given syntax (``auto``: XML if the text has a
    ``<function=`` tag, a bash block if it has a fence, else a command string)."""
    if syntax == "xml" or (syntax == "auto" and "<function=" in text):
        return parse_xml(text)
    if syntax == "bash_block" or (syntax == "auto" and "```" in text):
        return parse_bash_block(text)
    return parse_command(text)


# Markers mini-swe-agent's final command echoes before printing the diff it submits.
SUBMIT_MARKERS = ("COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT", "MINI_SWE_AGENT_FINAL_OUTPUT")


def is_submit(action: Action) -> bool:
    """True for the action that ends an episode: ``submit``/``finish`` or mini-swe-agent's
    ``echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT`` command."""
    if action.is_submit:
        return True
    if action.tool == "bash":
        command = str(action.arguments.get("command", ""))
        return any(marker in command for marker in SUBMIT_MARKERS)
    return False
