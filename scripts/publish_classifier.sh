#!/usr/bin/env bash
# Publish a trained classifier run as a complete, servable version: everything the dashboard reads from a
# classifier's card is fitted for *that* network, on the train/validation splits only, and measured on test.
#
#   scripts/publish_classifier.sh var/runs/cls-lite1-240-imagenet cxr14-lite1-240-v1 [OTHER_RUN ...]
#
# 1. evaluate_classifier: calibration and thresholds (val), AUC with CIs (test), scope model, LiteRT export
#    checked against Keras; OTHER_RUNs (already evaluated) go into the card's candidates table
# 2. fit_film_check: what is refused or turned back (its own fit on this network's features)
# 3. fit_abnormality + evaluate_triage: triage-v4's abnormality weights (train) and routine cut (val)
# 4. evaluate_heatmaps: which findings' heat maps may be offered (pointing game, val)
# 5. evaluate_tta: the new version, the active one and their mean, chosen on val (TTA="plain rot6" adds
#    test-time rotations: each candidate costs a paired bootstrap, minutes on 2 cores)
# It never makes the version active: promotion is an admin's audited act
# (`python -m core models promote classifier VERSION --user ADMIN`, refused if it measures worse).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUN=$1
VERSION=$2
shift 2
MODEL=models/classifier/$VERSION
ACTIVE=models/classifier/$($PY -c 'from core.ml.registry import read_registry; print(read_registry()["classifier"])')
step() { echo "== $*"; PYTHONUNBUFFERED=1 "$@"; }
step "$PY" -m core.training.evaluate_classifier "$RUN" --publish "$VERSION" --compare "$RUN" "$@"
step "$PY" -m core.training.fit_film_check --model "$MODEL" --write
step "$PY" -m core.training.fit_abnormality --model "$MODEL" --write-card
step "$PY" -m core.training.evaluate_triage --model "$MODEL" --write-card
step "$PY" -m core.training.evaluate_heatmaps --model "$MODEL" --write-card
step "$PY" -m core.training.evaluate_tta --model "$MODEL" --model "$ACTIVE" --candidates ${TTA:-plain} --write-card
echo "published $MODEL (not active); compare and promote: python -m core models promote classifier $VERSION --user ADMIN"
