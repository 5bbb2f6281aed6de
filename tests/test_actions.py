"""Parse / render round trips for every action syntax swe-srl reads."""

from __future__ import annotations

import json

import pytest

from swe_srl.actions import (
    find_actions,
    from_openhands_event,
    from_tool_call,
    is_submit,
    make_action,
    parse_action,
    parse_bash_block,
    parse_command,
    parse_xml,
    render_bash_block,
    render_command,
    render_xml,
)
from swe_srl.errors import ActionParseError
from swe_srl.schemas import Action


def same(a: Action, b: Action) -> bool:
    return a.tool == b.tool and a.arguments == b.arguments


EDITOR_CALLS = [
    make_action("str_replace_editor", {"command": "view", "path": "/testbed/src/a.py", "view_range": [10, 40]}),
    make_action("str_replace_editor", {"command": "create", "path": "/testbed/t.py", "file_text": "import "
            "a\n\nprint(a.f(1))\n"}),
    make_action("str_replace_editor", {"command": "str_replace", "path": "/testbed/a.py",
                                       "old_str": "    return x[:n - 1]", "new_str": "    return x[:n]"}),
    make_action("str_replace_editor", {"command": "insert", "path": "/testbed/a.py", "insert_line": 12,
                                       "new_str": "\nimport os\n"}),
    make_action("bash", {"command": "cd /testbed && python -m pytest -q tests/test_a.py -k 'slice and not big'"}),
    make_action("submit"),
]


@pytest.mark.parametrize("action", EDITOR_CALLS, ids=lambda a: a.tool + ":" + str(a.arguments.get("command", ""))[:12])
def test_xml_round_trip(action):
    text = render_xml(action)
    assert text.startswith(f"<function={action.tool}>") and text.endswith("</function>")
    assert same(parse_xml(text), action)
    # parse_action in auto mode routes XML text to the XML parser
    assert same(parse_action("Let me look.\n\n" + text), action)


@pytest.mark.parametrize("action", EDITOR_CALLS[:5],
                         ids=lambda a: a.tool + ":" + str(a.arguments.get("command", ""))[:12])
def test_command_round_trip(action):
    # bash-only scaffolds run the rendered command string; it parses back to the same action
    assert same(parse_command(render_command(action)), action)
    assert same(parse_bash_block(render_bash_block(action), which="last"), action)


def test_canonical_layout_is_swe_agent_xml():
    action = make_action("bash", {"command": "ls -la"})
    assert render_xml(action) == "<function=bash>\n<parameter=command>ls -la</parameter>\n</function>"
    # argument order is fixed for the editor whatever order the source used
    shuffled = make_action("str_replace_editor",
                           {"path": "/a", "new_str": "y", "command": "str_replace", "old_str": "x"})
    assert render_xml(shuffled).splitlines()[1:5] == [
        "<parameter=command>str_replace</parameter>",
        "<parameter=path>/a</parameter>",
        "<parameter=old_str>x</parameter>",
        "<parameter=new_str>y</parameter>",
    ]


def test_multiline_parameter_values_keep_indentation():
    text = ("<function=str_replace_editor>\n<parameter=command>str_replace</parameter>\n"
            "<parameter=path>/a.py</parameter>\n"
            "<parameter=old_str>\n    if x:\n        return 1\n</parameter>\n</function>")
    assert parse_xml(text).arguments["old_str"] == "    if x:\n        return 1"


def test_values_with_surrounding_newlines_survive():
    action = make_action("str_replace_editor",
                         {"command": "insert", "path": "/a", "insert_line": 0, "new_str": "\nx = 1\n"})
    assert parse_xml(render_xml(action)).arguments["new_str"] == "\nx = 1\n"


@pytest.mark.parametrize("text,error", [
    ("no call at all", "no <function"),
    ("<function=bash>\n<parameter=command>ls</parameter>\n", "unterminated"),
    ("<function=bash><parameter=command>ls</parameter></function>\n"
     "<function=bash><parameter=command>pwd</parameter></function>", "2 function calls"),
])
def test_xml_errors(text, error):
    with pytest.raises(ActionParseError, match=error):
        parse_xml(text)


def test_bash_block_exactly_one():
    text = "THOUGHT: list files\n\n```bash\nls -la && cat setup.py\n```"
    assert parse_bash_block(text).arguments == {"command": "ls -la && cat setup.py"}
    with pytest.raises(ActionParseError, match="exactly one"):
        parse_bash_block("```bash\nls\n```\n```bash\npwd\n```")
    with pytest.raises(ActionParseError):
        parse_bash_block("no block")


