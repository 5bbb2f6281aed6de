"""The SRL prompt, shared by step-wise training and agent rollouts.

A prompt is a chat: one system message (the output contract and the tools) and one user
message holding the issue and the last K (action, observation) rounds in a fixed textual
layout. Step targets (expert context) and live agents (their own history) build the same
prompt through :func:`build_messages`, so a policy trained on one sees the other unchanged.

The policy answers with a private monologue inside ``<think>...</think>`` followed by exactly
one action, in the canonical XML function-call syntax (or a fenced bash block for bash-only
scaffolds, ``syntax="bash_block"``). :func:`format_completion` writes that answer for SFT.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .actions import ActionSyntax, parse_action, render_bash_block, render_xml
from .errors import ActionParseError, ConfigError
from .schemas import Action, ContextRound, StepTarget

logger = logging.getLogger(__name__)

Message = dict[str, str]
# A round of history: a dataset ContextRound (or its dict), or (action, observation) from a
# live agent.
Round = ContextRound | Mapping[str, Any] | tuple[Action | str, str]

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
EMPTY_OBSERVATION = "(no output)"


@dataclass(frozen=True)
class ToolSpec:
    """One tool the policy may call: its name, what it does, and its parameters
    as ``(name, description)`` pairs."""

    name: str
    description: str
    parameters: tuple[tuple[str, str], ...] = ()


TOOLS: dict[str, ToolSpec] = {
    "bash": ToolSpec(
        "bash",
        "Run one bash command in the repository (cwd /testbed); you see its output.",
        (("command", "the command line to run"),),
    ),
    "str_replace_editor": ToolSpec(
        "str_replace_editor",
        "View, create and edit files.",
        (
            ("command", "view | create | str_replace | insert | undo_edit"),
            ("path", "absolute path of the file or directory"),
            ("file_text", "create: the whole file content"),
            ("old_str", "str_replace: exact text to replace (must occur once)"),
            ("new_str", "str_replace: the replacement; insert: the text to insert"),
            ("insert_line", "insert: the line number after which new_str goes"),
            ("view_range", "view: optional [start, end] line numbers"),
        ),
    ),
    "submit": ToolSpec("submit", "Submit the current state of the repository as your fix.", ()),
}
DEFAULT_TOOLS: tuple[str, ...] = ("bash", "str_replace_editor", "submit")

_XML_CONTRACT = """\
You are a software engineer fixing an issue in a repository. Work one step at a time.

Answer in exactly this form:
<think>
your private reasoning about what to do next
</think>
<function=TOOL_NAME>
<parameter=PARAM_NAME>value</parameter>
</function>

Write exactly one function call after </think> and nothing else. Tools:
{tools}"""

_BASH_CONTRACT = """\
You are a software engineer fixing an issue in a repository. Work one step at a time.

Answer in exactly this form:
<think>
your private reasoning about what to do next
</think>
```bash
one command
```

