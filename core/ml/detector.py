"""Finding detector: grey pixels -> scored :class:`~core.ml.boxes.Box` records (label, confidence, corners).

preprocess -> predict -> postprocess, with everything that varies between versions (class names, input
size, confidence and NMS thresholds, the runtime) read from the version's ``card.json``.

- preprocess: the same letterbox as Ultralytics' (long side resized with bilinear interpolation to the
  input size, the rest padded with grey 114, centred), on the 8-bit image the training JPEGs were made of.
- predict: the network's raw head output ``(1, 4 + classes, anchors)`` (box centre/size in input pixels,
  per-class sigmoid scores), from ONNX Runtime when the version ships ``model.onnx`` and its card says the
  export matched PyTorch, else from the PyTorch checkpoint through Ultralytics.
- postprocess: best class per anchor, confidence threshold, per-class NMS in numpy, boxes mapped back
  through the letterbox to the original image's pixels.

Both runtimes share the pre- and post-processing, so switching runtime changes nothing but speed.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.imaging import to_uint8
from core.ml.boxes import Box

log = logging.getLogger(__name__)

PAD_VALUE = 114  # Ultralytics' letterbox grey
BOX_COLOUR = (255, 32, 32)


#: ``Detection(label, confidence, x1, y1, x2, y2)``: a detection is a scored :class:`Box`, built in the order
#: the network's output gives its parts.
Detection = Box.scored


@dataclass(frozen=True)
class DetectionResult:
    """The detector's read of one image."""

    detections: tuple[Box, ...]  # most confident first, each scored
    model_version: str
    timing_ms: dict[str, float]


@dataclass(frozen=True)
class Letterbox:
    """How an image was fitted into the square input: input = original * scale + (pad_x, pad_y)."""

    scale: float
    pad_x: int
    pad_y: int
    height: int  # original image
    width: int

    def to_original(self, boxes: np.ndarray) -> np.ndarray:
        """(N, 4) x1, y1, x2, y2 in input pixels -> original pixels, clipped to the image."""
        out = boxes.astype(np.float64).copy()
        out[:, [0, 2]] = ((out[:, [0, 2]] - self.pad_x) / self.scale).clip(0, self.width)
        out[:, [1, 3]] = ((out[:, [1, 3]] - self.pad_y) / self.scale).clip(0, self.height)
        return out


