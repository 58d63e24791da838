"""Join trained classifier runs into one network that averages their probabilities, so an ensemble is served,
evaluated and promoted like any single classifier.

    python -m core.training.ensemble var/runs/cls-lite0-224-imagenet var/runs/cls-lite2-260-imagenet \
        --out var/runs/ens-lite0-lite2
    scripts/publish_classifier.sh var/runs/ens-lite0-lite2 cxr14-ens-lite0-lite2-v1

The joined network takes the largest member's input size; a member trained at a smaller size gets the image
resized inside the graph (bilinear, like LiteRT's builtin), so the product's reader resizes a film once. Its
outputs are those of every classifier here: the mean of the members' probabilities (calibrated afterwards on
validation by ``evaluate_classifier``, as for one network) and the feature map of the largest member, whose
``logits`` layer gives the heat map's weights. The run folder gets ``model.keras`` and a ``train.json`` that
names the members and sums their fit times.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras

FEATURES_MEMBER = (
    "member_features"  # the nested model whose feature map (and logits layer) the ensemble shows
)


def load_member(run: Path, name: str) -> keras.Model:
    model = keras.saving.load_model(run / "model.keras", compile=False)
    model.name = name
    return model


def join(runs: list[Path]) -> keras.Model:
    """One Keras model: image -> [mean probabilities, the largest member's feature map]."""
    sizes = [json.loads((r / "train.json").read_text())["input_size"] for r in runs]
    size = max(sizes)
    lead = sizes.index(size)
    image = keras.Input((size, size, 1), name="image")
    probabilities, features = [], None
    for i, (run, s) in enumerate(zip(runs, sizes, strict=True)):
        member = load_member(run, FEATURES_MEMBER if i == lead else f"member_{i}")
        x = (
            image
            if s == size
            else keras.layers.Resizing(s, s, interpolation="bilinear", name=f"resize_{i}")(image)
        )
        p, f = member(x)
        probabilities.append(p)
        if i == lead:
            features = f
    mean = keras.layers.Average(name="probabilities")(probabilities)
    return keras.Model(image, [mean, features], name="cxr14")


def logits_layer(model: keras.Model) -> keras.layers.Layer:
    """The dense head whose weights turn the served feature map into a heat map (one network or an ensemble)."""
    try:
        return model.get_layer("logits")
    except ValueError:
        return model.get_layer(FEATURES_MEMBER).get_layer("logits")


def training_logits(model: keras.Model) -> Any:
    """The output a fine-tune trains through (``retrain_classifier``): one network's logits; for an ensemble,
    the log-odds of its mean probability, so every member learns from the doctors' readings."""
    try:
        return model.get_layer("logits").output
    except ValueError:
        mean = model.get_layer("probabilities").output
        return keras.layers.Lambda(_log_odds, name="mean_log_odds")(mean)


def _log_odds(p: Any) -> Any:
    p = keras.ops.clip(p, 1e-6, 1.0 - 1e-6)
    return keras.ops.log(p) - keras.ops.log1p(-p)


def train_record(runs: list[Path], command: str) -> dict[str, Any]:
    members = [json.loads((r / "train.json").read_text()) for r in runs]
    lead = max(members, key=lambda m: m["input_size"])
    return {
        **lead,
        "variant": "+".join(m["variant"] for m in members),
        "pretrained": "; ".join(str(m["pretrained"]) for m in members),
        "best_val_mean_auc": None,
        "history": [],
        "fit_seconds": sum(m["fit_seconds"] for m in members),
        "members": [
            {
                "run": str(r),
                **{k: m[k] for k in ("variant", "input_size", "best_epoch", "best_val_mean_auc", "command")},
            }
            for r, m in zip(runs, members, strict=True)
        ],
        "command": command,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "runs", type=Path, nargs="+", help="train_classifier run folders (model.keras, train.json)"
    )
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    if len(args.runs) < 2:
        p.error("an ensemble needs at least two runs")
    data = {json.loads((r / "train.json").read_text())["data_sha256"] for r in args.runs}
    if len(data) != 1:
        p.error(f"the runs were trained on different data ({sorted(map(str, data))})")
    args.out.mkdir(parents=True, exist_ok=True)
    model = join(args.runs)
    model.save(args.out / "model.keras")
    command = "python -m core.training.ensemble " + " ".join(map(str, args.runs)) + f" --out {args.out}"
    (args.out / "train.json").write_text(json.dumps(train_record(args.runs, command), indent=2))
    print(
        f"saved {args.out / 'model.keras'}: {' + '.join(m.name for m in model.layers if isinstance(m, keras.Model))}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