Write exactly one bash block after </think> and nothing else. The command runs in the
repository (cwd /testbed). When the fix is done, run:
echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && git add -A && git diff --cached"""


def _check_syntax(syntax: str) -> None:
    if syntax not in ("xml", "bash_block"):
        raise ConfigError(f"prompt syntax must be 'xml' or 'bash_block', got {syntax!r}")


def _describe_tool(spec: ToolSpec) -> str:
    lines = [f"- {spec.name}: {spec.description}"]
    lines += [f"    {name}: {text}" for name, text in spec.parameters]
    return "\n".join(lines)


def system_prompt(syntax: ActionSyntax = "xml", tools: Sequence[str] = DEFAULT_TOOLS) -> str:
    """The system message for ``syntax``; ``tools`` names entries of :data:`TOOLS`
    (ignored for ``bash_block``, whose only tool is bash)."""
    _check_syntax(syntax)
    if syntax == "bash_block":
        return _BASH_CONTRACT
    unknown = [name for name in tools if name not in TOOLS]
    if unknown:
        raise ConfigError(f"unknown tool(s) {unknown}; known: {sorted(TOOLS)}")
    return _XML_CONTRACT.format(tools="\n".join(_describe_tool(TOOLS[name]) for name in tools))


SYSTEM_PROMPT = system_prompt()


def render_action(action: Action | str, syntax: ActionSyntax = "xml") -> str:
    """An action (or action text in any syntax) as the policy is asked to write it.

    Text that does not parse as an action is shown unchanged: a history may hold a broken
    action the agent wrote, and the prompt must show what really happened."""
    if isinstance(action, str):
        try:
            action = parse_action(action)
        except ActionParseError:
            return action.strip()
    return render_bash_block(action) if syntax == "bash_block" else render_xml(action)


def _round_parts(item: Round) -> tuple[Action | str, str]:
    if isinstance(item, ContextRound):
        return item.action, item.observation
    if isinstance(item, Mapping):  # a ContextRound.to_dict() row
        return item["action"], item.get("observation", "")
    action, observation = item
    return action, observation


def format_user_message(problem_statement: str, rounds: Sequence[Round] = (),
                        syntax: ActionSyntax = "xml") -> str:
    """The user turn: the issue, then each earlier round (oldest first) as its action and
    the observation it produced. Observations are shown as given: callers truncate them."""
    parts = [f"<issue>\n{problem_statement.strip()}\n</issue>"]
    if rounds:
        parts.append(f"Your last {len(rounds)} step(s), oldest first:")
    for index, item in enumerate(rounds, start=1):
        action, observation = _round_parts(item)
        observation = observation.rstrip() or EMPTY_OBSERVATION
        parts.append(f"<step index={index}>\n<action>\n{render_action(action, syntax)}\n</action>\n"
                     f"<observation>\n{observation}\n</observation>\n</step>")
    parts.append("Think, then write your next action." if rounds
                 else "Think, then write your first action.")
    return "\n\n".join(parts)


def build_messages(problem_statement: str, rounds: Sequence[Round] = (), *,
                   syntax: ActionSyntax = "xml", tools: Sequence[str] = DEFAULT_TOOLS,
                   system: str | None = None) -> list[Message]:
    """The chat for one policy step: ``[system, user]``.

    ``rounds`` are the last K rounds, oldest first: :class:`ContextRound` records (from a
    step target), ``(Action | action text, observation)`` pairs (from a live agent), or their
    dict forms. ``system`` replaces the default system prompt for ``syntax``/``tools``."""
    _check_syntax(syntax)
    return [
        {"role": "system", "content": system if system is not None else system_prompt(syntax, tools)},
        {"role": "user", "content": format_user_message(problem_statement, rounds, syntax)},
    ]


def messages_for_target(step_target: StepTarget, syntax: ActionSyntax = "xml") -> list[Message]:
    """The chat a step target asks the policy to answer."""
    return build_messages(step_target.problem_statement, step_target.context, syntax=syntax)


def format_completion(thought: str, action_text: str) -> str:
    """The answer the policy should write: ``<think>\\nthought\\n</think>\\naction``."""
    return f"{THINK_OPEN}\n{thought.strip()}\n{THINK_CLOSE}\n{action_text.strip()}"


def _chatml(messages: Sequence[Mapping[str, Any]]) -> str:
    turns = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    return "".join(turns) + "<|im_start|>assistant\n"


def render_prompt(tokenizer: Any, messages: Sequence[Mapping[str, Any]]) -> str:
    """The prompt text for ``messages`` ending where the assistant's answer starts.

    Uses the tokenizer's chat template; a tokenizer without one (base models, tiny test
    tokenizers) or ``None`` gets ChatML, the layout of the Qwen family the project targets."""
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if not template:
        if tokenizer is not None:
            logger.debug("tokenizer has no chat template; rendering the prompt as ChatML")
        return _chatml(messages)
    return tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)


_ANSWER_PLACEHOLDER = "\x00swe-srl-answer\x00"


def observation_message(observation: str) -> str:
    """The user turn that hands an observation back in a whole-conversation episode."""
    return f"<observation>\n{observation.rstrip() or EMPTY_OBSERVATION}\n</observation>"


def turn_continuation(tokenizer: Any, user_content: str) -> str:
    """The text that follows an assistant answer in the rendered conversation when the next
    user turn holds ``user_content``: the answer's end marker, that user turn, and the opener of
    the next answer (with ChatML: ``<|im_end|>\\n<|im_start|>user\\n...<|im_start|>assistant\\n``).

    Taken from the tokenizer's own chat template around a placeholder answer, so a
    whole-conversation episode (``agent.context: conversation``) continues its token ids
    exactly as the template would render the conversation. A template that drops or rewrites
    earlier answers (some strip reasoning from history) cannot be continued: ConfigError."""
    template = getattr(tokenizer, "chat_template", None) if tokenizer is not None else None
    if not template:
        return f"<|im_end|>\n<|im_start|>user\n{user_content}<|im_end|>\n<|im_start|>assistant\n"
    messages = [{"role": "user", "content": "?"}, {"role": "assistant", "content": _ANSWER_PLACEHOLDER},
                {"role": "user", "content": user_content}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    at = text.find(_ANSWER_PLACEHOLDER)
    if at < 0:
        raise ConfigError("the tokenizer's chat template does not keep earlier answers verbatim: "
                          "agent.context=conversation cannot continue it (use agent.context=window)")
    return text[at + len(_ANSWER_PLACEHOLDER):]
