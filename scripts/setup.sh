#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with alignflow (editable) and the
# extras the demo and the tests need. Re-runs pip only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" - <<'PYCHECK'
import sys
if sys.version_info < (3, 10):
    sys.exit(f"alignflow needs Python >= 3.10, this is {sys.version.split()[0]}")
PYCHECK
[ -x .venv/bin/python ] || "$PY" -m venv .venv
stamp=.venv/.alignflow-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ "$0" -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[image,video,speech,dev]"
  # PIQE: pypiqe declares the GUI build of OpenCV but needs only cv2 (headless has it).
  .venv/bin/python -m pip install --quiet --no-deps "pypiqe==1.2"
  # resemblyzer, only for the test that alignflow's port of its speaker encoder embeds
  # as it does (it declares the `typing` backport and the source-only webrtcvad).
  .venv/bin/python -m pip install --quiet --no-deps "resemblyzer==0.1.4"
  # f5-tts, only for the tests that alignflow's F5 DiT, sampler and exports match F5-TTS's
  # own classes: its model code, x-transformers and torchdiffeq (its ODE solver), without
  # its app (gradio, wandb, ...), which it declares but the model does not import (pip's
  # note that they are missing is silenced; the two go first, so that their install does
  # not repeat the note).
  .venv/bin/python -m pip install --quiet "x-transformers>=1.31" "torchdiffeq>=0.2.4"
  .venv/bin/python -m pip install --quiet --no-deps "f5-tts==1.1.22" 2>/dev/null
  touch "$stamp"
fi
# System programs (Debian packages) the tests and demos use: the tesseract OCR engine,
# flite, whose voices make the offline speech corpus, and chromium, in which the tests
# read the HTML reports (Playwright drives it; its own browser download needs the net).
if { ! command -v tesseract >/dev/null 2>&1 || ! command -v flite >/dev/null 2>&1 \
      || ! command -v chromium >/dev/null 2>&1; } \
    && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends tesseract-ocr tesseract-ocr-eng flite chromium >/dev/null
fi
