#!/usr/bin/env bash
# The recommended detector training on this machine (2 CPU cores, nothing else running), then evaluation.
#
#   scripts/train_detector.sh                 # train (~40 min) and evaluate; publishing stays an explicit act
#   PUBLISH=1 scripts/train_detector.sh       # ... and publish as models/detector/$VERSION, made active
#   DEVICE=0 IMGSZ=512 EPOCHS=150 BATCH=32 scripts/train_detector.sh   # on a lent GPU
#   COCO=1 IMGSZ=384 scripts/train_detector.sh  # YOLOv5nu started from the COCO YOLOv5n backbone and neck
#
# Why these numbers: yolo11n from its yaml (no pretrained weights exist offline) trains at ~5 img/s at 512 px
# and ~9 img/s at 384 px on 2 cores (../shared/STACK.md); at 320 px about 13 img/s, i.e. ~60 s per epoch for
# 730 training images plus validation, so 40 epochs take ~40 min. From scratch, epochs buy more than pixels
# (the 384-px, 15-epoch one-class baseline reached test mAP50 0.057 with validation still rising), and 320 px
# still leaves a median nodule (64 px in the 1024 frame) at 20 px, above the stride-8 head's reach.
# The script prints one line per epoch with the time left; the full Ultralytics log goes to $RUNS/$NAME.log.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
RUNS=${RUNS:-var/runs}
IMGSZ=${IMGSZ:-320}
EPOCHS=${EPOCHS:-40}
BATCH=${BATCH:-16}
DEVICE=${DEVICE:-cpu}
if [[ "${COCO:-0}" == "1" ]]; then
  MODEL="$RUNS/yolov5nu-coco-init.pt"
  NAME=${NAME:-det-yolov5nu-coco-$IMGSZ-e$EPOCHS}
else
  MODEL=${MODEL:-yolo11n.yaml}
  NAME=${NAME:-det-yolo11n-$IMGSZ-e$EPOCHS}
fi
VERSION=${VERSION:-$NAME-$(date -u +%Y%m%d)}
mkdir -p "$RUNS"
if [[ "${COCO:-0}" == "1" ]]; then
  # reads the checkpoint's tensors only (sha256-checked, restricted unpickler): core/training/coco_init.py
  "$PY" -m core.training.coco_init --out "$MODEL"
fi

echo "== training $NAME (imgsz $IMGSZ, $EPOCHS epochs, batch $BATCH, device $DEVICE); log: $RUNS/$NAME.log"
PYTHONUNBUFFERED=1 "$PY" -m core.training.train_detector --out "$RUNS/$NAME" --model "$MODEL" \
  --imgsz "$IMGSZ" --epochs "$EPOCHS" --batch "$BATCH" --device "$DEVICE" --workers 1 --threads 2 \
  --patience 15 --close-mosaic 10 --seed 0 --cache disk 2>&1 \
  | tee "$RUNS/$NAME.log" | grep --line-buffered -E '^(epoch |best\.pt|done in)' \
  || { echo "training failed; the end of $RUNS/$NAME.log:"; tail -n 20 "$RUNS/$NAME.log"; exit 1; }

echo "== evaluating on the test split, exporting ONNX"
publish=()
if [[ "${PUBLISH:-0}" == "1" ]]; then publish=(--publish "$VERSION"); fi
PYTHONUNBUFFERED=1 "$PY" -m core.training.evaluate_detector "$RUNS/$NAME" "${publish[@]}" 2>&1 \
  | tee "$RUNS/$NAME.eval.log" | grep --line-buffered -E '^(exported|ONNX vs|test |package|published)' \
  || { echo "evaluation failed; the end of $RUNS/$NAME.eval.log:"; tail -n 20 "$RUNS/$NAME.eval.log"; exit 1; }
if [[ "${PUBLISH:-0}" != "1" ]]; then
  echo "== not published; to publish: $PY -m core.training.evaluate_detector $RUNS/$NAME --publish $VERSION"
fi
