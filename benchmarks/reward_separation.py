"""How well each SRL reward setting (``reward.compare`` x ``reward.similarity``) tells a near-copy
of the expert's action from another action, on real expert actions.

Actions: every step of the bundled trajectories (``trajectories/samples`` and
``trajectories/expert``) and, where the checkout has them, the real published samples
(``--real``, default ``../shared/real-samples``, read in place), trajectories with the same
action sequence counted once. Anchors: every action with an argument to perturb (not ``submit``).

Pairs, per anchor, built with a seeded RNG (deterministic):
  * positive: the anchor lightly perturbed (``--positives`` of them), in one argument value
    (bash: the command; an editor call: its path or text, never its subcommand): 1-3
    character edits (1 under 20 characters, up to 2 under 40); or a small token change (one
    of its flags dropped, or a flag seen in another action, such as ``-n``, inserted after the
    first token); or one number
    changed by 1-20 (a line, a range, a count; character edits where there is no number);
  * negative, same trajectory: another step's action of the same trajectory (``--negatives``);
  * negative, other trajectory: a step's action of a trajectory of another task (``--negatives``).
A negative identical to its anchor is not drawn.

Per setting: ROC AUC of positive against negative scores (the rank formula, ties count half),
pooled over all anchors against each kind of negative and against all, and within each anchor
(its positives against its negatives, averaged over anchors: what GRPO sees, since advantages
are normalised within a group of answers to one expert action); the mean positive, the mean
negative, their gap, and that gap over the distance from the mean negative down to a format
violation's -1 (how much what the action does weighs against merely being well-formed); and the
time to score them, per 1,000 scores: ``ActionSimilarity.scores`` grouped per
anchor (the expert parse cached, as in training), and ``SimilarityReward`` end to end on
completions (parsing included). Times are the median of ``--repeats`` interleaved runs.

    .venv/bin/python benchmarks/reward_separation.py [--real DIR] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reward import interleaved_medians  # noqa: E402  # benchmarks/reward.py, beside this script

from swe_srl.actions import make_action, render_xml  # noqa: E402
from swe_srl.formats import read_trajectories  # noqa: E402
from swe_srl.paths import EXPERT_TRAJECTORIES_DIR, SAMPLES_DIR  # noqa: E402
from swe_srl.prompts import format_completion  # noqa: E402
from swe_srl.rewards.compare import ActionSimilarity, RewardConfig  # noqa: E402
from swe_srl.rewards.similarity import SimilarityReward  # noqa: E402
from swe_srl.schemas import Action  # noqa: E402

SETTINGS = [("content", "difflib"), ("content", "cydifflib"), ("content", "lcs"), ("content", "args"),
            ("call", "difflib"), ("call", "cydifflib"), ("call", "lcs")]
ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789_-./ "
FLAG = re.compile(r"--?[A-Za-z][\w-]{0,12}")
# Arguments that name what kind of call it is (an editor's subcommand), not what it acts on.
FIXED_KEYS = {"str_replace_editor": {"command"}}


@dataclass(frozen=True)
class Pair:
    anchor: Action
    candidate: Action
    kind: str  # "positive", "same-trajectory", "other-trajectory"


def load_trajectories(sources: list[Path]) -> list[tuple[str, list[Action]]]:
    """(task id, actions) of every trajectory under ``sources``, each action sequence once."""
    seen: set[tuple[str, ...]] = set()
    out = []
    for trajectory in read_trajectories(sources, on_skip=lambda skip: None):
        actions = [step.action for step in trajectory.steps]
        key = tuple(render_xml(a) for a in actions)
        if actions and key not in seen:
            seen.add(key)
            out.append((trajectory.task_id, actions))
    return out


def _perturbable(action: Action) -> list[str]:
    fixed = FIXED_KEYS.get(action.tool, set())
    return [k for k, v in action.arguments.items()
            if k not in fixed and isinstance(v, (str, int, list)) and str(v).strip()]


def _edit_chars(text: str, rng: random.Random) -> str:
    """1 character edit under 20 characters, up to 2 under 40, else up to 3."""
    chars = list(text)
    for _ in range(rng.randint(1, 1 + min(2, len(text) // 20))):
        i, op = rng.randrange(len(chars)), rng.random()
        if op < 1 / 3:
            chars[i] = rng.choice(ALPHABET)
        elif op < 2 / 3 or len(chars) < 2:
            chars.insert(i, rng.choice(ALPHABET))
        else:
            del chars[i]
    return "".join(chars)


def _change_token(text: str, rng: random.Random, flags: list[str]) -> str:
    """One flag dropped (when there is one, half the time), or a flag inserted after the first token."""
    parts = re.split(r"(\s+)", text)
    words = [i for i, p in enumerate(parts) if p and not p.isspace()]
    present = [i for i in words[1:] if FLAG.fullmatch(parts[i])]
    if present and rng.random() < 0.5:
        parts[rng.choice(present)] = ""
    else:
        parts[words[0]] += " " + rng.choice(flags)
    return "".join(parts)


def _change_number(value: Any, rng: random.Random) -> Any:
    """``value`` with one number moved by 1-20; None when it holds no number."""
    delta = rng.choice((-1, 1)) * rng.randint(1, 20)
    if isinstance(value, int):
        return max(0, value + delta)
    if isinstance(value, list) and value:
        i = rng.randrange(len(value))
        return [_change_number(v, rng) if j == i else v for j, v in enumerate(value)]
    numbers = list(re.finditer(r"\d+", str(value)))
    if not numbers:
        return None
    m = rng.choice(numbers)
    new = abs(int(m.group()) + delta)
    return f"{value[:m.start()]}{new}{value[m.end():]}"


def perturb(action: Action, rng: random.Random, flags: list[str]) -> Action | None:
    """The action with one argument value lightly changed (see the module docstring)."""
    keys = _perturbable(action)
    if not keys:
        return None
    for _ in range(5):
        key = rng.choice(keys)
        value, kind = action.arguments[key], rng.choice(("chars", "token", "number"))
        new = _change_number(value, rng) if kind == "number" or not isinstance(value, str) else None
        if new is None and isinstance(value, str):
            new = _change_token(value, rng, flags) if kind == "token" else _edit_chars(value, rng)
        candidate = make_action(action.tool, {**action.arguments, key: new})
        if new is not None and render_xml(candidate) != render_xml(action):
            return candidate
    return None


def build_pairs(trajectories: list[tuple[str, list[Action]]], positives: int, negatives: int,
                seed: int = 0) -> list[Pair]:
    rng = random.Random(seed)
    flags = sorted({w for _, actions in trajectories for a in actions for v in a.arguments.values()
                    for w in str(v).split() if FLAG.fullmatch(w)})
    pairs: list[Pair] = []
    for t, (task, actions) in enumerate(trajectories):
        others = [a for u, (other_task, acts) in enumerate(trajectories) if u != t and other_task != task for a in acts]
        for anchor in actions:
            if not _perturbable(anchor):
                continue
            text = render_xml(anchor)
            for _ in range(positives):
                candidate = perturb(anchor, rng, flags)
                if candidate is not None:
                    pairs.append(Pair(anchor, candidate, "positive"))
            for kind, pool in (("same-trajectory", actions), ("other-trajectory", others)):
                pool = [a for a in pool if render_xml(a) != text]
                for candidate in rng.sample(pool, min(negatives, len(pool))):
                    pairs.append(Pair(anchor, candidate, kind))
    return pairs


def roc_auc(positive: list[float], negative: list[float]) -> float:
    """P(score of a random positive > that of a random negative), ties counting half: the
    Mann-Whitney rank formula with mid-ranks for ties."""
    scored = sorted([(s, 1) for s in positive] + [(s, 0) for s in negative])
    rank_sum, i = 0.0, 0
    while i < len(scored):
        j = i
        while j < len(scored) and scored[j][0] == scored[i][0]:
            j += 1
        mid_rank = (i + 1 + j) / 2  # ranks i+1 .. j share their mean
        rank_sum += mid_rank * sum(label for _, label in scored[i:j])
        i = j
    n_pos, n_neg = len(positive), len(negative)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=REPO.parent / "shared" / "real-samples")
    parser.add_argument("--positives", type=int, default=2, help="perturbed copies per anchor")
    parser.add_argument("--negatives", type=int, default=2, help="negatives of each kind per anchor")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    sources = [SAMPLES_DIR, EXPERT_TRAJECTORIES_DIR] + ([args.real] if args.real.is_dir() else [])
    trajectories = load_trajectories(sources)
    pairs = build_pairs(trajectories, args.positives, args.negatives)
    anchors = {render_xml(p.anchor) for p in pairs}
    groups: dict[str, list[Pair]] = {}
    for pair in pairs:
        groups.setdefault(render_xml(pair.anchor), []).append(pair)
    counts = {kind: sum(1 for p in pairs if p.kind == kind) for kind in ("positive", "same-trajectory",
            "other-trajectory")}
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}")
    print(f"sources: {', '.join(str(s) for s in sources)}")
    print(f"{len(trajectories)} trajectories, {sum(len(a) for _, a in trajectories)} actions, {len(anchors)} distinct "
          f"anchors; pairs: {len(pairs)} ({', '.join(f'{n} {k}' for k, n in counts.items())})")

    def scorer_run(setting: ActionSimilarity) -> Callable[[], list[tuple[str, str, float]]]:
        def run() -> list[tuple[str, str, float]]:
            out = []
            for target, members in groups.items():
                scores = setting.scores([p.candidate for p in members], target)
                out.extend((target, p.kind, s) for p, s in zip(members, scores))
            return out
        return run

    completions = [format_completion("thinking",
                                     render_xml(p.candidate)) for members in groups.values() for p in members]
    rows = [{"target": target} for target, members in groups.items() for _ in members]

    def reward_run(fn: SimilarityReward) -> Callable[[], object]:
        return lambda: fn(completions, rows)

    runs: dict[str, Callable[[], object]] = {}
    results = {}
    for compare, similarity in SETTINGS:
        name = f"{compare}/{similarity}"
        settings = RewardConfig(similarity, compare)  # type: ignore[arg-type]
        scored = scorer_run(settings.scorer())()
        results[name] = scored
        runs[f"{name} scorer"] = scorer_run(settings.scorer())
        runs[f"{name} reward"] = reward_run(SimilarityReward(settings))
    seconds = interleaved_medians(runs, args.repeats)
    per_k = 1000 / len(pairs)
    print()
    print("| compare | similarity | AUC vs same-traj | AUC vs other-traj | AUC vs all | AUC within anchor "
          "| mean pos | mean neg | gap | gap / (neg + 1) | ms / 1k scores (scorer) | ms / 1k (reward e2e) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for compare, similarity in SETTINGS:
        name = f"{compare}/{similarity}"
        by_kind: dict[str, list[float]] = {}
        by_anchor: dict[str, tuple[list[float], list[float]]] = {}
        for target, kind, score in results[name]:
            by_kind.setdefault(kind, []).append(score)
            by_anchor.setdefault(target, ([], []))[kind != "positive"].append(score)
        pos, same, other = by_kind["positive"], by_kind["same-trajectory"], by_kind["other-trajectory"]
        neg = same + other
        within = statistics.fmean(roc_auc(p, n) for p, n in by_anchor.values() if p and n)
        gap = statistics.fmean(pos) - statistics.fmean(neg)
        print(f"| {compare} | {similarity} | {roc_auc(pos, same):.3f} | {roc_auc(pos, other):.3f} | "
              f"{roc_auc(pos, neg):.3f} "
              f"| {within:.3f} | {statistics.fmean(pos):.3f} | {statistics.fmean(neg):.3f} | {gap:.3f} "
              f"| {gap / (statistics.fmean(neg) + 1):.2f} "
              f"| {seconds[f'{name} scorer'] * 1000 * per_k:.1f} | {seconds[f'{name} reward'] * 1000 * per_k:.1f} |")


if __name__ == "__main__":
    main()
