"""Fit triage rule v4's abnormality score: a logistic regression on the findings' log-odds.

    python -m core.training.fit_abnormality                  # active classifier; prints the candidates
    python -m core.training.fit_abnormality --write-card     # ... and writes the chosen weights into card.json
    python -m core.training.evaluate_triage --write-card     # then: the routine cut for the new score

The score (``core.ml.triage.AbnormalityWeights``) is sigmoid(b + sum_i w_i * logit(p_i)) over the served
classifier's 14 calibrated probabilities p_i: abnormal = any of the 14 labels, against No Finding. Every film
of the **train** split goes through the product's own path (``evaluate_triage.load_reads``: the reader, the
served LiteRT classifier; cached under ``var/eval/``), and the candidates are fitted on those reads:

* the log-odds standardised on the train split (the standardisation is folded into b and w_i afterwards,
  so the runtime needs nothing else);
* every w_i >= 0: a higher probability of any finding never lowers the score (a doctor could not trust a
  read in which a more probable oedema makes the film look more normal). On this classifier the constraint
  costs nothing measurable (validation AUC 0.8345 against 0.8350 unconstrained);
* L2 penalty ``C`` in 0.01 / 0.1 / 1, and unweighted or source-balanced (each image source x abnormal/normal
  cell given equal weight, against the source shortcut).

The candidate with the best **validation** abnormality AUC (abnormal vs No Finding) is chosen; the test split
is not looked at here (``evaluate_triage`` measures it). Heads on the network's pooled features were tried
too (scratch experiment): they fit the training films' features and lose on validation (AUC 0.75-0.82), and
the runtime's triage sees only the probabilities, so they are not candidates.

The classifier was trained on the train split, so its reads there are more confident than on new films; the
head still has to rank validation films, which is what the choice measures. With ``--write-card`` the card's
old routine cut (chosen for the previous score) is removed, so until ``evaluate_triage --write-card`` chooses
the cut for the new score, the card runs rule v2's routine (more films priority, never fewer).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
from scipy.optimize import minimize
from sklearn.metrics import roc_auc_score

from core.config import get_settings
from core.ml import triage
from core.ml.classifier import Classifier
from core.ml.probability import logit
from core.ml.registry import active_model_dir
from core.training.evaluate_triage import MIN_SOURCE_FILMS, Reads, load_reads
from core.training.model_card import put_section

log = logging.getLogger("fit_abnormality")

PENALTIES = (0.01, 0.1, 1.0)  # C: the inverse L2 strength, as scikit-learn's LogisticRegression
WEIGHTINGS = ("unweighted", "source-balanced")


@dataclass(frozen=True)
class Candidate:
    """One fitted head and how it ranks the validation films."""

    name: str
    penalty: float
    weighting: str
    weights: triage.AbnormalityWeights
    train_auc: float
    val_auc: float
    val_auc_source_balanced: float | None


def abnormal(reads: Reads) -> np.ndarray:
    """Which films carry any of the findings (the rest are No Finding)."""
    return np.asarray(reads.labels.any(axis=1), dtype=bool)


def source_balanced_weights(reads: Reads) -> np.ndarray:
    """Per-film weights giving every (image source, abnormal or not) cell the same total, mean 1."""
    positive = abnormal(reads)
    w = np.zeros(len(positive))
    for source in set(reads.sources):
        for value in (False, True):
            cell = (reads.sources == source) & (positive == value)
            if cell.any():
                w[cell] = 1.0 / cell.sum()
    return w * len(w) / w.sum()


def fit_head(
    x: np.ndarray, y: np.ndarray, penalty: float, sample_weight: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """(intercept, weights >= 0) of an L2-penalised logistic regression on already standardised ``x``:
    minimises sum_n s_n * logloss_n + |w|^2 / (2 C) (the intercept is not penalised)."""
    s = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    y = y.astype(np.float64)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        b, w = theta[0], theta[1:]
        z = b + x @ w
        value = float(np.sum(s * (np.logaddexp(0.0, z) - y * z)) + w @ w / (2 * penalty))
        r = s * (1.0 / (1.0 + np.exp(-z)) - y)
        return value, np.concatenate([[r.sum()], x.T @ r + w / penalty])

    bounds = [(None, None)] + [(0.0, None)] * x.shape[1]
    result = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B", bounds=bounds)
    if not result.success:
        log.warning("the fit did not converge: %s", result.message)
    return float(result.x[0]), result.x[1:]


def fitted_weights(
    reads: Reads, names: tuple[str, ...], penalty: float, sample_weight: np.ndarray | None
) -> triage.AbnormalityWeights:
    """Fit on ``reads`` (log-odds standardised on them) and fold the standardisation into b and w_i."""
    x = logit(reads.probs)
    mu, sd = x.mean(axis=0), x.std(axis=0)
    sd = np.where(sd > 1e-9, sd, 1.0)
    b, w = fit_head((x - mu) / sd, abnormal(reads), penalty, sample_weight)
    raw = w / sd
    return triage.AbnormalityWeights(
        intercept=round(float(b - np.sum(raw * mu)), 6),
        logit_weights={n: round(float(v), 6) for n, v in zip(names, raw, strict=True)},
    )


def runtime_scores(weights: triage.AbnormalityWeights, reads: Reads, names: tuple[str, ...]) -> np.ndarray:
    """The abnormality score of every film by the runtime's own function (``triage.scores``)."""
    policy = triage.TriagePolicy(abnormality=weights)
    return np.array([triage.scores((), dict(zip(names, row, strict=True)), policy)[0] for row in reads.probs])


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None


