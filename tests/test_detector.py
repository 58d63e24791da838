"""The finding detector: offline tiny training -> export -> serving, box geometry, overlay, metrics, CLI.

The tiny run (4 training images at 64 px, one epoch) is built once per module with every socket call
refused and recorded, so it proves that training, ONNX export, validation and prediction never reach
for the network; it and every test that uses it are marked ``slow`` (``make test-fast`` leaves them out).
``test_published_model_finds_known_boxes`` runs only when ``models/registry.json``
names a detector; it is skipped until one is published.
"""

from __future__ import annotations

import csv
import io
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from core.imaging import read_image
from core.ml import inference
from core.ml.classifier import Classification
from core.ml.detector import Detection, Detector, decode, draw_detections, letterbox, to_model_input
from core.ml.registry import read_registry
from core.training import detector_metrics as dm
from core.training import nih_boxes
from tests.support.nih_samples import mini_nih_boxes

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "assets" / "samples"


# ------------------------------------------------------------------ the tiny offline run


class NetworkCalls(list):
    """Every attempted connection or DNS lookup, as (function, target)."""


@pytest.fixture(scope="module")
def network_calls() -> Iterator[NetworkCalls]:
    calls = NetworkCalls()

    def refuse(name: str):
        def guard(*args, **_kwargs):
            calls.append((name, args[1:2] if name.startswith("socket.") else args[:1]))
            raise OSError(f"network disabled in tests ({name})")

        return guard

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse("socket.connect"))
        mp.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
        mp.setattr(socket, "create_connection", refuse("create_connection"))
        mp.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
        yield calls


@pytest.fixture(scope="module")
def tiny_run(
    tmp_path_factory: pytest.TempPathFactory,
    network_calls: NetworkCalls,  # noqa: ARG001 - requested for its effect: the network is refused while training
) -> Path:
    """Train 1 epoch on 4 images at 64 px, evaluate, export; returns the package folder."""
    from core.training.evaluate_detector import evaluate
    from core.training.train_detector import train

    base = tmp_path_factory.mktemp("tiny_detector")
    data = nih_boxes.build_yolo_dataset(base / "data", data_dir=mini_nih_boxes(base / "source"))
    train(base / "run", data, imgsz=64, epochs=1, batch=2, workers=0, patience=5)
    return evaluate(base / "run", check_images=2)


@pytest.fixture(scope="module")
def tiny(tiny_run: Path) -> Detector:
    return Detector(tiny_run)


@pytest.mark.slow
def test_tiny_offline_training_gives_loadable_model_and_onnx(tiny_run, network_calls):
    from ultralytics import YOLO  # already configured by tiny_run (core.training imports core.ml.yolo_env)
    from ultralytics.utils import ONLINE, SETTINGS

    card = json.loads((tiny_run / "card.json").read_text())
    assert [c["name"] for c in card["classes"]] == list(nih_boxes.CLASSES)
    assert card["input"]["size"] == 64 and card["training"]["epochs"] == 1
    train = json.loads((tiny_run.parent / "train.json").read_text())
    assert train["torch_threads_seen"] == [2]  # not the 1 thread Ultralytics' CPU selection sets here
    assert (tiny_run / "model.pt").stat().st_size > 1e6 and (tiny_run / "model.onnx").stat().st_size > 1e6
    assert card["runtime"]["serving"] == "onnxruntime"  # ONNX matched PyTorch
    assert card["runtime"]["max_abs_diff_scores"] < 1e-3
    assert (
        "mAP50" in (tiny_run / "MODEL_CARD.md").read_text()
        and "NIH Clinical Center" in (tiny_run / "MODEL_CARD.md").read_text()
    )
    # Ultralytics' own predictor on the exported model, still offline
    results = YOLO(str(tiny_run / "model.onnx"), task="detect").predict(
        str(SAMPLES / "00000310_001.png"), imgsz=64, device="cpu", verbose=False
    )
    assert len(results) == 1
    assert not ONLINE and SETTINGS["sync"] is False
    assert network_calls == [], f"network reached for: {network_calls}"
    with pytest.raises(OSError):  # and the guard was live: it would have seen one
        socket.create_connection(("192.0.2.1", 80), timeout=1)
    assert network_calls.pop()[0] == "create_connection"


