"""The facts grading checks outside the test process (swe_srl.rewards.facts): the expected tests
ran, ran the test file's own functions to completion, and skip/xfail only where the file says."""

from __future__ import annotations

from swe_srl.rewards.facts import Reference, check_facts, marked

REF = Reference(files={"t.py": {"fp-ok": "test_ok", "fp-other": "test_other", "fp-helper": "helper",
                                "fp-method": "test_m", "fp-x": "test_x"}},
                marked={"t.py": ["test_x", "TestK", "TestC::test_s"], "m.py": ["*"]})


def _call(code, ran=True, xfail=False):
    return {"code": code, "ran": ran, "xfail": xfail}


def test_honest_statuses_are_kept():
    statuses = {"t.py::test_ok": "PASSED", "t.py::TestC::test_m[1]": "PASSED", "t.py::test_x": "XFAIL"}
    calls = {"t.py::test_ok": _call("fp-ok"), "t.py::TestC::test_m[1]": _call("fp-method"),
             "t.py::test_x": _call("fp-x", ran=False, xfail=True)}
    out, notes = check_facts(statuses, calls, REF, list(statuses))
    assert out == statuses and notes == []


def test_a_missing_expected_test_is_noted_and_stays_failed():
    out, notes = check_facts({}, {}, REF, ["t.py::test_ok"])
    assert out == {} and "did not run" in notes[0]


def test_foreign_or_swapped_functions_fail():
    statuses = {"t.py::test_ok": "PASSED", "t.py::test_other": "PASSED", "t.py::test_gone": "PASSED"}
    calls = {"t.py::test_ok": _call("fp-from-elsewhere"),  # a look-alike module's function
             "t.py::test_other": _call("fp-helper"),  # another function of the file
             "t.py::test_gone": _call("wrapper:abc")}  # a no-op wrapper from the repository
    out, notes = check_facts(statuses, calls, REF, list(statuses))
    assert set(out.values()) == {"FAILED"} and "not the test file's own" in notes[0]


def test_a_pass_whose_function_never_returned_fails():
    out, notes = check_facts({"t.py::test_ok": "PASSED"}, {"t.py::test_ok": _call("fp-ok", ran=None)}, REF,
                             ["t.py::test_ok"])
    assert out["t.py::test_ok"] == "FAILED" and "not seen to run" in notes[0]


def test_unmarked_xfail_xpass_and_skip_fail_marked_ones_stand():
    statuses = {"t.py::test_ok": "XFAIL", "t.py::test_other": "PASSED", "t.py::test_m": "SKIPPED",
                "t.py::TestK::test_a": "SKIPPED", "t.py::TestC::test_s": "XFAIL", "m.py::test_any": "SKIPPED"}
    calls = {"t.py::test_ok": _call("fp-ok", ran=False, xfail=True),
             "t.py::test_other": _call("fp-other", xfail=True)}  # XPASS
    out, notes = check_facts(statuses, calls, REF, list(statuses))
    assert out["t.py::test_ok"] == out["t.py::test_other"] == out["t.py::test_m"] == "FAILED"
    assert out["t.py::TestK::test_a"] == "SKIPPED" and out["t.py::TestC::test_s"] == "XFAIL"
    assert out["m.py::test_any"] == "SKIPPED" and "not marked" in notes[0]


def test_marks_follow_classes_parameters_and_module():
    assert marked(REF, "t.py::TestK::test_anything[2]") and marked(REF, "m.py::whatever")
    assert marked(REF, "t.py::test_x[a-b]") and not marked(REF, "t.py::test_ok")