def source_balanced_auc(reads: Reads, score: np.ndarray) -> float | None:
    """Mean of the per-source AUCs (sources with at least ``MIN_SOURCE_FILMS`` films and both classes)."""
    y = abnormal(reads)
    found = [
        _auc(y[reads.sources == s], score[reads.sources == s])
        for s in sorted(set(reads.sources))
        if (reads.sources == s).sum() >= MIN_SOURCE_FILMS
    ]
    values = [v for v in found if v is not None]
    return float(np.mean(values)) if values else None


def candidates(train: Reads, val: Reads, names: tuple[str, ...]) -> list[Candidate]:
    """Every (penalty, weighting) head fitted on ``train``, measured on ``val``."""
    out = []
    for weighting in WEIGHTINGS:
        sample_weight = source_balanced_weights(train) if weighting == "source-balanced" else None
        for penalty in PENALTIES:
            weights = fitted_weights(train, names, penalty, sample_weight)
            val_score = runtime_scores(weights, val, names)
            out.append(
                Candidate(
                    name=f"log-odds, {weighting}, C={penalty:g}",
                    penalty=penalty,
                    weighting=weighting,
                    weights=weights,
                    train_auc=_auc(abnormal(train), runtime_scores(weights, train, names)) or 0.0,
                    val_auc=_auc(abnormal(val), val_score) or 0.0,
                    val_auc_source_balanced=source_balanced_auc(val, val_score),
                )
            )
    return out


def choose(found: list[Candidate]) -> Candidate:
    """The best validation AUC (the first on a tie: the stronger penalty, unweighted)."""
    return max(found, key=lambda c: c.val_auc)


def product_score_aucs(train: Reads, val: Reads, names: tuple[str, ...]) -> dict[str, float | None]:
    """Rule v3's 1 - prod(1 - p), for comparison."""
    rules = tuple(triage.FindingRule(n, 0.5) for n in names)

    def score(reads: Reads) -> np.ndarray:
        return np.array([triage.scores(rules, dict(zip(names, r, strict=True)))[0] for r in reads.probs])

    v = score(val)
    return {
        "train_auc": _auc(abnormal(train), score(train)),
        "val_auc": _auc(abnormal(val), v),
        "val_auc_source_balanced": source_balanced_auc(val, v),
    }


