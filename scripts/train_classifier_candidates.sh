#!/usr/bin/env bash
# Train the classifier candidates compared in models/classifier/*/MODEL_CARD.md, one after another
# (2 cores: running them side by side only slows each). Logs go next to each run's folder.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-var/runs}
mkdir -p "$RUNS"
run() {
  local name=$1; shift
  echo "== $name: $*"
  PYTHONUNBUFFERED=1 $PY -m core.training.train_classifier --out "$RUNS/$name" "$@" 2>&1 \
    | grep --line-buffered -v -E '^(W0000|I0000)|oneDNN|UserWarning|data_adapters' | tee "$RUNS/$name.log"
}
run cls-lite0-224-imagenet --variant lite0 --size 224 --epochs 8
run cls-lite0-160-imagenet --variant lite0 --size 160 --epochs 8
run cls-lite0-160-scratch --variant lite0 --size 160 --epochs 8 --scratch
