"""The supervised baseline: next-token cross-entropy on the expert's answer to each step target.

Same prompts as SRL (``prompts.messages_for_target``), same run directory, checkpoints, data
order and resume. The label is ``<think>...</think>`` followed by the expert action and the
end-of-turn token; with ``sft.target = action`` the think block is empty, with
``thought_action`` it holds the expert's thought where the source recorded one. The loss covers
the label tokens only (prompt tokens are masked) and is the mean over every label token of the
global batch, so one process and N processes take the same step.
"""

from __future__ import annotations

from typing import Any, Sequence

from ..config import SFTConfig
from ..prompts import format_completion, messages_for_target, render_prompt
from ..schemas import StepTarget
from .distributed import shard
from .logprobs import TokenBatch, autocast, completion_logprobs, micro_batches
from .optim import lr_at, optimizer_step
from .parallel import aligned_passes
from .prompt_budget import PromptBudget
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


def encode_example(tokenizer: Any, target: StepTarget, config: SFTConfig) -> tuple[list[int], list[int]]:
    """(prompt ids, label ids) of one step target, cut to ``config.max_length`` tokens.

    Prompt and label are tokenised apart and concatenated, so the loss mask is exact. A
    sequence too long loses the start of its prompt (the system prompt and issue come first;
    the most recent rounds, closest to the action, are kept)."""
    prompt = tokenizer(render_prompt(tokenizer, messages_for_target(target)), add_special_tokens=False)["input_ids"]
    label = tokenizer(sft_completion(target, config), add_special_tokens=False)["input_ids"]
    label = list(label)[: config.max_length - 1] + [end_of_turn_id(tokenizer)]
    room = max(1, config.max_length - len(label))
    return list(prompt)[-room:], label


def sft_step(session: Session, indices: Sequence[int]) -> dict[str, float]:
    """One optimizer step of token-mean cross-entropy over the global batch ``indices`` (step
    targets whose prompt is over ``data.max_prompt_tokens`` shortened or skipped)."""
    cfg, d = session.config, session.dist
    budget = PromptBudget(session.tokenizer, cfg.data)
    targets = [budget.fit(session.items[i]) for i in shard(indices, d)]
    examples = [encode_example(session.tokenizer, t, cfg.sft) for t in targets if t is not None]
    (global_tokens,) = d.all_sum([sum(len(label) for _, label in examples)])
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
    return {"train/loss": loss_total, "train/grad_norm": grad_norm, "train/lr": lr,
            "train/tokens": global_tokens, **budget.metrics(d)}
