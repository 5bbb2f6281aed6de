"""Where the bundled data lives (a source checkout / editable install) and default outputs."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
SAMPLES_DIR = REPO_ROOT / "trajectories" / "samples"
EXPERT_TRAJECTORIES_DIR = REPO_ROOT / "trajectories" / "expert"
# The demo tasks' expert runs: `swe-srl record-experts` writes them, hybrid training compares with them.
DEMO_EXPERTS = EXPERT_TRAJECTORIES_DIR / "demo-experts.jsonl"
# Synthetic bug-fix tasks and expert trajectories made by trajectories/generate_synthetic.py.
SYNTHETIC_TRAJECTORIES_DIR = REPO_ROOT / "trajectories" / "synthetic"
TASKS_DIR = REPO_ROOT / "environments" / "tasks"


def default_trajectory_inputs() -> list[Path]:
    """What `swe-srl build-dataset` reads without INPUT: the format samples, the recorded
    expert runs of the demo tasks, and the synthetic expert trajectories (those present)."""
    files = (DEMO_EXPERTS, SYNTHETIC_TRAJECTORIES_DIR / "trajectories.jsonl.gz")
    return [SAMPLES_DIR] + [p for p in files if p.is_file()]


# Default locations of the outputs each command writes (under ./runs of the working directory).
RUNS_DIR = Path(os.environ.get("SWE_SRL_RUNS", "runs"))
DEFAULT_DATASET_DIR = RUNS_DIR / "dataset"
DEFAULT_MODEL_DIR = RUNS_DIR / "tiny-model"
DEFAULT_SMOLLM2_DIR = RUNS_DIR / "smollm2-135m"
DEFAULT_TRAIN_DIR = RUNS_DIR / "train"
DEFAULT_EVAL_DIR = RUNS_DIR / "eval"
# What `swe-srl env calibrate` writes and eval / rlvr / hybrid read when no file is named.
DEFAULT_CALIBRATION = RUNS_DIR / "calibration.json"
