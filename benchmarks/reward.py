"""SRL similarity reward throughput: stdlib difflib vs swe-srl's exact mode vs the lcs mode.

Workload: 512 expert actions x 8 policy answers (= one GRPO batch of the SRL paper, G=8),
canonical XML texts. Expert actions come from the trajectories under ``--samples`` (default:
the bundled ``trajectories/samples``), topped up with synthetic bash commands and
str_replace / create edits of 50-3,000 chars; each answer is a realistic perturbation of
its expert action (character and line edits, another path, truncation, another action of
the pool, occasionally the identical action).

Baseline: ``difflib.SequenceMatcher(None, answer, expert, autojunk=False).ratio()`` per pair.
Measured: ``similarities(answers_of_one_expert, expert, mode)`` (what SimilarityReward runs)
for ``cydifflib`` (exact) and ``lcs``, plus the whole reward (parsing included). Each timing
is the median of ``--repeats`` runs.

    .venv/bin/python benchmarks/reward.py [--samples DIR] [--repeats 3]
"""

from __future__ import annotations

import argparse
import difflib
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swe_srl.actions import make_action, render_xml  # noqa: E402
from swe_srl.paths import SAMPLES_DIR  # noqa: E402
from swe_srl.prompts import format_completion  # noqa: E402
from swe_srl.rewards.similarity import RewardConfig, SimilarityReward, similarities  # noqa: E402

TARGETS, GROUP = 512, 8
WORDS = ("value", "config", "parser", "result", "items", "name", "path", "line", "token", "node",
         "header", "index", "field", "options", "cache", "request", "response", "data", "key",
         "queryset", "model", "widget", "form", "table", "column", "unit", "quantity", "frame",
         "axis", "label", "offset", "width", "height", "encoding", "buffer", "stream", "handler",
         "logger", "session", "timeout", "retry", "schema", "record", "message", "error", "state",
         "context", "module", "package", "version", "format", "pattern", "regex", "match", "group")
FILES = ("src/pkg/core.py", "src/pkg/utils/io.py", "lib/parser.py", "django/db/models/query.py",
         "sphinx/ext/autodoc/__init__.py", "astropy/io/fits/header.py", "tests/test_core.py")


def sample_actions(folder: Path) -> list[str]:
    """Canonical texts of the expert actions in every trajectory under ``folder``."""
    if not folder.is_dir() or not any(folder.rglob("*")):
        return []
    from swe_srl.formats import read_trajectories

    texts = [render_xml(step.action) for traj in read_trajectories([folder], on_skip=lambda skip: None)
             for step in traj.steps]
    return [t for t in dict.fromkeys(texts) if 50 <= len(t) <= 3000]


def _ident(rng: random.Random) -> str:
    first, second = rng.sample(WORDS, 2)
    return rng.choice((first, f"{first}_{second}", f"_{first}", f"{first}{rng.randint(1, 9)}",
                       first.capitalize() + second.capitalize()))


def _code(rng: random.Random, min_chars: int) -> str:
    """Python-like lines with the identifier variety of real code (difflib's cost depends
    on how often characters repeat, so a tiny vocabulary would overstate it)."""
    lines, size, indent = [], 0, 4
    while size < min_chars:
        a, b, c = _ident(rng), _ident(rng), _ident(rng)
        line = rng.choice([f"{a} = self.{b}.get({c!r}, None)", f"if {a} is None or {b} > {rng.randint(2, 99)}:",
                           f"return {a}.{b}({c}, strict={rng.choice(['True', 'False'])})",
                           f"for {a}, {b} in enumerate({c}):", f"{a}.append({b}[{rng.randint(0, 9)}:])",
                           f"raise ValueError(f\"Invalid {a}: {{{b}!r}} (expected {c})\")",
                           f"# {a.upper()}: keep {b} sorted before {c}", f"assert {a} == {b}, {c!r}"])
        lines.append(" " * indent + line)
        size += len(lines[-1]) + 1
        indent = indent + 4 if line.endswith(":") else rng.choice((4, 8, indent))
    return "\n".join(lines)


def _size(rng: random.Random) -> int:
    # Real SWE actions: median ~200 chars, a long tail of edits up to a few thousand.
    return int(min(3000, max(50, rng.lognormvariate(5.3, 0.8))))