def test_offline_settings_live_in_the_project():
    import core.ml.yolo_env

    config = core.ml.yolo_env.configure()
    from ultralytics.utils import AUTOINSTALL, USER_CONFIG_DIR

    assert Path(USER_CONFIG_DIR) == config / "Ultralytics"
    assert not AUTOINSTALL
    font = config / "Ultralytics" / "Arial.ttf"
    assert (
        font.read_bytes() == core.ml.yolo_env.font_source().read_bytes()
    )  # DejaVu Sans, copied, not fetched


@pytest.mark.slow
def test_both_runtimes_agree_on_real_images(tiny_run, tiny):
    torch_detector = Detector(tiny_run, runtime="pytorch")
    assert (tiny.runtime, torch_detector.runtime) == ("onnxruntime", "pytorch")
    for name in ("00000310_001.png", "00000583_045.png"):
        pixels = read_image((SAMPLES / name).read_bytes()).pixels
        x, _ = to_model_input(pixels, tiny.input_size)
        np.testing.assert_allclose(tiny.predict_raw(x), torch_detector.predict_raw(x), atol=1e-3)


def _predict_in_two_threads(detector: Detector, images: list[np.ndarray]) -> dict[tuple[int, int], tuple]:
    got: dict[tuple[int, int], tuple[Detection, ...]] = {}
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for round_ in range(3):
                image = images[(thread + round_) % 2]
                got[(thread, round_)] = detector.detect(image, confidence=0.001).detections
        except BaseException as exc:  # re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return got


@pytest.mark.slow
def test_two_threads_predicting_at_once_get_the_sequential_answers(tiny_run, tiny):
    images = [read_image((SAMPLES / n).read_bytes()).pixels for n in ("00000310_001.png", "00005869_001.png")]
    for detector in (tiny, Detector(tiny_run, runtime="pytorch")):
        expected = [detector.detect(p, confidence=0.001).detections for p in images]
        got = _predict_in_two_threads(detector, images)
        assert len(got) == 6
        for (thread, round_), dets in got.items():
            ref = expected[(thread + round_) % 2]
            assert [d.label for d in dets] == [d.label for d in ref]
            np.testing.assert_allclose([d.box for d in dets], [d.box for d in ref], atol=1e-3)


# ------------------------------------------------------------------ geometry, NMS, overlay (no model)


class StubRuntime:
    """Returns a fixed raw head output, whatever the input."""

    name = "stub"

    def __init__(self, raw: np.ndarray):
        self.raw = raw

    def __call__(self, _x: np.ndarray) -> np.ndarray:
        return self.raw[None]


def _stub_detector(tmp_path: Path, raw: np.ndarray, size: int = 64) -> Detector:
    card = {
        "version": "stub-1",
        "classes": [{"name": n} for n in nih_boxes.CLASSES],
        "input": {"size": size},
        "thresholds": {"confidence": 0.25, "nms_iou": 0.5, "max_detections": 20},
        "files": {"onnx": "model.onnx", "pytorch": "model.pt"},
        "runtime": {"serving": "onnxruntime"},
    }
    (tmp_path / "card.json").write_text(json.dumps(card))
    return Detector(tmp_path, runtime=StubRuntime(raw))


def _raw(boxes_xyxy: list[tuple[float, ...]], classes: list[int], scores: list[float], n_anchors: int = 8):
    raw = np.zeros((4 + len(nih_boxes.CLASSES), n_anchors), np.float32)
    for a, ((x1, y1, x2, y2), c, s) in enumerate(zip(boxes_xyxy, classes, scores, strict=True)):
        raw[:4, a] = ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)
        raw[4 + c, a] = s
    return raw


def test_boxes_come_back_in_the_original_pixels(tmp_path):
    # a 300 x 600 (h x w) film in a 64-px input: scale 64/600, drawn 64 x 32, padded 16 px above and below
    h, w, size = 300, 600, 64
    scale, pad_y = size / w, 16
    original = (120.0, 60.0, 420.0, 240.0)
    in_input = (
        original[0] * scale,
        original[1] * scale + pad_y,
        original[2] * scale,
        original[3] * scale + pad_y,
    )
    detector = _stub_detector(tmp_path, _raw([in_input], [2], [0.9]), size)
    result = detector.detect(np.zeros((h, w), np.float32))
    assert len(result.detections) == 1
    d = result.detections[0]
    assert d.label == "Effusion" and d.confidence == pytest.approx(0.9)
    np.testing.assert_allclose(d.box, original, atol=1e-3)
    assert result.model_version == "stub-1"
    assert d.as_dict() == {"label": "Effusion", "confidence": 0.9, "box": [120.0, 60.0, 420.0, 240.0]}


