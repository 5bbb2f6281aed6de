"""Format readers on swe-srl's own sample trajectories: every reader, auto-detection, and the
fields the dataset layer relies on (steps, actions, observations, exit codes, outcome)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swe_srl.actions import is_submit
from swe_srl.errors import ConfigError, InputError
from swe_srl.formats import FORMATS, Skip, detect_format, read_trajectories
from swe_srl.schemas import Trajectory

SAMPLES = Path(__file__).resolve().parents[2] / "trajectories" / "samples"
ALL_FORMATS = ("mini-swe-agent-1", "mini-swe-agent-1.1", "swe-agent", "openhands", "swe-gym",
               "nebius", "swe-smith", "swe-srl")


def read(path: Path | str, fmt: str = "auto") -> list[Trajectory]:
    skips: list[Skip] = []
    out = list(read_trajectories([SAMPLES / path], fmt=fmt, on_skip=skips.append))
    assert skips == []
    return out


def by_task(trajs: list[Trajectory]) -> dict[str, Trajectory]:
    return {t.task_id: t for t in trajs}


def test_registry_names_every_format():
    assert tuple(sorted(FORMATS)) == tuple(sorted(ALL_FORMATS))


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_each_sample_folder_holds_two_trajectories_of_its_format(fmt):
    trajs = read(fmt)
    assert len(trajs) >= 2
    assert {t.source_format for t in trajs} == {fmt}
    for t in trajs:
        assert 4 <= len(t.steps) <= 12
        assert t.problem_statement and "<pr_description>" not in t.problem_statement
        assert t.source.startswith(str(SAMPLES / fmt))
        assert is_submit(t.steps[-1].action)
        # thought is prose, never the action text itself
        assert all("```" not in s.thought and "<function=" not in s.thought for s in t.steps)
    assert len({t.trajectory_id for t in trajs}) == len(trajs)


@pytest.mark.parametrize("fmt", ALL_FORMATS)
def test_explicit_format_reads_the_same_as_auto(fmt):
    assert read(fmt, fmt=fmt) == read(fmt)


def test_mini_swe_agent_1_text_actions_and_format_error():
    t = by_task(read("mini-swe-agent-1"))["slugkit__slugkit-12"]
    assert t.resolved is None and t.exit_status == "Submitted"
    assert t.problem_statement.startswith("slugify() leaves a trailing dash")
    assert t.metadata["format_errors"] == 1  # the two-block turn and its notice are not steps
    first = t.steps[0]
    assert first.action.tool == "bash"
    assert first.action.arguments == {"command": 'grep -rn "def slugify" slugkit/'}
    assert first.thought == "The issue is about slugify; find where it is defined."
    assert first.observation == 'slugkit/core.py:7:def slugify(text: str, sep: str = "-") -> str:\n'
    assert first.exit_code == 0
    assert t.steps[3].observation == "'hello-world-'\n'trailing-dots-'\n"
    submit = t.steps[-1]
    assert submit.action.arguments["command"].startswith("echo COMPLETE_TASK_AND_SUBMIT_FINAL_OUTPUT")
    assert submit.observation.startswith("diff --git a/slugkit/core.py")
    assert t.final_patch == submit.observation
    assert t.model == "anthropic/claude-sonnet-4-5-20250929"


def test_mini_swe_agent_1_timeout_parts_and_custom_fence():
    t = by_task(read("mini-swe-agent-1"))["wrapit__wrapit-5"]
    timed_out = [s for s in t.steps if s.timed_out]
    assert len(timed_out) == 1
    assert timed_out[0].action.arguments["command"] == "python reproduce.py"
    assert timed_out[0].exit_code is None
    assert t.steps[6].exit_code == 1 and "1 failed, 6 passed" in t.steps[6].observation
    assert t.steps[2].action.arguments["command"].startswith("cat <<'EOF' > reproduce.py\n")


def test_mini_swe_agent_tool_calls_string_and_object_arguments():
    trajs = by_task(read("mini-swe-agent-1.1"))
    json_args, object_args = trajs["confparse__confparse-31"], trajs["durfmt__durfmt-7"]
    for t in (json_args, object_args):
        assert [s.action.tool for s in t.steps] == ["bash"] * 8
        assert t.steps[0].exit_code == 0 and t.exit_status == "Submitted"
        assert t.steps[-1].observation.startswith("diff --git")  # the exit message
    assert json_args.steps[4].action.arguments == {"command": "sed -i '7s/value\\.strip()/value.strip().lower()/' "
                                                              "confparse/values.py"}
    assert json_args.steps[3].observation == "FALSE True\nNo True\noff False\nTrue True\n"
    assert object_args.metadata["format_errors"] == 1
    assert object_args.steps[4].thought.startswith("3600 falls through to minutes")


def test_swe_agent_0x_aci_commands_and_demo_turns():
    t = by_task(read("swe-agent"))["tinycsv__tinycsv-44"]
    assert [s.action.tool for s in t.steps] == [
        "find_file", "open", "create", "edit", "bash", "edit", "bash", "bash", "submit"]
    assert t.metadata["demo_turns"] == 3
    assert t.problem_statement.startswith("read_rows drops the last row")
    assert "INSTRUCTIONS" not in t.problem_statement
    edit = t.steps[5].action
    assert (edit.arguments["start_line"], edit.arguments["end_line"]) == (4, 4)
    assert "lines[1:] if line]" in edit.arguments["replacement_text"]
    assert t.steps[1].observation.startswith("[File: /tinycsv/tinycsv/reader.py (4 lines total)]")
    assert "(Open file:" not in t.steps[1].observation
    assert t.steps[0].thought == "Find the reader function."


def test_swe_agent_1x_prefers_history_tool_calls():
    t = by_task(read("swe-agent"))["statlite__statlite-19"]
    assert t.model == "gpt-4o"
    view = t.steps[1].action
    assert view.tool == "str_replace_editor"
    assert view.arguments == {"command": "view", "path": "/testbed/statlite/central.py", "view_range": [1, 7]}
    edit = t.steps[4].action
    assert edit.arguments["old_str"] == "    return ordered[mid]"
    assert edit.arguments["new_str"] == "    return (ordered[mid - 1] + ordered[mid]) / 2"


def test_openhands_event_stream_and_old_dialect():
    trajs = by_task(read("openhands"))
    new, old = trajs["slugkit__slugkit-12"], trajs["statlite/statlite#19"]
    assert new.resolved is True and old.resolved is False
    assert [s.action.tool for s in new.steps] == [
        "bash", "str_replace_editor", "str_replace_editor", "bash", "str_replace_editor", "bash", "bash", "submit"]
    assert new.steps[0].exit_code == 0
    assert new.steps[1].thought == "Read the function to see how separators are trimmed."  # from the model response
    assert new.steps[4].observation.startswith("The file /workspace/slugkit__slugkit__0.1/slugkit/core.py has been "
                                               "edited")
    assert new.model == "anthropic/claude-3-5-sonnet-20241022"
    assert old.problem_statement.startswith("median() is wrong for lists of even length")
    assert old.steps[3].observation.startswith("3\n2\n") and old.steps[3].exit_code == 0
    assert old.final_patch.startswith("diff --git a/statlite/central.py")


def test_swe_gym_parquet_json_columns_and_parallel_calls():
    trajs = by_task(read("swe-gym"))
    ok, failed = trajs["confparse__confparse-31"], trajs["wrapit__wrapit-5"]
    assert ok.resolved is True and failed.resolved is False
    assert ok.metadata["message_turns"] == 1  # the message turn answered by "Please continue"
    # two tool calls in one assistant message: two steps, the thought on the first
    assert ok.steps[0].action.tool == "bash" and ok.steps[1].action.tool == "str_replace_editor"
    assert ok.steps[0].thought.startswith("Locate parse_bool") and ok.steps[1].thought == ""
    assert ok.steps[1].observation.startswith("Here's the result of running `cat -n`")
    assert ok.steps[0].exit_code == 0 and ok.steps[6].exit_code == 0
    assert not ok.steps[0].observation.startswith("OBSERVATION")
    assert failed.steps[3].timed_out and failed.steps[3].exit_code is None
    assert failed.steps[6].exit_code == 1


def test_nebius_json_array_rows():
    trajs = by_task(read("nebius"))
    ok, failed = trajs["tinycsv__tinycsv-44"], trajs["wrapit__wrapit-5"]
    assert ok.resolved is True and failed.resolved is False
    assert ok.model == "swe-agent-llama-70b" and ok.exit_status == "submitted"
    assert failed.metadata["format_errors"] == 1
    assert failed.steps[4].timed_out
    assert ok.steps[4].observation == "[['ann', '31']]\n[['ann', '31'], ['bob', '42']]"  # prompt trailer removed
    assert ok.steps[1].action.tool == "open" and ok.steps[1].action.arguments == {"path": "tinycsv/reader.py"}


def test_swe_smith_xml_calls():
    trajs = by_task(read("swe-smith"))
    t = trajs["statlite__statlite-19"]
    assert t.trajectory_id.startswith("statlite__statlite-19.") and t.resolved is True
    assert t.metadata["format_errors"] == 1
    assert t.steps[2].action.arguments["file_text"].startswith("from statlite.central import median")
    assert t.steps[1].action.arguments["view_range"] == [1, 7]
    assert t.steps[3].observation == "3\n2\n"
    assert t.steps[0].thought == "Find median."


def test_swe_srl_records_round_trip():
    trajs = read("swe-srl")
    again = [Trajectory.from_dict(json.loads(json.dumps(t.to_dict()))) for t in trajs]
    assert again == trajs
    assert {t.resolved for t in trajs} == {True, None}


def test_auto_detection_decides_from_content_not_names(tmp_path):
    # The same record under a misleading name is still detected by content.
    record = json.loads((SAMPLES / "mini-swe-agent-1.1" / "durfmt__durfmt-7.traj.json").read_text())
    misleading = tmp_path / "openhands_output.jsonl"
    misleading.write_text(json.dumps(record) + "\n")
    [t] = read_trajectories([misleading])
    assert t.source_format == "mini-swe-agent-1.1"
    assert detect_format(record) == "mini-swe-agent-1.1"
    del record["trajectory_format"]  # older files without the marker: decided by tool_calls
    assert detect_format(record) == "mini-swe-agent-1.1"
    assert detect_format({"foo": 1}) is None and detect_format([1, 2]) is None


def test_whole_sample_tree_reads_every_format():
    trajs = read(".")
    assert {t.source_format for t in trajs} == set(ALL_FORMATS)
    assert len(trajs) == 16


def test_missing_path_and_unknown_format_fail_before_reading(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        read_trajectories([SAMPLES, tmp_path / "nope.jsonl"])
    with pytest.raises(ConfigError, match="unknown trajectory format 'sweagent'"):
        read_trajectories([SAMPLES], fmt="sweagent")
