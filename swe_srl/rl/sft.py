"""The supervised baseline: next-token cross-entropy on the expert's answer to each step target.

Same prompts as SRL (``prompts.messages_for_target``), same run directory, checkpoints, data
order and resume. The label is ``<think>...</think>`` followed by the expert action and the
end-of-turn token; with ``sft.target = action`` the think block is empty, with
``thought_action`` it holds the expert's thought where the source recorded one. The loss covers
the label tokens only (prompt tokens are masked) and is the mean over every label token of the
global batch, so one process and N processes take the same step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import SFTConfig
from ..prompts import format_completion, messages_for_target, render_prompt
from ..schemas import StepTarget
from .distributed import shard
from .logprobs import TokenBatch, autocast, completion_logprobs, micro_batches
from .optim import lr_at, optimizer_step
from .parallel import aligned_passes
from .prompt_budget import PromptBudget, fit_prompt
from .session import Session

END_OF_TURN = "<|im_end|>"


def end_of_turn_id(tokenizer: Any) -> int:
    """The token that closes an assistant turn (ChatML's ``<|im_end|>``, else eos): the
    model must learn to emit it, since sampling stops there."""
    vocab = tokenizer.get_vocab()
    if END_OF_TURN in vocab:
        return int(vocab[END_OF_TURN])
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has neither <|im_end|> nor an eos token")
    return int(tokenizer.eos_token_id)


def sft_completion(target: StepTarget, config: SFTConfig) -> str:
    """The label text of one step target."""
    thought = target.expert_thought if config.target == "thought_action" else ""
    return format_completion(thought, target.target)


def encode_example(tokenizer: Any, target: StepTarget, config: SFTConfig) -> tuple[list[int], list[int]] | None:
    """(prompt ids, label ids) of one step target within ``config.max_length`` tokens, or None
    when it cannot fit.

    Prompt and label are tokenised apart and concatenated, so the loss mask is exact. A
    sequence too long is shortened the way ``data.max_prompt_tokens`` shortens prompts: its
    oldest context rounds go first, then the middle of the issue; the system prompt (the output
    contract) and the head and tail of the issue always stay. The label is never cut (a
    half action ended by the end-of-turn token would teach the model to stop mid-call): a step
    target whose label leaves no room for its prompt is left out (None)."""
    label = list(tokenizer(sft_completion(target, config), add_special_tokens=False)["input_ids"])
    label.append(end_of_turn_id(tokenizer))
    room = config.max_length - len(label)

    def encode(t: StepTarget) -> list[int]:
        return list(tokenizer(render_prompt(tokenizer, messages_for_target(t)), add_special_tokens=False)["input_ids"])

    prompt = encode(target)
    if len(prompt) <= room:  # the common case: one tokenisation
        return prompt, label
    fitted = fit_prompt(tokenizer, target, room) if room > 0 else None
    return (encode(fitted), label) if fitted is not None else None


def sft_step(session: Session, indices: Sequence[int]) -> dict[str, float]:
    """One optimizer step of token-mean cross-entropy over the global batch ``indices`` (step
    targets whose prompt is over ``data.max_prompt_tokens`` shortened or skipped)."""
    cfg, d = session.config, session.dist
    budget = PromptBudget(session.tokenizer, cfg.data)
    targets = [budget.fit(session.items[i]) for i in shard(indices, d)]
    encoded = [encode_example(session.tokenizer, t, cfg.sft) for t in targets if t is not None]
    examples = [e for e in encoded if e is not None]
    (global_tokens, forward_tokens, too_long) = d.all_sum([
        sum(len(label) for _, label in examples), sum(len(p) + len(label) for p, label in examples),
        len(encoded) - len(examples)])
    loss_sum = 0.0
    shapes = [(len(prompt), len(label)) for prompt, label in examples]
    # fsdp: every rank runs as many passes as the busiest one (zero-weight padding passes).
    for part in aligned_passes(session, micro_batches(shapes, cfg.optim.grad_accumulation,
                                                      cfg.optim.max_tokens_per_microbatch)):
        batch = TokenBatch.build([examples[i][0] for i in part], [examples[i][1] for i in part],
                                 session.tokenizer.pad_token_id, d.device)
        with autocast(d.device, session.bf16):
            logprobs = completion_logprobs(session.model, batch, chunk_tokens=cfg.optim.logprob_chunk_tokens)
        loss = -(logprobs * batch.completion_mask).sum() / max(global_tokens, 1.0)
        loss.backward()
        loss_sum += float(loss.detach())
    lr = lr_at(cfg.optim, session.step, cfg.run.max_steps)
    grad_norm = optimizer_step(session.model, session.optimizer, cfg.optim, d, lr)
    (loss_total,) = d.all_sum([loss_sum])
    # train/tokens: the label tokens the loss covers; train/forward_tokens: every token forwarded
    # and back-propagated (prompts too): the step's compute.
    return {"train/loss": loss_total, "train/grad_norm": grad_norm, "train/lr": lr,
            "train/tokens": global_tokens, "train/forward_tokens": forward_tokens,
            "data/sft_too_long": too_long, **budget.metrics(d)}