def test_aci_multiline_edit():
    action = parse_command("edit 1475:1476\n        return int(round(x))\n        # done\nend_of_edit\n")
    assert action.tool == "edit"
    assert action.arguments == {"start_line": 1475, "end_line": 1476,
                                "replacement_text": "        return int(round(x))\n        # done"}
    assert render_command(action) == "edit 1475:1476\n        return int(round(x))\n        # done\nend_of_edit"


@pytest.mark.parametrize("command,tool,args", [
    ('open "src/marshmallow/fields.py" 1474', "open", {"path": "src/marshmallow/fields.py", "line_number": 1474}),
    ("goto 120", "goto", {"line_number": 120}),
    ("create reproduce.py", "create", {"filename": "reproduce.py"}),
    ('search_dir "def parse" src', "search_dir", {"search_term": "def parse", "dir": "src"}),
    ('find_file "fields.py" src', "find_file", {"file_name": "fields.py", "dir": "src"}),
    ("scroll_down", "scroll_down", {}),
    ("submit", "submit", {}),
    ("edit 'return a' 'return b'", "edit", {"search": "return a", "replace": "return b"}),
    ("str_replace_editor view /testbed/a.py --view_range 1 20", "str_replace_editor",
     {"command": "view", "path": "/testbed/a.py", "view_range": [1, 20]}),
    ("str_replace_editor str_replace /t/a.py --old_str 'x = 1' --new_str 'x = 2'", "str_replace_editor",
     {"command": "str_replace", "path": "/t/a.py", "old_str": "x = 1", "new_str": "x = 2"}),
    ("python reproduce.py", "bash", {"command": "python reproduce.py"}),
    ("open a.py | head", "bash", {"command": "open a.py | head"}),  # shell syntax -> plain bash
])
def test_swe_agent_commands(command, tool, args):
    action = parse_command(command)
    assert (action.tool, action.arguments) == (tool, args)
    assert action.raw == command


def test_openai_tool_calls_string_or_object_arguments():
    as_string = from_tool_call("execute_bash", json.dumps({"command": "ls"}))
    as_object = from_tool_call("execute_bash", {"command": "ls"})
    assert same(as_string, as_object) and as_string.tool == "bash"
    assert from_tool_call("finish", '{"message": "done"}').tool == "submit"
    editor = from_tool_call("str_replace_editor", {"command": "view", "path": "/a", "view_range": "[1, 5]"})
    assert editor.arguments["view_range"] == [1, 5]
    with pytest.raises(ActionParseError, match="not valid JSON"):
        from_tool_call("bash", '{"command": "ls"')
    with pytest.raises(ActionParseError, match="must be an object"):
        from_tool_call("bash", "[1, 2]")


def test_openhands_events():
    run = from_openhands_event({"action": "run", "args": {"command": "ls", "thought": "look"}})
    assert (run.tool, run.arguments) == ("bash", {"command": "ls"})
    read = from_openhands_event({"action": "read", "args": {"path": "/w/a.py"}})
    assert read.arguments == {"command": "view", "path": "/w/a.py"}
    edit = from_openhands_event({"action": "edit", "args": {"command": "str_replace", "path": "/w/a.py",
                                                            "old_str": "a", "new_str": "b", "file_text": None}})
    assert edit.arguments == {"command": "str_replace", "path": "/w/a.py", "old_str": "a", "new_str": "b"}
    assert from_openhands_event({"action": "finish", "args": {}}).tool == "submit"
    assert from_openhands_event({"action": "think", "args": {"thought": "hm"}}) is None
    assert from_openhands_event({"action": "message", "args": {"content": "hi"}}) is None


def test_find_actions_counts_every_call():
    two = render_xml(EDITOR_CALLS[0]) + "\n" + render_xml(EDITOR_CALLS[4])
    assert len(find_actions(two)) == 2
    assert len(find_actions("```bash\nls\n```")) == 1
    assert find_actions("just prose") == []


def test_is_submit():
    assert is_submit(make_action("submit"))
    assert is_submit(make_action("finish"))
    assert is_submit(make_action("bash",
                                 {"command": "echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT && git add -A && git diff "
                                             "--cached"}))
    assert not is_submit(make_action("bash", {"command": "ls"}))


def test_unbalanced_quotes_fall_back_or_fail_clearly():
    with pytest.raises(ActionParseError, match="unbalanced quotes"):
        parse_command("str_replace_editor str_replace /a --old_str 'x")
    with pytest.raises(ActionParseError, match="empty"):
        parse_command("   ")
