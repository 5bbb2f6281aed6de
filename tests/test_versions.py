"""pyproject.toml's floors are the versions whose APIs swe-srl calls (swe_srl/versions.py), the
installed ones satisfy them, and an older install is refused in one line."""

from __future__ import annotations

import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

from swe_srl import versions
from swe_srl.errors import ConfigError

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _floors() -> dict[str, str]:
    if sys.version_info >= (3, 11):
        import tomllib

        project = tomllib.loads(PYPROJECT.read_text())["project"]
        specs = list(project["dependencies"]) + [
            s for group in project["optional-dependencies"].values() for s in group
        ]
    else:  # pragma: no cover
        specs = re.findall(r'"([A-Za-z0-9_.-]+>=[^"]+)"', PYPROJECT.read_text())
    out = {}
    for spec in specs:
        m = re.match(r"([A-Za-z0-9_.-]+)>=([0-9][^,;\s]*)", spec)
        if m:
            out[m.group(1).lower()] = m.group(2)
    return out


def test_pyproject_floors_are_the_api_floors():
    floors = _floors()
    for name, (floor, _) in versions.FLOORS.items():
        assert name in floors, f"pyproject.toml sets no floor for {name}"
        assert floors[name] == floor, f"{name}: pyproject says >={floors[name]}, the APIs used need >={floor}"


@pytest.mark.parametrize("name", ["torch", "transformers", "peft"])
def test_installed_versions_satisfy_the_floors(name):
    pytest.importorskip(name)
    versions.require(name)
    assert versions.at_least(importlib.metadata.version(name), versions.FLOORS[name][0])


def test_version_comparison():
    assert versions.at_least("2.13.0+cpu", "2.7")
    assert versions.at_least("2.7", "2.7.0")
    assert not versions.at_least("2.6.0", "2.7")
    assert not versions.at_least("0.31.9rc1", "0.32")
    assert versions.at_least("0.32.0rc1", "0.32")  # the release digits count, not the tag


def test_an_older_install_is_refused_in_one_line(monkeypatch):
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "4.40.0")
    with pytest.raises(ConfigError, match=r"transformers 4.40.0 is older than swe-srl needs \(transformers>=4.56"):
        versions.require("transformers")
