"""The SRL step reward: format contract, reward values, reward-function contract. (The string
metrics are tested in test_text.py, what of an action is compared in test_compare.py.)"""

from __future__ import annotations

import difflib

import pytest

from swe_srl.actions import make_action, render_bash_block, render_xml
from swe_srl.errors import ConfigError, InputError
from swe_srl.rewards.similarity import (
    FORMAT_VIOLATION,
    RewardConfig,
    SimilarityReward,
    canonical_target,
    parse_completion,
    srl_reward,
)

BASH_LS = render_xml(make_action("bash", {"command": "ls -la src/"}))
OLD = "\n".join(f"    value_{i} = compute(value_{i - 1}, scale=2)  # step {i}" for i in range(1, 7))
NEW = OLD.replace("scale=2", "scale=3").replace("# step 4", "# fixed step 4")
EDIT = render_xml(make_action("str_replace_editor", {
    "command": "str_replace", "path": "/testbed/src/pkg/core.py", "old_str": OLD, "new_str": NEW}))


def answer(action_text: str, thought: str = "look at the files") -> str:
    return f"<think>\n{thought}\n</think>\n{action_text}"


# --------------------------------------------------------------------------- format contract


def test_identical_action_scores_one():
    assert srl_reward(answer(BASH_LS), BASH_LS) == 1.0


def test_parse_returns_thought_and_canonical_action():
    parsed = parse_completion(answer(BASH_LS, "  I should list files  "))
    assert parsed is not None
    assert parsed.thought == "I should list files"
    assert parsed.action.tool == "bash"
    assert parsed.action_text == BASH_LS


@pytest.mark.parametrize("completion", [
    pytest.param(answer(""), id="empty-action"),
    pytest.param(answer(BASH_LS + "\n" + BASH_LS), id="two-actions"),
    pytest.param(BASH_LS, id="missing-think"),
    pytest.param("<think>a</think>\n<think>b</think>\n" + BASH_LS, id="two-think-blocks"),
    pytest.param("<think>a</think>b</think>\n" + BASH_LS, id="two-close-think"),
    pytest.param(answer("<function=bash>\n<parameter=command>ls</parameter>\n"), id="unterminated-function"),
    pytest.param(answer(BASH_LS + "\n<function=bash>\n<parameter=command>ls"), id="trailing-unterminated"),
    pytest.param("<think>\n<think>x</think>\n" + BASH_LS, id="nested-open-think"),
    pytest.param("I will think.\n<think>x</think>\n" + BASH_LS, id="text-before-think"),
    pytest.param(answer(BASH_LS) + "\nDone, that should work.", id="prose-after-action"),
    pytest.param(answer("Let me list.\n" + BASH_LS), id="prose-before-action"),
    pytest.param(BASH_LS + "\n</think>", id="action-inside-thought"),
    pytest.param(answer("```bash\nls -la src/\n```"), id="bash-block-in-xml-syntax"),
    pytest.param("", id="empty-completion"),
])
def test_format_violations_score_minus_one(completion):
    assert parse_completion(completion) is None
    assert srl_reward(completion, BASH_LS) == FORMAT_VIOLATION


def test_missing_opening_think_is_accepted():
    # Chat templates such as Qwen3's open <think> in the prompt itself.
    assert srl_reward("reasoning here\n</think>\n" + BASH_LS, BASH_LS) == 1.0


def test_whitespace_around_the_parts_is_ignored():
    completion = "\n  <think>x</think>\n\n\n" + BASH_LS + "\n\n  "
    assert srl_reward(completion, BASH_LS) == 1.0
    assert srl_reward("<think>x</think>" + BASH_LS, BASH_LS) == 1.0


def test_allow_prose_accepts_text_around_the_action():
    completion = answer("Let me list.\n" + BASH_LS + "\nThen read.")
    assert srl_reward(completion, BASH_LS) == FORMAT_VIOLATION
    assert srl_reward(completion, BASH_LS, allow_prose=True) == 1.0
    # ... but still exactly one action.
    assert srl_reward(answer(BASH_LS + BASH_LS), BASH_LS, allow_prose=True) == FORMAT_VIOLATION


def test_bash_block_syntax():
    completion = answer("```bash\nls -la src/\n```")
    assert srl_reward(completion, BASH_LS, syntax="bash_block") == 1.0
    assert srl_reward(answer(BASH_LS), BASH_LS, syntax="bash_block") == FORMAT_VIOLATION
    two = answer("```bash\nls\n```\n```bash\npwd\n```")
    assert srl_reward(two, BASH_LS, syntax="bash_block") == FORMAT_VIOLATION
    python = answer("```python\nprint(1)\n```")
    assert srl_reward(python, BASH_LS, syntax="bash_block") == FORMAT_VIOLATION
    unterminated = answer("```bash\nls\n```\n```bash\npwd")
    assert srl_reward(unterminated, BASH_LS, syntax="bash_block") == FORMAT_VIOLATION


def test_target_in_another_syntax_is_recanonicalised():
    bash_target = render_bash_block(make_action("bash", {"command": "ls -la src/"}))
    assert canonical_target(bash_target, "call") == (BASH_LS, "bash")
    assert canonical_target(bash_target) == ("ls -la src/", "bash")  # content: the command
    assert srl_reward(answer(BASH_LS), bash_target) == 1.0
    # Parameter values written on their own lines are the same action.
    spaced = "<function=bash>\n<parameter=command>\nls -la src/\n</parameter>\n</function>"
    assert srl_reward(answer(spaced), BASH_LS) == 1.0


# --------------------------------------------------------------------------- similarity values


