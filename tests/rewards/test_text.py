"""The string metrics behind the SRL reward: the difflib modes agree exactly, lcs is a bound,
cydifflib falls back to the stdlib with one warning."""

from __future__ import annotations

import difflib
import warnings

import pytest

from swe_srl.actions import make_action, render_xml
from swe_srl.errors import ConfigError
from swe_srl.rewards import text
from swe_srl.rewards.text import similarities, similarity

OLD = "\n".join(f"    value_{i} = compute(value_{i - 1}, scale=2)  # step {i}" for i in range(1, 7))
NEW = OLD.replace("scale=2", "scale=3").replace("# step 4", "# fixed step 4")
EDIT = render_xml(make_action("str_replace_editor", {
    "command": "str_replace", "path": "/testbed/src/pkg/core.py", "old_str": OLD, "new_str": NEW}))
BASH_LS = render_xml(make_action("bash", {"command": "ls -la src/"}))


@pytest.mark.parametrize("mode", ["difflib", "cydifflib"])
def test_difflib_modes_give_identical_values(mode):
    variants = [EDIT, EDIT.replace("scale=3", "scale=4"), EDIT[: len(EDIT) // 2], BASH_LS, "", "x" * 300]
    reference = [difflib.SequenceMatcher(None, v, EDIT, autojunk=False).ratio() for v in variants]
    assert similarities(variants, EDIT, mode) == reference
    assert [similarity(v, EDIT, mode) for v in variants] == reference


def test_lcs_mode_is_at_least_the_difflib_ratio():
    variants = [EDIT.replace("scale=3", "scale=4"), EDIT[::2], BASH_LS]
    exact = similarities(variants, EDIT, "difflib")
    lcs = similarities(variants, EDIT, "lcs")
    assert all(lo >= e - 1e-12 for lo, e in zip(lcs, exact))
    assert similarity("abcd", "abcd", "lcs") == 1.0 and similarity("", "", "lcs") == 1.0


def test_cydifflib_missing_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(text, "_cydifflib", None)
    monkeypatch.setattr(text, "_cydifflib_warned", False)
    with pytest.warns(RuntimeWarning, match="cydifflib is not installed"):
        value = similarity("abcdef", "abcxef", "cydifflib")
    assert value == difflib.SequenceMatcher(None, "abcdef", "abcxef", autojunk=False).ratio()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        similarity("abc", "abd", "cydifflib")  # warned once already


def test_a_mode_that_is_not_a_text_metric_is_a_config_error():
    with pytest.raises(ConfigError, match="text similarity mode"):
        similarity("a", "b", "fast")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="text similarity mode"):
        similarities(["a"], "b", "args")  # type: ignore[arg-type]  # args compares actions, not texts
