#!/usr/bin/env bash
# Wheels for running alignflow on an offline GPU machine that already has PyTorch,
# transformers, accelerate, peft, safetensors and huggingface_hub (a CUDA image): the
# other packages the trainer and benchmarks/realscale.py import, at the versions this
# checkout's .venv holds, for CPython 3.12 on x86-64 Linux, into .whl/ (git-ignored by
# the caller). Then on that machine: bash scripts/offline_realscale.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
version() { "$PY" -c "import importlib.metadata as m; print(m.version('$1'))"; }
mkdir -p .whl
platforms=(--platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_27_x86_64 --platform manylinux_2_28_x86_64 --platform manylinux_2_31_x86_64
           --platform manylinux_2_34_x86_64)
for pkg in diffusers importlib_metadata datasets dill multiprocess hydra-core omegaconf pypinyin rjieba \
           soundfile cffi pycparser soxr setuptools; do
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d .whl "$pkg==$(version "$pkg")"
done
# antlr4's runtime (hydra's parser) is published as a source archive only: build it
"$PY" -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$(version antlr4-python3-runtime)"
du -sh .whl