def test_letterbox_is_ultralytics_letterbox():
    """Serving preprocessing equals the letterbox Ultralytics applies when it predicts and validates."""
    from ultralytics.data.augment import LetterBox

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (301, 517), dtype=np.uint8)
    ours, lb = letterbox(grey, 64)
    theirs = LetterBox(new_shape=(64, 64), auto=False, stride=32)(image=np.repeat(grey[..., None], 3, axis=2))
    np.testing.assert_array_equal(ours, theirs[..., 0])
    assert (lb.pad_x, lb.pad_y) == (0, 13)


def test_nms_keeps_one_box_per_object_and_class():
    boxes = [(10, 10, 50, 50), (12, 11, 51, 52), (10, 10, 50, 50), (100, 100, 140, 150)]
    raw = _raw(boxes, [0, 0, 3, 0], [0.9, 0.8, 0.7, 0.6])
    kept_boxes, scores, classes = decode(raw, conf=0.25, iou=0.5, max_det=10)
    assert list(classes) == [0, 3, 0]  # the overlapping same-class box is suppressed, the other class stays
    np.testing.assert_allclose(scores, [0.9, 0.7, 0.6])
    assert len(decode(raw, conf=0.65, iou=0.5, max_det=10)[0]) == 2  # 0.9 and 0.7 pass; 0.8 is suppressed
    assert len(decode(raw, conf=0.25, iou=0.5, max_det=1)[0]) == 1


def test_overlay_draws_red_boxes_where_the_box_is():
    pixels = np.full((400, 300), 0.5, np.float32)
    image = draw_detections(pixels, [Detection("Effusion", 0.87, 50.0, 120.0, 250.0, 300.0)])
    assert image.mode == "RGB" and image.size == (300, 400)
    arr = np.asarray(image).astype(int)
    red = (arr[..., 0] > 200) & (arr[..., 1] < 80) & (arr[..., 2] < 80)
    assert red[200, 50] and red[300, 150] and red[250, 250]  # left, bottom and right edges
    assert not red[210, 150] and not red[390, 10]  # inside the box and far away: plain grey
    assert red[100:120, 50:150].mean() > 0.3  # the label tag above the box
    tag = arr[100:120, 50:150]
    assert ((tag[..., 0] > 240) & (tag[..., 1] > 240) & (tag[..., 2] > 240)).any()  # white text on it
    big = draw_detections(
        np.zeros((2048, 2048), np.float32), [Detection("Nodule/Mass", 0.5, 0, 0, 1024, 1024)]
    )
    assert big.size == (1024, 1024)


# ------------------------------------------------------------------ metrics and data set


def test_froc_counts_false_positives_over_every_image():
    truths = [
        (np.array([[0, 0, 10, 10]], float), np.array([0])),
        (np.array([[0, 0, 10, 10]], float), np.array([1])),
        (np.zeros((0, 4)), np.zeros(0, int)),  # a negative image
        (np.zeros((0, 4)), np.zeros(0, int)),
    ]
    preds = [
        (np.array([[0, 0, 10, 10], [50, 50, 60, 60]], float), np.array([0.9, 0.3]), np.array([0, 0])),
        (np.array([[0, 0, 10, 10]], float), np.array([0.5]), np.array([0])),  # right place, wrong class
        (np.array([[5, 5, 9, 9]], float), np.array([0.8]), np.array([0])),
        (np.zeros((0, 4)), np.zeros(0), np.zeros(0, int)),
    ]
    scored = dm.match(preds, truths, n_classes=2, iou=0.5)
    assert scored.true_positive.tolist() == [True, False, False, False]
    # sorted: 0.9 TP, 0.8 FP (1/4 per image), 0.5 FP (2/4), 0.3 FP (3/4); 1 of 2 boxes found
    assert dm.froc(scored, points=(0.0, 0.25, 1.0)) == {"0": 0.5, "0.25": 0.5, "1": 0.5}
    assert dm.froc(scored, points=(0.1,), cls=1) == {"0.1": 0.0}
    assert dm.threshold_at_fppi(scored, 0.0) == pytest.approx(0.9)
    assert dm.threshold_at_fppi(scored, 0.5) == pytest.approx(0.5)
    assert dm.at_threshold(scored, 0.8) == {"recall": 0.5, "precision": 0.5, "fp_per_image": 0.25}
    assert dm.average_precision(scored, 0) == pytest.approx(1.0)
    assert dm.average_precision(scored, 1) == 0.0