def markdown(
    version: str,
    found: list[Candidate],
    chosen: Candidate,
    v3: dict[str, float | None],
    films: dict[str, int],
) -> str:
    def f(x: float | None) -> str:
        return f"{x:.3f}" if x is not None else "—"

    lines = [
        f"Classifier `{version}`. Logistic regression on the 14 findings' log-odds (weights >= 0), fitted on the "
        f"train split's reads ({films['train']} films), chosen by the abnormality AUC (abnormal vs No Finding) "
        f"on validation ({films['val']} films); the test split is measured by the triage evaluation below.",
        "",
        "| candidate | train AUC | validation AUC | validation AUC, source-balanced |",
        "|---|---|---|---|",
        f"| rule v3: 1 - prod(1 - p) (no fit) | {f(v3['train_auc'])} | {f(v3['val_auc'])} | "
        f"{f(v3['val_auc_source_balanced'])} |",
    ]
    for c in found:
        mark = " **(chosen)**" if c is chosen else ""
        lines.append(
            f"| {c.name}{mark} | {f(c.train_auc)} | {f(c.val_auc)} | {f(c.val_auc_source_balanced)} |"
        )
    weights = ", ".join(f"{n} {w:.3f}" for n, w in chosen.weights.logit_weights.items())
    lines += ["", f"Chosen weights on logit(p) (intercept {chosen.weights.intercept:.3f}): {weights}."]
    return "\n".join(lines)


def card_section(chosen: Candidate, found: list[Candidate], films: dict[str, int]) -> dict[str, Any]:
    """The card's ``triage.abnormality``: what the runtime reads, and how it was made."""
    return {
        **chosen.weights.as_dict(),
        "fitted_on": f"train split reads of the served classifier ({films['train']} films), abnormal = any of "
        "the 14 findings vs No Finding; log-odds standardised on train (folded into the weights); weights >= 0; "
        f"{chosen.weighting}, C={chosen.penalty:g}",
        "chosen_by": f"best validation abnormality AUC ({films['val']} films) among the candidates",
        "candidates": [
            {
                "name": c.name,
                "train_auc": round(c.train_auc, 4),
                "validation_auc": round(c.val_auc, 4),
                "validation_auc_source_balanced": None
                if c.val_auc_source_balanced is None
                else round(c.val_auc_source_balanced, 4),
            }
            for c in found
        ],
        "validation_auc": round(chosen.val_auc, 4),
        "command": "python -m core.training.fit_abnormality --write-card",
    }


def write_card(model_dir: Path, section: dict[str, Any], text: str) -> None:
    """Weights into card.json's ``triage`` section (dropping the routine cut chosen for the old score)."""
    card_path = model_dir / "card.json"
    card = json.loads(card_path.read_text())
    tri = card.setdefault("triage", {})
    tri["abnormality"] = section
    for stale in ("routine_cut", "routine_cut_rule"):
        tri.pop(stale, None)
    tri["rule"] = triage.policy_from_card(card).version
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    put_section(
        model_dir / "MODEL_CARD.md",
        "triage-abnormality",
        "Triage abnormality score (rule v4)",
        "python -m core.training.fit_abnormality --write-card",
        text,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="classifier version folder (default: active)"
    )
    parser.add_argument("--write-card", action="store_true", help="write the chosen weights into the card")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = get_settings()
    model_dir = args.model or active_model_dir("classifier")
    classifier = Classifier(model_dir)
    reads = load_reads(classifier, settings.shared_data_dir, settings.var_dir / "eval", ("train", "val"))
    train, val = reads["train"], reads["val"]
    names = tuple(classifier.finding_names)
    found = candidates(train, val, names)
    chosen = choose(found)
    films = {"train": len(train.probs), "val": len(val.probs)}
    text = markdown(classifier.version, found, chosen, product_score_aucs(train, val, names), films)
    print(text)
    if args.write_card:
        write_card(model_dir, card_section(chosen, found, films), text)
        print(
            f"\nwrote triage.abnormality into {model_dir / 'card.json'} (its routine cut removed) and "
            f"{model_dir / 'MODEL_CARD.md'}; now choose the routine cut for it: "
            "python -m core.training.evaluate_triage --write-card"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