def letterbox(grey: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """uint8 (H, W) -> uint8 (size, size) as Ultralytics' ``LetterBox(auto=False, center=True)`` does it."""
    h, w = grey.shape
    scale = min(size / h, size / w)
    new_w, new_h = max(round(w * scale), 1), max(round(h * scale), 1)
    if (new_w, new_h) != (w, h):
        grey = cv2.resize(grey, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (size - new_w) / 2, (size - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    boxed = cv2.copyMakeBorder(grey, top, bottom, left, right, cv2.BORDER_CONSTANT, value=PAD_VALUE)
    return boxed, Letterbox(scale, left, top, h, w)


def to_model_input(pixels: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Grey [0, 1] pixels of any size -> (1, 3, size, size) float32 in [0, 1], and the letterbox."""
    boxed, lb = letterbox(to_uint8(pixels), size)
    x = np.repeat(
        (boxed.astype(np.float32) / 255.0)[None, None], 3, axis=1
    )  # grey trained as 3 equal channels
    return np.ascontiguousarray(x), lb


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, highest score first."""
    order = np.argsort(-scores, kind="stable")
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        tl = np.maximum(boxes[i, :2], boxes[rest, :2])
        br = np.minimum(boxes[i, 2:], boxes[rest, 2:])
        inter = np.prod(np.clip(br - tl, 0, None), axis=1)
        overlap = inter / (areas[i] + areas[rest] - inter + 1e-9)
        order = rest[overlap < iou]
    return np.array(keep, dtype=int)


def decode(
    raw: np.ndarray, conf: float, iou: float, max_det: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw head output (4 + C, A) -> boxes (N, 4) x1y1x2y2 in input pixels, scores (N,), classes (N,)."""
    preds = raw.T  # (A, 4 + C)
    class_scores = preds[:, 4:]
    classes = class_scores.argmax(axis=1)
    scores = class_scores[np.arange(len(preds)), classes]
    keep = scores >= conf
    xywh, scores, classes = preds[keep, :4], scores[keep], classes[keep]
    boxes = np.concatenate([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], axis=1)
    # one NMS for all classes, each class shifted to its own region: boxes of different classes never meet
    offset = classes[:, None].astype(np.float32) * (boxes.max(initial=0.0) + 1.0)
    kept = nms(boxes + offset, scores, iou)[:max_det]
    return boxes[kept], scores[kept], classes[kept]


def card_classes(card: dict[str, Any]) -> tuple[str, ...]:
    """The class names of a detector version, in index order, from its model card."""
    return tuple(str(c["name"]) for c in card["classes"])


#: a class draws boxes on the result page only if its validation AP50 reached this (evaluate_detector)
DRAWN_MIN_VAL_AP50 = 0.10


def drawn_classes(card: dict[str, Any]) -> tuple[str, ...]:
    """The classes whose boxes the product shows: the card's ``thresholds.drawn_classes`` (chosen on the
    validation split by ``evaluate_detector``); every class for cards from before that choice existed."""
    drawn = card.get("thresholds", {}).get("drawn_classes")
    return card_classes(card) if drawn is None else tuple(str(c) for c in drawn)


def choose_drawn_classes(val_per_class: dict[str, Any]) -> list[str]:
    """The rule the card records: classes whose validation AP50 is at least DRAWN_MIN_VAL_AP50."""
    return [name for name, m in val_per_class.items() if float(m.get("ap50") or 0.0) >= DRAWN_MIN_VAL_AP50]


@functools.cache
def read_classes(model_dir: Path) -> tuple[str, ...]:
    """The class names of the detector version in ``model_dir`` (its ``card.json``; a version never changes)."""
    return card_classes(json.loads((Path(model_dir) / "card.json").read_text()))


class Runtime(Protocol):
    """Runs the network: (1, 3, S, S) float32 -> raw head output (1, 4 + classes, anchors)."""

    name: str

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


class OnnxRuntime:
    """ONNX Runtime session; calls serialized so two requests never split the cores between them."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self._lock:
            return np.asarray(self._session.run(None, {self._input: x})[0])


class TorchRuntime:
    """The PyTorch checkpoint through Ultralytics (needs torch and torchvision); calls serialized."""

    name = "pytorch"

    def __init__(self, path: Path, threads: int):
        import core.ml.yolo_env

        core.ml.yolo_env.configure(threads)  # before ultralytics is imported: offline settings
        import torch
        from ultralytics.nn.tasks import load_checkpoint

        self._torch = torch
        self._threads = threads
        self._model, _ = load_checkpoint(path, device=torch.device("cpu"), fuse=True)
        self._lock = threading.Lock()

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with self._lock, self._torch.inference_mode():
            self._torch.set_num_threads(self._threads)
            out = self._model(self._torch.from_numpy(x))
            return (out[0] if isinstance(out, list | tuple) else out).numpy()


class Detector:
    """A loaded detector version. Thread-safe; load once per process and share.

    ``runtime``: "auto" (ONNX Runtime when the card says its outputs match PyTorch, else PyTorch),
    "onnxruntime", "pytorch", or a :class:`Runtime` object (a stub in tests).
    """

    def __init__(self, model_dir: Path, runtime: str | Runtime = "auto", threads: int = 2):
        self.model_dir = Path(model_dir)
        self.card: dict[str, Any] = json.loads((self.model_dir / "card.json").read_text())
        self.version: str = self.card["version"]
        self.classes: tuple[str, ...] = card_classes(self.card)
        self.drawn: frozenset[str] = frozenset(drawn_classes(self.card))
        self.input_size: int = int(self.card["input"]["size"])
        t = self.card["thresholds"]
        self.confidence: float = float(t["confidence"])
        self.iou: float = float(t["nms_iou"])
        self.max_det: int = int(t["max_detections"])
        files = self.card["files"]
        auto = runtime == "auto"
        if auto:
            onnx_ok = files.get("onnx") and (self.model_dir / files["onnx"]).exists()
            runtime = (
                "onnxruntime" if onnx_ok and self.card["runtime"]["serving"] == "onnxruntime" else "pytorch"
            )
        if runtime == "onnxruntime" and auto:
            try:
                import onnxruntime  # noqa: F401
            except ImportError:  # a machine without ONNX Runtime still serves, more slowly
                log.warning("onnxruntime is not installed; detector %s runs in PyTorch", self.version)
                runtime = "pytorch"
        if not isinstance(runtime, str):
            self._run: Runtime = runtime
        elif runtime == "onnxruntime":
            self._run = OnnxRuntime(self.model_dir / files["onnx"], threads)
        elif runtime == "pytorch":
            self._run = TorchRuntime(self.model_dir / files["pytorch"], threads)
        else:
            raise ValueError(f"unknown runtime {runtime!r}")
        self.runtime: str = self._run.name

    def predict_raw(self, x: np.ndarray) -> np.ndarray:
        """The head's raw output (4 + classes, anchors) for one preprocessed input."""
        return self._run(x)[0]

    def detect(
        self, pixels: np.ndarray, confidence: float | None = None, max_det: int | None = None
    ) -> DetectionResult:
        """Detect findings in one grey [0, 1] image of any size; boxes come back in its pixels.

        ``confidence`` defaults to the card's operating threshold, and then only the classes the card draws
        come back; evaluation passes a confidence and gets every class.
        """
        t0 = time.perf_counter()
        x, lb = to_model_input(pixels, self.input_size)
        t1 = time.perf_counter()
        raw = self.predict_raw(x)
        t2 = time.perf_counter()
        conf = self.confidence if confidence is None else confidence
        boxes, scores, classes = decode(raw, conf, self.iou, max_det or self.max_det)
        boxes = lb.to_original(boxes)
        detections = tuple(
            Box.scored(self.classes[int(c)], float(s), *(float(v) for v in b))
            for b, s, c in zip(boxes, scores, classes, strict=True)
            if confidence is not None or self.classes[int(c)] in self.drawn
        )
        t3 = time.perf_counter()
        return DetectionResult(
            detections=detections,
            model_version=self.version,
            timing_ms={
                "preprocess": (t1 - t0) * 1e3,
                "inference": (t2 - t1) * 1e3,
                "postprocess": (t3 - t2) * 1e3,
            },
        )


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow >= 10.1 ships a scalable default font: nothing to download, nothing to find on the system.
    return ImageFont.load_default(size=size)


def draw_detections(
    pixels: np.ndarray, detections: tuple[Box, ...] | list[Box], max_side: int = 1024
) -> Image.Image:
    """The radiograph in grey with a red box and a "label 87%" tag per detection; returns an RGB image.

    Images larger than ``max_side`` are shown shrunk (boxes scaled with them); line width and text size
    follow the shown size so the overlay reads the same on any film.
    """
    base = Image.fromarray(to_uint8(pixels)).convert("RGB")
    scale = 1.0
    if max(base.size) > max_side:
        scale = max_side / max(base.size)
        base = base.resize((round(base.width * scale), round(base.height * scale)), Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(base)
    side = max(base.size)
    width = max(2, round(side / 300))
    font = _font(max(10, round(side / 45)))
    for d in detections:
        x1, y1, x2, y2 = (v * scale for v in d.box)
        draw.rectangle((x1, y1, x2, y2), outline=BOX_COLOUR, width=width)
        text = f"{d.label} {d.confidence:.0%}"
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left, bottom - top
        ty = (
            y1 - th - 2 * width if y1 - th - 2 * width >= 0 else y1 + width
        )  # above the box, or inside it at the top
        tx = min(max(x1, 0), max(base.width - tw - 2 * width, 0))
        draw.rectangle((tx, ty, tx + tw + 2 * width, ty + th + 2 * width), fill=BOX_COLOUR)
        draw.text((tx + width - left, ty + width - top), text, fill=(255, 255, 255), font=font)
    return base