def test_agnostic_ap_counts_a_box_in_the_right_place_whatever_its_class():
    truths = [(np.array([[0, 0, 10, 10]], float), np.array([1]))]
    preds = [(np.array([[0, 0, 10, 10]], float), np.array([0.7]), np.array([0]))]  # right place, wrong class
    assert dm.average_precision(dm.match(preds, truths, 2), 1) == 0.0
    assert dm.average_precision(dm.agnostic((preds, truths)), 0) == pytest.approx(1.0)


def test_bootstrap_resamples_patients_and_brackets_the_point_figures():
    box = np.array([[0, 0, 10, 10]], float)
    hit = (box, np.array([0.9]), np.array([0]))
    miss = (np.array([[50, 50, 60, 60]], float), np.array([0.95]), np.array([0]))
    truths = [(box, np.array([0]))] * 6
    preds = [hit, hit, hit, miss, miss, miss]
    # patients a and b own the hits, c the misses: a patient's films always travel together
    groups = ["a", "a", "b", "c", "c", "c"]
    boot = dm.bootstrap(preds, truths, 1, groups, n=300, seed=1)
    assert "over 3 patients" in str(boot["method"])
    point = dm.average_precision(dm.match(preds, truths, 1), 0)
    ci = boot["per_class_ap50"][0]  # type: ignore[index]
    assert ci[0] <= point <= ci[1] and ci[0] < ci[1]
    # every replicate draws whole patients: with the misses' patient drawn, AP < 1; never drawn, AP = 1
    assert ci[1] == pytest.approx(1.0) and ci[0] == 0.0
    perfect = dm.bootstrap([hit] * 4, [(box, np.array([0]))] * 4, 1, list("abcd"), n=50)
    assert perfect["agnostic_ap50"] == [1.0, 1.0] and perfect["recall_at_fppi"]["0.05"] == [1.0, 1.0]  # type: ignore[index]


def test_class_set_covers_every_source_label_and_fuses_duplicates():
    # A property of the training data itself, so it reads ../shared/data; everything else here uses the
    # project's own samples.
    if not nih_boxes.data_root().is_dir():
        pytest.skip(f"training data not found at {nih_boxes.data_root()} (set CXR_SHARED_DATA)")
    truth = nih_boxes.read_ground_truth()
    assert {g.split for g in truth} == {"train", "val", "test"} and len(truth) == 1030
    counts = np.bincount(np.concatenate([g.classes for g in truth]), minlength=len(nih_boxes.CLASSES))
    assert counts.min() >= 50, dict(zip(nih_boxes.CLASSES, counts, strict=True))
    patients = {s: {g.image_index.split("_")[0] for g in truth if g.split == s} for s in ("train", "test")}
    assert not patients["train"] & patients["test"]
    fused = nih_boxes.fuse_duplicates(np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float))
    np.testing.assert_allclose(fused, [[0.5, 0.5, 10.5, 10.5], [50, 50, 60, 60]])
    assert all(b.max() <= 512 for g in truth for b in g.boxes)


# ------------------------------------------------------------------ the analysis and the CLI


class StubClassifier:
    """Stands in for the classifier so the CLI's detector part is tested without a classifier version."""

    # what triage reads from a classifier: its card's findings and its scope limit
    card = {"findings": [{"name": "Effusion", "threshold": 0.6, "urgent": True}]}
    scope = SimpleNamespace(threshold=2.0)
    film_check = None  # as a version fitted before the film check existed

    def classify(self, _pixels: np.ndarray) -> Classification:
        return Classification(
            probabilities={"Effusion": 0.5}, flagged=(), top3=(("Effusion", 0.5),), scope_score=0.5,
            in_scope=True, model_version="stub-classifier", timing_ms={"inference": 1.0},
            feature_map=np.zeros((1, 1, 1), np.float32),
        )  # fmt: skip


