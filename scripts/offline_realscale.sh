#!/usr/bin/env bash
# benchmarks/realscale.py on an offline GPU machine (see scripts/offline_wheels.sh):
# installs .whl/ and this checkout into /tmp, checks the imports, runs every model
# and writes OUT_DIR/realscale.json and OUT_DIR/log.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: offline_realscale.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 3
PYTHONPATH=/tmp/site python3 -m pip install -q --no-index --no-deps --no-build-isolation \
  --no-compile --target /tmp/af . || exit 4
export PYTHONPATH=/tmp/af:/tmp/site
python3 -c "import torch, transformers, accelerate, peft, diffusers, datasets, hydra
import alignflow.sdk.trainer, alignflow.adapters.speech.f5
print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate',
      accelerate.__version__, 'peft', peft.__version__, 'diffusers', diffusers.__version__)" || exit 5
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
timeout "${REALSCALE_TIMEOUT:-500}" python3 benchmarks/realscale.py --out "$out/realscale.json" "${@:2}" \
  2>&1 | tee "$out/log.txt"
