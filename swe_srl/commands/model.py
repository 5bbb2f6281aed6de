"""`swe-srl init-model`: create the tiny offline model every default runs on."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from ..errors import ConfigError
from ..paths import DEFAULT_MODEL_DIR
from ..tiny_model import make_tiny_model


class Vocab(str, Enum):
    small = "small"
    qwen = "qwen"


def init_model(
    out_dir: Path = typer.Argument(DEFAULT_MODEL_DIR, help="Directory to write the model to."),
    tiny: bool = typer.Option(
        True, "--tiny/--no-tiny", help="Build the tiny Qwen2 model (the only kind for now)."
    ),
    vocab: Vocab = typer.Option(
        Vocab.small,
        "--vocab",
        help="small: a 2k BPE trained on bundled text (fast, for CI); qwen: the real Qwen2.5 vocabulary.",
    ),
    seed: int = typer.Option(0, "--seed", help="Weight initialisation seed."),
) -> None:
    """Create a tiny Qwen2 causal LM and tokenizer offline (no hub access needed)."""
    if not tiny:
        raise ConfigError("only --tiny models can be created; pass a model directory to train instead")
    path = make_tiny_model(out_dir, vocab=vocab.value, seed=seed)
    typer.echo(f"wrote tiny model ({vocab.value} vocab, seed {seed}) to {path}")


def register(app: typer.Typer) -> None:
    """Add ``init-model`` to the CLI."""
    app.command("init-model")(init_model)
