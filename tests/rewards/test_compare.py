"""What of an action the SRL reward compares: content (default) vs the whole call, and the
args mode (argument matching). A format violation stays -1 in every mode."""

from __future__ import annotations

import difflib

import pytest

from swe_srl.actions import make_action, render_bash_block, render_xml
from swe_srl.errors import ConfigError
from swe_srl.rewards.compare import (
    COMPARES,
    SIMILARITY_MODES,
    RewardConfig,
    args_similarity,
    canonical_target,
    content_text,
)
from swe_srl.rewards.similarity import FORMAT_VIOLATION, SimilarityReward, srl_reward

TEXT_MODES = ("difflib", "cydifflib", "lcs")
LS, PWD = make_action("bash", {"command": "ls"}), make_action("bash", {"command": "pwd"})
VIEW = make_action("str_replace_editor", {"command": "view", "path": "/testbed/src/a.py", "view_range": [1, 20]})
# A paper-style step (SRL paper Fig. 4 kind): the expert greps for a definition, the policy finds
# the same thing another way. Most characters of the call text are the shared wrapper.
EXPERT_GREP = make_action("bash", {"command": 'grep -rn "def _print_Mul" sympy/printing/'})
POLICY_FIND = make_action("bash", {"command": "find sympy/printing -name '*.py' | xargs grep -n '_print_Mul'"})


def answer(action) -> str:
    return f"<think>\nsomething\n</think>\n{render_xml(action)}"


def ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


# --------------------------------------------------------------------------- content text


def test_content_of_bash_is_the_command_and_of_other_tools_the_name_and_values():
    assert content_text(LS) == "ls"
    assert content_text(VIEW) == "str_replace_editor\nview\n/testbed/src/a.py\n1 20"
    assert content_text(make_action("submit", {})) == "submit"
    # A fixed key order whatever order the source wrote: canonical order, then sorted.
    shuffled = make_action("str_replace_editor",
                           {"view_range": [1, 20], "path": "/testbed/src/a.py", "command": "view"})
    assert content_text(shuffled) == content_text(VIEW)
    other = make_action("search_dir", {"dir": "src", "search_term": "Mul"})
    assert content_text(other) == "search_dir\nsrc\nMul"
    assert content_text(make_action("bash", {"timeout": 30, "command": "ls"})) == "ls\n30"


def test_ls_against_pwd_is_zero_on_content_and_near_one_on_the_call():
    for mode in TEXT_MODES:
        assert srl_reward(answer(PWD), render_xml(LS), mode) == 0.0
        assert srl_reward(answer(PWD), render_xml(LS), mode, compare="call") == pytest.approx(0.959, abs=5e-4)
    assert srl_reward(answer(PWD), render_xml(LS), "args") == 0.0


def test_paper_style_pair_content_against_call():
    target = render_xml(EXPERT_GREP)
    call = srl_reward(answer(POLICY_FIND), target, compare="call")
    content = srl_reward(answer(POLICY_FIND), target)
    assert call == pytest.approx(0.700, abs=5e-4) and call == ratio(render_xml(POLICY_FIND), target)
    assert content == pytest.approx(0.353, abs=5e-4)
    assert content == ratio(POLICY_FIND.arguments["command"], EXPERT_GREP.arguments["command"])


def test_the_tool_name_still_counts_under_content():
    target = render_xml(VIEW)
    cat = make_action("bash", {"command": "cat /testbed/src/a.py"})
    same_tool = make_action("str_replace_editor", {"command": "view", "path": "/testbed/src/b.py"})
    assert srl_reward(answer(same_tool), target) > srl_reward(answer(cat), target) > 0.0


def test_expert_in_any_syntax_and_unparsable_text():
    block = render_bash_block(LS)
    assert canonical_target(block) == ("ls", "bash")
    assert srl_reward(answer(LS), block) == 1.0
    # A target that is not an action is compared as its text; args has no tool to match.
    assert canonical_target("<function=bash>\n<parameter=command>ls") == ("<function=bash>\n<parameter=command>ls",
            None)
    assert srl_reward(answer(LS), "<function=bash> ls", "args") == 0.0


# --------------------------------------------------------------------------- args mode


def test_args_needs_the_same_tool_and_the_same_argument_keys():
    target = render_xml(VIEW)
    cat = make_action("bash", {"command": "cat /testbed/src/a.py"})
    assert srl_reward(answer(cat), target, "args") == 0.0  # another tool
    no_range = make_action("str_replace_editor", {"command": "view", "path": "/testbed/src/a.py"})
    assert srl_reward(answer(no_range), target, "args") == 0.0  # another key set
    assert srl_reward(answer(VIEW), target, "args") == 1.0
    submit = make_action("submit", {})
    assert srl_reward(answer(submit), render_xml(submit), "args") == 1.0  # no arguments, same tool


def test_args_is_the_mean_value_ratio_over_the_keys():
    near = make_action("str_replace_editor", {"command": "view", "path": "/testbed/src/b.py", "view_range": [1, 40]})
    expected = (1.0 + ratio("/testbed/src/b.py", "/testbed/src/a.py") + ratio("1 40", "1 20")) / 3
    assert args_similarity(near, VIEW) == pytest.approx(expected)
    assert srl_reward(answer(near), render_xml(VIEW), "args") == pytest.approx(expected)
    # One key (bash's command): the same value as content + cydifflib.
    assert srl_reward(answer(POLICY_FIND), render_xml(EXPERT_GREP), "args") == \
        srl_reward(answer(POLICY_FIND), render_xml(EXPERT_GREP), "cydifflib")


# --------------------------------------------------------------------------- every mode


VALID = [(m, c) for m in SIMILARITY_MODES for c in COMPARES if (m, c) != ("args", "call")]


@pytest.mark.parametrize("mode, compare", VALID)
def test_format_violation_is_minus_one_and_a_copy_is_one_in_every_mode(mode, compare):
    target = render_xml(VIEW)
    for broken in ("", render_xml(VIEW), "<think>x</think>\n" + render_xml(VIEW) * 2, answer(VIEW)[:-5]):
        assert srl_reward(broken, target, mode, compare=compare) == FORMAT_VIOLATION
    assert srl_reward(answer(VIEW), target, mode, compare=compare) == 1.0
    reward = SimilarityReward(RewardConfig(mode, compare))
    scores = reward([answer(VIEW), "nothing", answer(LS)], [{"target": target}] * 3)
    assert scores[:2] == [1.0, FORMAT_VIOLATION] and 0.0 <= scores[2] < 1.0  # type: ignore[operator]


def test_tool_mismatch_zero_applies_to_every_mode():
    cat = make_action("bash", {"command": "cat /testbed/src/a.py"})
    for mode in SIMILARITY_MODES:
        assert RewardConfig(mode, tool_mismatch="zero").scorer().score(cat, render_xml(VIEW)) == 0.0
    assert RewardConfig("cydifflib", "call", "zero").scorer().score(cat, render_xml(VIEW)) == 0.0
    assert RewardConfig("cydifflib", "call").scorer().score(cat, render_xml(VIEW)) > 0.3


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="compare must be one of"):
        RewardConfig(compare="wrapper")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="similarity 'args' compares argument values itself"):
        RewardConfig("args", "call")
    with pytest.raises(ConfigError, match="tool_mismatch must be one of"):
        RewardConfig(tool_mismatch="drop")  # type: ignore[arg-type]