@pytest.fixture
def models_dir(tmp_path, configure, monkeypatch) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    configure(models_dir=folder)
    monkeypatch.setattr(inference, "get_classifier", lambda _model_dir=None: StubClassifier())
    return folder


def _diagnose_json(path: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    from core.__main__ import main

    assert main(["diagnose", str(path), "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.slow
def test_cli_json_has_detections_from_the_active_detector(tiny_run, models_dir, capsys):
    from core.training.evaluate_detector import publish

    publish(tiny_run, "tiny-1", models_dir=models_dir)
    assert read_registry(models_dir)["detector"] == "tiny-1"
    row = _diagnose_json(SAMPLES / "00000310_001.png", capsys)
    assert row["accepted"] and row["models"] == {"classifier": "stub-classifier", "detector": "tiny-1"}
    assert isinstance(row["detections"], list) and "detections_note" not in row
    for d in row["detections"]:
        assert d["label"] in nih_boxes.CLASSES and 0 <= d["confidence"] <= 1
        x1, y1, x2, y2 = d["box"]
        assert 0 <= x1 <= x2 <= 1024 and 0 <= y1 <= y2 <= 1024  # the PNG's own pixels
    assert row["timing_ms"]["detection"] > 0


@pytest.mark.usefixtures("models_dir")
def test_cli_without_a_detector_still_classifies(capsys):
    from core.__main__ import main

    row = _diagnose_json(SAMPLES / "00000310_001.png", capsys)
    assert row["accepted"] and row["findings"] == {"Effusion": 0.5}
    assert row["detections"] == [] and "detector" in row["detections_note"]
    assert row["models"] == {"classifier": "stub-classifier"} and "detection" not in row["timing_ms"]
    assert main(["diagnose", str(SAMPLES / "00000310_001.png")]) == 0
    assert "regions: no detector" in capsys.readouterr().out


# ------------------------------------------------------------------ the published model


def _sample_boxes() -> dict[str, list[tuple[str, tuple[float, ...]]]]:
    """Sample PNG -> [(detector class, box in its 1024-px pixels)] for the classes the detector knows."""
    out: dict[str, list[tuple[str, tuple[float, ...]]]] = {}
    with (SAMPLES / "labels.csv").open() as f:
        for row in csv.reader(f):
            if row[0] == "file" or not row[2]:
                continue
            for item in row[2].split(";"):
                label, coords = item.split(":")
                cls = nih_boxes.CLASS_MAP.get(label)
                if cls:
                    out.setdefault(row[0], []).append((cls, tuple(float(v) for v in coords.split(","))))
    return out


@pytest.mark.skipif(
    not read_registry(ROOT / "models").get("detector"), reason="no detector version published yet"
)
def test_published_model_finds_known_boxes():
    """At its operating threshold, the active detector marks a known region on the samples with boxes.

    00000310_001 is a test-split image and the other two are validation images: none was trained on.
    """
    detector = Detector(ROOT / "models" / "detector" / read_registry(ROOT / "models")["detector"])
    hits = []
    for name, boxes in _sample_boxes().items():
        detections = detector.detect(read_image((SAMPLES / name).read_bytes()).pixels).detections
        for d in detections:
            assert 0 <= d.x1 < d.x2 <= 1024 and 0 <= d.y1 < d.y2 <= 1024
        for cls, box in boxes:
            for d in detections:
                overlap = dm.iou_matrix(np.array([d.box]), np.array([box]))[0, 0]
                if d.label == cls and overlap >= 0.3:
                    hits.append((name, cls, round(float(overlap), 2)))
    assert hits, "the published detector marked none of the known regions on the sample films"


@pytest.mark.slow
def test_sample_overlay_round_trip_as_png(tiny):
    """The overlay of a real film encodes to PNG (what the page shows)."""
    pixels = read_image((SAMPLES / "00000583_045.png").read_bytes()).pixels
    result = tiny.detect(pixels, confidence=0.001, max_det=3)
    buf = io.BytesIO()
    draw_detections(pixels, result.detections).save(buf, format="PNG")
    assert Image.open(io.BytesIO(buf.getvalue())).size == (1024, 1024)
