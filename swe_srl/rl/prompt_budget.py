"""``data.max_prompt_tokens``: step targets whose prompt is too long for training are cut to
fit, or skipped, and counted (``data/truncated_prompts``, ``data/dropped_prompts``).

Cutting keeps what the action depends on most: the system prompt (the output contract), the
issue, and the most recent rounds. The oldest context rounds go first; only a prompt still too
long with none left loses the middle of its issue (head and tail kept, the cut marked).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from ..config import DataConfig
from ..dataset import truncate_middle
from ..prompts import messages_for_target, render_prompt
from ..schemas import StepTarget
from .distributed import Dist

TRUNCATED, DROPPED = "data/truncated_prompts", "data/dropped_prompts"


def prompt_tokens(tokenizer: Any, target: StepTarget) -> int:
    """Tokens of the prompt the policy sees for ``target`` (chat template included)."""
    text = render_prompt(tokenizer, messages_for_target(target))
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def fit_prompt(tokenizer: Any, target: StepTarget, max_tokens: int) -> StepTarget | None:
    """``target`` with a prompt of at most ``max_tokens`` tokens: itself when it fits, else its
    oldest context rounds left out, then the middle of its issue cut; None when not even a
    cut issue fits."""
    if prompt_tokens(tokenizer, target) <= max_tokens:
        return target
    for keep in range(len(target.context) - 1, -1, -1):
        shorter = replace(target, context=target.context[len(target.context) - keep:])
        if prompt_tokens(tokenizer, shorter) <= max_tokens:
            return shorter
    issue = target.problem_statement

    def cut(chars: int) -> StepTarget:
        return replace(target, context=(), problem_statement=truncate_middle(issue, chars))

    # The longest middle-cut issue that fits (the cut marker counts too): binary search on the
    # characters kept, a dozen tokenisations for a rare prompt.
    low, high = 0, len(issue) - 1
    while low < high:
        mid = (low + high + 1) // 2
        if prompt_tokens(tokenizer, cut(mid)) <= max_tokens:
            low = mid
        else:
            high = mid - 1
    return cut(low) if low > 0 and prompt_tokens(tokenizer, cut(low)) <= max_tokens else None


@dataclass
class PromptBudget:
    """Applies ``data.max_prompt_tokens`` / ``data.long_prompts`` to the step targets a step
    draws, counting what it did until :meth:`metrics` reports (and resets) the counts."""

    tokenizer: Any
    config: DataConfig
    truncated: int = 0
    dropped: int = 0

    @property
    def enabled(self) -> bool:
        return self.config.max_prompt_tokens > 0

    def fit(self, target: StepTarget) -> StepTarget | None:
        """The step target to train on (maybe shortened), or None to skip it."""
        if not self.enabled:
            return target
        limit = self.config.max_prompt_tokens
        if self.config.long_prompts == "drop":
            fitted = target if prompt_tokens(self.tokenizer, target) <= limit else None
        else:
            fitted = fit_prompt(self.tokenizer, target, limit)
        if fitted is None:
            self.dropped += 1
        elif fitted is not target:
            self.truncated += 1
        return fitted

    def metrics(self, dist: Dist) -> dict[str, float]:
        """This step's counts over every rank (none when no limit is set); resets them."""
        if not self.enabled:
            return {}
        truncated, dropped = dist.all_sum([self.truncated, self.dropped])
        self.truncated = self.dropped = 0
        return {TRUNCATED: truncated, DROPPED: dropped}
