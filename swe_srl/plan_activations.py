"""The activation and logits memory of one forward/backward pass, for ``swe-srl plan``.

Unlike parameters, gradients and optimizer states (exact counts, :mod:`swe_srl.plan`), these
are estimates of the tensors autograd keeps for the backward pass, term by term, for the
transformers decoder the trainer runs: RMSNorm upcasts to float32, SDPA (or eager, or flash
attention, which takes grouped k/v as they are), a gated SiLU MLP, autocast's casts of the
matmul inputs; plus the trainer's log-prob pass (float32 logits over the completion positions
only, not chunked). ``tests/test_plan.py`` holds them to within 15% of what autograd keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .model_shape import ModelShape

if TYPE_CHECKING:
    from .plan import Sharding, Workload

FLASH_ATTENTION = ("flash_attention_2", "flash_attention_3")


def layer_activation_bytes(shape: ModelShape, residual: int, compute: int, attn: str, seq: int) -> int:
    """Bytes one decoder layer keeps for its backward pass, per token.

    ``residual``: bytes of the residual stream (the weights' dtype; under autocast a float32
    model keeps a float32 stream); ``compute``: bytes of matmul inputs/outputs."""
    h, q, kv, i = shape.hidden_size, shape.q_dim, shape.kv_dim, shape.intermediate_size
    c = compute
    # Two RMSNorms: each keeps its float32 input and its normalised output for the weight.
    total = 2 * (4 * h + residual * h)
    if c < residual:  # autocast casts the inputs of q, k, v, gate and up separately, and keeps each
        total += 5 * c * h
    else:  # the two norm outputs, kept by the projections that read them
        total += 2 * residual * h
    if shape.qk_norm:
        total += (4 + c) * (q + kv)
    # SDPA keeps q, k, v, its output (which o_proj reads as is) and a logsumexp per head; with a
    # padding mask transformers repeats k and v to every query head first (flash attention
    # takes the groups as they are).
    kv_kept = kv if attn in FLASH_ATTENTION else q
    total += c * (2 * q + 2 * kv_kept) + 4 * shape.num_heads
    if attn == "eager":  # the softmax (float32) and its cast, per head and key
        total += shape.num_heads * seq * (4 + c)
    total += 4 * c * i  # gate, silu(gate), up, their product
    return total


@dataclass(frozen=True)
class Activations:
    saved: int
    """Kept from the forward pass to the end of the backward pass."""
    recompute: int
    """One layer recomputed during the backward pass (activation checkpointing only)."""
    logits: int
    """Float32 logits and their gradient temporaries in the backward pass."""


def activation_bytes(shape: ModelShape, w: Workload, sharding: Sharding, checkpointing: bool) -> Activations:
    """Activation and logits memory of one forward/backward pass on one GPU."""
    # FSDP2 gathers parameters in the compute dtype: the stream is bf16 and autocast casts nothing.
    residual = w.compute_bytes if sharding == "fsdp" else w.weight_bytes
    c = w.compute_bytes
    layer = layer_activation_bytes(shape, residual, c, w.attn_implementation, w.seq_tokens) * w.micro_tokens
    h = shape.hidden_size
    outer = (4 * h + residual * h + 8) * w.micro_tokens  # the final norm; the input ids
    outer += 2 * shape.head_dim * residual * w.micro_tokens  # rotary cos and sin, shared by the layers
    outer += c * h * w.logit_tokens  # the head's input, the completion positions gathered
    if w.attn_implementation not in FLASH_ATTENTION:
        outer += w.micro_sequences * w.seq_tokens ** 2  # the 4-D boolean padding mask
    if checkpointing:  # each layer keeps its input only
        saved, recompute = shape.num_layers * residual * h * w.micro_tokens + outer, layer
    else:
        saved, recompute = shape.num_layers * layer + outer, 0
    # float32 logits, then in the backward up to two float32 temporaries of their size (the
    # head's bf16 output lives only until the float32 copy is made)
    logits = w.logit_tokens * shape.vocab_size * (4 + 8)
    return Activations(saved=saved, recompute=recompute, logits=logits)
