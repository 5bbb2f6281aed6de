"""False-positive check: the bundled expert trajectories and the real published samples
(``<repo>/../shared/real-samples``, development checkout only) hold no leaky step. Every hit
was reviewed when this was written (0 on each corpus, see benchmarks/README.md); a new hit is
either a real leak in new data or a false positive of a changed rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from swe_srl.formats import read_trajectories
from swe_srl.leaks import scan_trajectory
from swe_srl.paths import EXPERT_TRAJECTORIES_DIR, SAMPLES_DIR, SYNTHETIC_TRAJECTORIES_DIR

REAL = Path(__file__).resolve().parents[2].parent / "shared" / "real-samples"
CORPORA = {"samples": SAMPLES_DIR, "expert": EXPERT_TRAJECTORIES_DIR,
           "synthetic": SYNTHETIC_TRAJECTORIES_DIR, "real-samples": REAL}


@pytest.mark.parametrize("name", list(CORPORA))
def test_no_leaks_in_bundled_and_real_trajectories(name):
    root = CORPORA[name]
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    trajs = list(read_trajectories([root], on_skip=lambda skip: None))
    hits = [(t.trajectory_id, k, leak) for t in trajs for k, leaks in enumerate(scan_trajectory(t)) for leak in leaks]
    assert len(trajs) >= 8 and sum(len(t.steps) for t in trajs) >= 60
    assert hits == []
