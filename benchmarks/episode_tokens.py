"""Tokens forwarded per update for rlvr / hybrid episodes: one sequence per turn (before) vs one
masked sequence per episode (``episodes.pack`` with ``agent.context: conversation``, after).

The count is what the update puts through the model, prompt + completion tokens of every row
(``train/forward_tokens``), taken from the rows :func:`swe_srl.rl.sources.episode_rows` builds,
so it is exact and machine-independent (no timing: one run is the figure).

1. ``synthetic``: a 30-turn episode from a ~4k-token prompt, laid out as the agent's
   conversation mode lays it out (each prompt = the last prompt + its completion + the
   observation turn), with ``--completion`` tokens per answer and ``--observation`` tokens per
   observation turn. Before: every turn forwarded with its whole prefix; after: the final
   sequence once.
2. ``demo``: the 8 demo tasks' expert scripts replayed through the REAL agent loop in Docker
   (``swe_srl.agent.run_episode``, a scripted policy with a real tokenizer), once with window
   prompts (the default: issue + last 2 rounds, one row per turn) and once as whole
   conversations (one row per episode), plus the conversation's turns forwarded one by one.

    PYTHONPATH=. .venv/bin/python benchmarks/episode_tokens.py                        # both
    PYTHONPATH=. .venv/bin/python benchmarks/episode_tokens.py --skip-demo --turns 30 --prompt 4096
    PYTHONPATH=. .venv/bin/python benchmarks/episode_tokens.py --tokenizer runs/smollm2-135m
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def forwarded(rollouts, pack: bool) -> tuple[int, int, int]:
    """(tokens forwarded, rows, sampled tokens) of the update for ``rollouts``."""
    from swe_srl.rl.sources import episode_rows

    turns = sum(len(r.turns) for r in rollouts)
    rows, _ = episode_rows(rollouts, [0.0] * turns, "turn", pack=pack)
    return (sum(len(r.prompt_ids) + len(r.completion_ids) for _, r in rows), len(rows),
            sum(r.num_tokens for _, r in rows))


def _rollout(task, turns):
    from swe_srl.agent import Episode
    from swe_srl.harness import GradedEpisode
    from swe_srl.rl.sources import EpisodeRollout

    return EpisodeRollout(GradedEpisode(task, episode=Episode(result=None, turns=turns)), reward=0.0)


def synthetic(turns: int, prompt: int, completion: int, observation: int) -> dict:
    from swe_srl.agent import Turn
    from swe_srl.policy.base import Sample
    from swe_srl.schemas import Task

    ids = [1] * prompt
    out = []
    for _ in range(turns):
        done = [2] * completion
        out.append(Turn([], Sample("", tuple(ids), tuple(done), None, "stop"), None, ""))
        ids = ids + done + [3] * observation
    task = Task(instance_id="synthetic", repo="o/r", base_commit="0" * 40, problem_statement="?")
    before, rows_before, _ = forwarded([_rollout(task, out)], pack=False)
    after, rows_after, sampled = forwarded([_rollout(task, out)], pack=True)
    return {"before": before, "after": after, "rows_before": rows_before, "rows_after": rows_after,
            "sampled": sampled}


def demo(tokenizer_dir: Path) -> dict:
    from transformers import AutoTokenizer

    from swe_srl.agent import AgentConfig, run_episode
    from swe_srl.experts import load_scripts
    from swe_srl.policy.scripted import ScriptedPolicy
    from swe_srl.sandbox import SandboxConfig, open_sandbox
    from swe_srl.sandbox.images.source import ensure_image
    from swe_srl.tasks import load_tasks

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    tasks = load_tasks("demo")
    scripts = load_scripts(tasks)
    runs: dict[str, list] = {"window": [], "conversation": []}
    for task in tasks:
        image = ensure_image(task)
        for context in runs:
            policy = ScriptedPolicy([s.completion() for s in scripts[task.instance_id]], tokenizer=tokenizer)
            with open_sandbox(SandboxConfig(image=image, workdir=task.workdir)) as box:
                episode = run_episode(policy, box, task, AgentConfig(max_steps=40, context=context))
            if episode.result.exit_reason != "submitted":
                raise SystemExit(f"{task.instance_id} ({context}): the expert replay ended "
                                 f"{episode.result.exit_reason}")
            runs[context].append(_rollout(task, episode.turns))
    window, window_rows, _ = forwarded(runs["window"], pack=False)
    per_turn, turn_rows, _ = forwarded(runs["conversation"], pack=False)
    packed, packed_rows, sampled = forwarded(runs["conversation"], pack=True)
    return {"tasks": len(tasks), "turns": sum(len(r.turns) for r in runs["window"]), "window": window,
            "window_rows": window_rows, "per_turn": per_turn, "turn_rows": turn_rows, "packed": packed,
            "packed_rows": packed_rows, "sampled": sampled}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=30)
    parser.add_argument("--prompt", type=int, default=4096)
    parser.add_argument("--completion", type=int, default=150, help="tokens per answer")
    parser.add_argument("--observation", type=int, default=350, help="tokens per observation turn")
    parser.add_argument("--tokenizer", type=Path, default=None,
                        help="model folder whose tokenizer counts the demo (default: the tiny model, made offline)")
    parser.add_argument("--skip-demo", action="store_true", help="only the synthetic episode (no Docker)")
    args = parser.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    s = synthetic(args.turns, args.prompt, args.completion, args.observation)
    print(f"synthetic: {args.turns} turns from a {args.prompt}-token prompt, {args.completion} tokens per answer, "
          f"{args.observation} per observation turn ({s['sampled']} sampled tokens)")
    print(f"  per turn: {s['before']:,} tokens in {s['rows_before']} rows; one masked sequence: {s['after']:,} "
          f"tokens in {s['rows_after']} row -> {s['before'] / s['after']:.1f}x fewer")
    if args.skip_demo:
        return
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer_dir = args.tokenizer
        if tokenizer_dir is None:
            from swe_srl.tiny_model import make_tiny_model

            tokenizer_dir = make_tiny_model(Path(tmp) / "tiny", seed=0)
        d = demo(tokenizer_dir)
    print(f"demo experts: {d['tasks']} tasks, {d['turns']} turns, {d['sampled']:,} sampled tokens "
          f"(tokenizer {tokenizer_dir.name})")
    print(f"  window prompts, one row per turn (before): {d['window']:,} tokens in {d['window_rows']} rows")
    print(f"  whole conversation, one row per turn:      {d['per_turn']:,} tokens in {d['turn_rows']} rows "
          f"({d['per_turn'] / d['packed']:.1f}x the packed)")
    print(f"  whole conversation, one row per episode:   {d['packed']:,} tokens in {d['packed_rows']} rows "
          f"({d['window'] / d['packed']:.2f}x fewer than before)")


if __name__ == "__main__":
    main()