def synthetic_action(rng: random.Random) -> str:
    """A bash command or an editor call like those in real SWE trajectories."""
    path = "/testbed/" + rng.choice(FILES)
    kind = rng.random()
    if kind < 0.35:
        word = rng.choice(WORDS)
        command = rng.choice([f"grep -rn \"def {word}\" /testbed/src --include=*.py | head -20",
                              f"sed -n '{rng.randint(1, 400)},{rng.randint(401, 900)}p' {path}",
                              f"cd /testbed && python -m pytest {path} -x -q -k {word} 2>&1 | tail -30",
                              f"find /testbed -name '*{word}*.py' -not -path '*/node_modules/*'",
                              f"cat > /testbed/reproduce.py << 'EOF'\n{_code(rng, _size(rng))}\nEOF\n"
                              "python /testbed/reproduce.py"])
        return render_xml(make_action("bash", {"command": command}))
    if kind < 0.5:
        return render_xml(make_action("str_replace_editor", {"command": "view", "path": path,
                                                             "view_range": [rng.randint(1, 200),
                                                                     rng.randint(201, 400)]}))
    old = _code(rng, _size(rng) // 2)
    if kind < 0.9:
        new = "\n".join(line.replace("None", "default") if rng.random() < 0.3 else line for line in old.splitlines())
        args = {"command": "str_replace", "path": path, "old_str": old, "new_str": new + "\n" + _code(rng, 40)}
    else:
        args = {"command": "create", "path": path, "file_text": _code(rng, _size(rng))}
    return render_xml(make_action("str_replace_editor", args))


def perturb(text: str, rng: random.Random, pool: list[str]) -> str:
    """An answer a policy could give for the expert action ``text``."""
    roll = rng.random()
    if roll < 0.08:
        return text
    if roll < 0.18:
        return rng.choice(pool)  # a different step's action (often another tool)
    if roll < 0.28:
        return text[: max(40, int(len(text) * rng.uniform(0.3, 0.9)))] + "\n</parameter>\n</function>"
    if roll < 0.55:
        lines = text.splitlines()
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(lines))
            op = rng.random()
            if op < 0.4 and len(lines) > 3:
                del lines[i]
            elif op < 0.7:
                lines.insert(i, lines[rng.randrange(len(lines))])
            else:
                lines[i] = lines[i].replace("    ", "  ")
        return "\n".join(lines)
    chars = list(text)
    for _ in range(max(1, int(len(chars) * rng.uniform(0.005, 0.08)))):
        i = rng.randrange(len(chars))
        op = rng.random()
        if op < 0.33:
            chars[i] = rng.choice("abcdefghijklmnopqrstuvwxyz_ .()=\n")
        elif op < 0.66:
            chars.insert(i, rng.choice("abcdefghijklmnopqrstuvwxyz_ "))
        elif len(chars) > 10:
            del chars[i]
    return "".join(chars)


def build_workload(samples: Path, seed: int = 0) -> tuple[list[str], list[list[str]], int]:
    rng = random.Random(seed)
    real = sample_actions(samples)
    experts = (real * (TARGETS // len(real) + 1))[:TARGETS] if len(real) >= TARGETS // 4 else real[:]
    while len(experts) < TARGETS:
        experts.append(synthetic_action(rng))
    rng.shuffle(experts)
    pool = list(dict.fromkeys(experts))
    answers = [[perturb(e, rng, pool) for _ in range(GROUP)] for e in experts]
    return experts, answers, len(real)


def interleaved_medians(methods: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds per method; the methods take turns within each repeat so that load
    from other processes on a shared machine hits all of them alike."""
    times: dict[str, list[float]] = {name: [] for name in methods}
    for _ in range(repeats):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=SAMPLES_DIR)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    experts, answers, num_real = build_workload(args.samples)
    pairs = TARGETS * GROUP
    lengths = [len(a) for group in answers for a in group] + [len(e) for e in experts]
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"Python {platform.python_version()}")
    print(f"workload: {TARGETS} experts x {GROUP} answers = {pairs} pairs; {num_real} distinct real "
          f"actions from {args.samples}; text length median {statistics.median(lengths):.0f}, max {max(lengths)}")

    def stdlib() -> list[float]:
        return [difflib.SequenceMatcher(None, a, e, autojunk=False).ratio()
                for e, group in zip(experts, answers) for a in group]

    def mode(name: str) -> Callable[[], list[float]]:
        return lambda: [s for e, group in zip(experts, answers) for s in similarities(group, e, name)]

    completions = [format_completion("reasoning", a) for group in answers for a in group]
    rows = [{"target": e} for e in experts for _ in range(GROUP)]
    reward = SimilarityReward(RewardConfig(similarity="cydifflib"))
    methods = {"stdlib difflib (baseline)": stdlib, "difflib mode (grouped)": mode("difflib"),
               "cydifflib mode (exact)": mode("cydifflib"), "lcs mode (rapidfuzz Indel)": mode("lcs"),
               "SimilarityReward(cydifflib) e2e": lambda: reward(completions, rows)}
    reference = stdlib()
    diffs = {name: [abs(v - r) for v, r in zip(mode(m)(), reference)]
             for name, m in (("difflib mode (grouped)", "difflib"), ("cydifflib mode (exact)", "cydifflib"),
                             ("lcs mode (rapidfuzz Indel)", "lcs"))}
    seconds = interleaved_medians(methods, args.repeats)
    base = seconds["stdlib difflib (baseline)"]
    print(f"{'method':<34}{'pairs/s':>10}{'x stdlib':>10}{'max |diff|':>12}{'mean |diff|':>13}")
    for name, secs in seconds.items():
        d = diffs.get(name, [0.0] if name.startswith("stdlib") else None)
        stats = f"{max(d):>12.2g}{statistics.fmean(d):>13.2g}" if d else f"{'(parsing incl.)':>25}"
        print(f"{name:<34}{pairs / secs:>10.0f}{base / secs:>10.2f}{stats}")
    valid = sum(1 for r in reward(completions, rows) if r is not None and r > -1)
    print(f"well-formed answers in the e2e run: {valid}/{pairs} (format violations skip the similarity)")


if __name__ == "__main__":
    main()
