"""The SRL prompt: layout, syntaxes, completions and chat-template rendering."""

from __future__ import annotations

import dataclasses
import os

import pytest

from swe_srl.actions import make_action, parse_xml, render_xml
from swe_srl.errors import ConfigError
from swe_srl.prompts import (
    SYSTEM_PROMPT,
    build_messages,
    format_completion,
    messages_for_target,
    render_action,
    render_prompt,
    system_prompt,
)
from swe_srl.rewards.similarity import parse_completion, srl_reward
from swe_srl.schemas import ContextRound, StepTarget

os.environ.setdefault("HF_HUB_OFFLINE", "1")

LS = make_action("bash", {"command": "ls src/"})
VIEW = make_action("str_replace_editor", {"command": "view", "path": "/testbed/src/app.py"})
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def make_target(context=()):
    return StepTarget(id="t-2", trajectory_id="t", task_id="org__repo-1", step_index=2, num_steps=5,
                      problem_statement="  Parsing fails on empty lines.  ", context=tuple(context),
                      target=render_xml(VIEW), target_tool="str_replace_editor",
                      expert_thought="Open the parser.")


def test_system_prompt_names_the_contract_and_tools():
    for text in ("<think>", "</think>", "<function=", "<parameter=", "exactly one"):
        assert text in SYSTEM_PROMPT
    for tool in ("bash", "str_replace_editor", "submit", "old_str", "view_range", "insert_line"):
        assert tool in SYSTEM_PROMPT
    only_bash = system_prompt("xml", tools=["bash", "submit"])
    assert "str_replace_editor" not in only_bash
    assert "```bash" in system_prompt("bash_block") and "<function=" not in system_prompt("bash_block")
    with pytest.raises(ConfigError, match="unknown tool"):
        system_prompt("xml", tools=["browser"])
    with pytest.raises(ConfigError, match="syntax"):
        build_messages("x", syntax="json")  # type: ignore[arg-type]


def test_user_turn_layout_is_stable_and_oldest_first():
    rounds = [ContextRound(action=render_xml(LS), observation="app.py\nparser.py\n"),
              ContextRound(action=render_xml(VIEW), observation="")]
    messages = messages_for_target(make_target(rounds))
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert user.startswith("<issue>\nParsing fails on empty lines.\n</issue>")
    assert user.index("<step index=1>") < user.index("<step index=2>")
    assert "<action>\n" + render_xml(LS) + "\n</action>" in user
    assert "<observation>\napp.py\nparser.py\n</observation>" in user
    assert "<observation>\n(no output)\n</observation>" in user
    assert user.endswith("write your next action.")
    # The same history from a live agent (Action objects, or dicts) gives the same prompt.
    assert build_messages(" Parsing fails on empty lines.", [(LS, "app.py\nparser.py\n"), (VIEW, "")]) == messages
    assert build_messages("Parsing fails on empty lines.", [r.to_dict() for r in rounds]) == messages


def test_first_step_has_no_history():
    user = build_messages("Bug.", [])[1]["content"]
    assert "<step" not in user and user.endswith("write your first action.")


def test_bash_block_syntax_renders_history_as_fences():
    user = build_messages("Bug.", [(render_xml(LS), "ok")], syntax="bash_block")[1]["content"]
    assert "```bash\nls src/\n```" in user and "<function=" not in user


def test_unparsable_history_action_is_shown_as_written():
    user = build_messages("Bug.", [("<function=bash>\n<parameter=command>ls", "error")])[1]["content"]
    assert "<action>\n<function=bash>\n<parameter=command>ls\n</action>" in user


def test_format_completion_round_trips_through_the_reward():
    completion = format_completion("  Open the parser.\n", render_xml(VIEW))
    assert completion == "<think>\nOpen the parser.\n</think>\n" + render_xml(VIEW)
    parsed = parse_completion(completion)
    assert parsed is not None and parsed.thought == "Open the parser." and parsed.action == parse_xml(render_xml(VIEW))
    from swe_srl.config import SFTConfig
    from swe_srl.rl.sft import sft_completion

    target = make_target()
    label = sft_completion(target, SFTConfig(target="thought_action"))  # the SFT label: thought + action
    assert label == completion
    assert srl_reward(label, target.target) == 1.0
    bash_target = dataclasses.replace(make_target(), target=render_xml(LS), target_tool="bash")
    bash_answer = format_completion(bash_target.expert_thought, render_action(bash_target.target, "bash_block"))
    assert bash_answer.endswith("</think>\n```bash\nls src/\n```")
    assert srl_reward(bash_answer, bash_target.target, syntax="bash_block") == 1.0


@pytest.fixture(scope="module")
def tiny_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    words = ["<|im_start|>", "<|im_end|>", "[UNK]", "system", "user", "assistant"]
    model = tokenizers.models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]")
    backend = tokenizers.Tokenizer(model)
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]",
                                                eos_token="<|im_end|>")


def test_render_prompt_uses_the_chat_template(tiny_tokenizer):
    messages = build_messages("Bug.", [(LS, "ok")])
    tiny_tokenizer.chat_template = "{% for m in messages %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}" \
                                   "{% if add_generation_prompt %}[assistant]{% endif %}"
    try:
        text = render_prompt(tiny_tokenizer, messages)
    finally:
        tiny_tokenizer.chat_template = None
    assert text == f"[system]{messages[0]['content']}[user]{messages[1]['content']}[assistant]"


def test_render_prompt_falls_back_to_chatml(tiny_tokenizer):
    messages = build_messages("Bug.")
    assert not tiny_tokenizer.chat_template
    fallback = render_prompt(tiny_tokenizer, messages)
    assert fallback.startswith("<|im_start|>system\n") and fallback.endswith("<|im_end|>\n<|im_start|>assistant\n")
    assert render_prompt(None, messages) == fallback
    # The fallback is exactly what a ChatML chat template renders.
    tiny_tokenizer.chat_template = CHATML_TEMPLATE
    try:
        assert render_prompt(tiny_tokenizer, messages) == fallback
    finally:
        tiny_tokenizer.chat_template = None