def test_similarity_is_difflib_ratio_without_autojunk():
    near = BASH_LS.replace("src/", "tests/")
    expected = difflib.SequenceMatcher(None, near, BASH_LS, autojunk=False).ratio()
    assert srl_reward(answer(near), BASH_LS, mode="difflib", compare="call") == expected
    assert 0.7 < expected < 1.0
    content = difflib.SequenceMatcher(None, "ls -la tests/", "ls -la src/", autojunk=False).ratio()
    assert srl_reward(answer(near), BASH_LS, mode="difflib") == content < expected


def _csv_fixture(sep: str) -> str:
    rows = "\n".join(sep.join(map(str, (i, i * 7 % 10, i * 3 % 10))) for i in range(40))
    return render_xml(make_action("bash", {"command": f"cat > data.csv << 'EOF'\nid{sep}x{sep}y\n{rows}\nEOF"}))


def test_long_action_avoids_the_autojunk_pitfall():
    # The expert writes a 360-char fixture; the policy writes the same rows with ';'.
    # With autojunk every digit, comma and newline is "popular" (> 1% of a 200+ char
    # string) and can only be matched next to a rare character, so the many short equal
    # runs between the separators are lost.
    target, attempt = _csv_fixture(","), _csv_fixture(";")
    assert len(target) > 200
    with_autojunk = difflib.SequenceMatcher(None, attempt, target).ratio()
    ours = srl_reward(answer(attempt), target, mode="difflib", compare="call")
    assert ours == difflib.SequenceMatcher(None, attempt, target, autojunk=False).ratio()
    assert ours > 0.75
    assert with_autojunk < 0.3
    assert srl_reward(answer(attempt), target, mode="difflib") > 0.7  # the command alone (no shared wrapper)


def test_tool_mismatch_modes():
    view = render_xml(make_action("str_replace_editor", {"command": "view", "path": "src/"}))
    text_score = srl_reward(answer(view), BASH_LS, tool_mismatch="text")
    assert 0.0 < text_score < 0.7
    assert srl_reward(answer(view), BASH_LS, tool_mismatch="zero") == 0.0
    # Same tool: "zero" changes nothing.
    near = BASH_LS.replace("-la", "-l")
    assert srl_reward(answer(near), BASH_LS, tool_mismatch="zero") == srl_reward(answer(near), BASH_LS)


def test_unknown_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="similarity must be one of"):
        RewardConfig(similarity="levenshtein")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="compare must be one of"):
        RewardConfig(compare="xml")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="tool_mismatch"):
        RewardConfig(tool_mismatch="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="leave it at 'content'"):
        RewardConfig(similarity="args", compare="call")


# --------------------------------------------------------------------------- reward-function contract


def test_similarity_reward_batch_matches_single_calls():
    targets = [BASH_LS, EDIT]
    completions = [answer(BASH_LS), answer(BASH_LS.replace("src", "lib")), "no think",
                   answer(EDIT), answer(EDIT.replace("scale=3", "scale=5")), answer(BASH_LS)]
    samples = [{"target": targets[i // 3]} for i in range(6)]
    fn = RewardConfig(similarity="cydifflib").step_reward()
    rewards = fn(completions, samples)
    assert rewards == [srl_reward(c, s["target"]) for c, s in zip(completions, samples)]
    assert rewards[0] == 1.0 and rewards[2] == FORMAT_VIOLATION and rewards[3] == 1.0
    assert fn.name == "similarity"


def test_reward_reads_step_target_objects_and_checks_inputs():
    from swe_srl.schemas import StepTarget

    target = StepTarget(id="t-0", trajectory_id="t", task_id="t", step_index=0, num_steps=1,
                        problem_statement="bug", context=(), target=BASH_LS, target_tool="bash")
    assert SimilarityReward()([answer(BASH_LS)], [target]) == [1.0]
    with pytest.raises(InputError, match="2 completions but 1 samples"):
        SimilarityReward()([answer(BASH_LS)] * 2, [target])
    with pytest.raises(InputError, match="'target'"):
        SimilarityReward()([answer(BASH_LS)], [{"expert": BASH_LS}])


def test_format_check():
    completions = [answer(BASH_LS), "nothing", answer(BASH_LS * 2)]
    assert [parse_completion(c) is not None for c in completions] == [True, False, False]
    assert SimilarityReward()(completions, [{"target": BASH_LS}] * 3) == [1.0, FORMAT_VIOLATION, FORMAT_VIOLATION]


def test_a_call_missing_its_arguments_is_a_format_violation():
    # The reward hack SRL found on the tiny model: an empty bash call, well-formed and harmless.
    target = "<function=bash>\n<parameter=command>ls src</parameter>\n</function>"
    for empty in ("<function=bash>\n</function>", "<function=bash>\n<parameter=command>  </parameter>\n</function>",
                  "<function=str_replace_editor>\n<parameter=command>view</parameter>\n</function>",
                  "<function=str_replace_editor>\n<parameter=command>str_replace</parameter>\n"
                  "<parameter=path>a.py</parameter>\n</function>"):
        assert srl_reward("<think>\nx\n</think>\n" + empty, target) == -1.0, empty
    fine = ("<function=str_replace_editor>\n<parameter=command>create</parameter>\n<parameter=path>a.py</parameter>\n"
            "<parameter=file_text></parameter>\n</function>")  # an empty new file is a real action
    assert srl_reward("<think>\nx\n</think>\n" + fine, target) >= 0.0
    assert srl_reward("<think>\nx\n</think>\n<function=submit>\n</function>", target) >= 0.0
