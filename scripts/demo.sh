#!/usr/bin/env bash
# The offline default: Flow-GRPO on the tiny SD3 digits model (experiment=image_digits).
# Writes outputs/image_digits/{report.html, reward_curve.png, samples/before_after.png,
# metrics.jsonl, summary.json}. Extra arguments are config overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/alignflow train experiment=image_digits "$@"
echo "report:       outputs/image_digits/report.html (open it in a browser, from disk)"
echo "reward curve: outputs/image_digits/reward_curve.png"
echo "samples:      outputs/image_digits/samples/before_after.png"
echo "metrics:      outputs/image_digits/metrics.jsonl, outputs/image_digits/summary.json"
