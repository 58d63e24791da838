"""Honest figures for the first read: per-finding AUC and triage, overall, per image source, source-balanced.

    python -m core.training.evaluate_triage                   # active classifier; prints the tables
    python -m core.training.evaluate_triage --write-card      # ... and writes the chosen cuts and figures
                                                              #     into the model's card.json / MODEL_CARD.md

Every image of the validation and test splits of ``<shared data>/nih14`` goes through the product's own
path (``core.imaging.read_image`` -> the served classifier, LiteRT), so the figures are those of the
dashboard, not of a training-time pipeline. The outputs are cached under ``var/eval/``.

What is chosen, is chosen on the **validation** split only:

* the abnormality score's weights (rule v4), by ``core/training/fit_abnormality.py`` (fitted on the train
  split, chosen by validation AUC) before this runs; a card without them is evaluated as rule v3;
* the *routine cut* on the abnormality score (``core.ml.triage.scores``): the largest cut that keeps at
  least 95 % of abnormal films, and 95 % of films with an urgent finding, out of routine, overall AND within
  every image source with at least ``MIN_SOURCE_ABNORMAL`` abnormal films. Requiring it per source is the
  step taken against the source shortcut: a cut tuned on the pooled split could lean on the source that is
  almost all abnormal and fail on the others;
* the urgent cuts stay the card's per-finding rule-in thresholds (validation specificity >= 0.95).

The **test** split is only measured: per-finding AUC (95 % CI, bootstrap over patients), the abnormality
AUC, and the triage figures a doctor cares about (No Finding films sent to routine; films with an urgent
finding kept out of routine, made urgent; urgent PPV), each overall, within each source and as a
source-balanced mean, plus re-weighted to the NIH-wide case mix (``nih_metadata``: 53.8 % No Finding, 20.7 %
with an urgent finding). The card's rule is measured next to the rules before it, each with its own routine
cut chosen on validation the same way (v3: 1 - prod(1 - p); v2: no routine cut), and against the previous
rule paired (the same test films, one bootstrap over patients), so a gain is a difference with a CI. The
shortcut check: how well the network's pooled features predict the image source (logistic regression,
cross-validated by patient), against always guessing the largest source.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from core import imaging
from core.config import get_settings
from core.ml import triage
from core.ml.classifier import Classifier
from core.ml.registry import active_model_dir
from core.training.model_card import put_section

log = logging.getLogger("evaluate_triage")

SENSITIVITY = 0.95
MIN_SOURCE_ABNORMAL = 20  # a source with fewer abnormal validation films cannot pin a 95 % cut
MIN_SOURCE_FILMS = 20  # sources with fewer test films are pooled into the overall figure only
BOOTSTRAP = 1000
NF, URGENT_GROUP, OTHER = "No Finding", "urgent finding", "other abnormal"


@dataclass(frozen=True)
class Reads:
    """The served classifier's outputs on one split, with the truth and where each film came from."""

    probs: np.ndarray  # (N, F) calibrated
    pooled: np.ndarray  # (N, C) pooled last-layer features
    labels: np.ndarray  # (N, F) 0/1
    patients: np.ndarray
    sources: np.ndarray
    refused: np.ndarray  # (N,) bool: the plausibility rules refused the film (figures use its read anyway)

    def subset(self, mask: np.ndarray) -> Reads:
        return Reads(
            *(
                a[mask]
                for a in (self.probs, self.pooled, self.labels, self.patients, self.sources, self.refused)
            )
        )


# ------------------------------------------------------------------------------------------ reading


def read_split(classifier: Classifier, table: pd.DataFrame, root: Path) -> Reads:
    """Run every film of ``table`` through the product's reader and the served classifier."""
    names = list(classifier.finding_names)
    probs, pooled, refused = [], [], []
    for i, rel in enumerate(table["path"]):
        image = imaging.read_image((root / rel).read_bytes(), rel)
        try:
            imaging.check_plausible_chest(image)
            refused.append(False)
        except imaging.ImageRejected:
            refused.append(True)
        result = classifier.classify(image.pixels)
        probs.append([result.probabilities[n] for n in names])
        pooled.append(result.feature_map.mean(axis=(0, 1)))
        if (i + 1) % 100 == 0:
            log.info("  %d/%d films read", i + 1, len(table))
    return Reads(
        np.asarray(probs, dtype=np.float64),
        np.asarray(pooled, dtype=np.float32),
        table[names].to_numpy(dtype=np.int8),
        table["patient_id"].to_numpy(),
        table["source"].to_numpy(),
        np.asarray(refused),
    )


def load_reads(
    classifier: Classifier, data_dir: Path, cache_dir: Path, splits: Sequence[str] = ("val", "test")
) -> dict[str, Reads]:
    """The reads of ``splits`` (validation and test by default), cached per model version (the images never
    change)."""
    table = pd.read_csv(data_dir / "nih14" / "labels.csv")
    table = table[table["duplicate_of_other_row"] == 0].reset_index(drop=True)
    out = {}
    for split in splits:
        cache = cache_dir / f"{classifier.version}-{split}.npz"
        rows = table[table["split"] == split].reset_index(drop=True)
        if cache.exists():
            z = np.load(cache, allow_pickle=True)
            if len(z["probs"]) == len(rows):
                out[split] = Reads(
                    *(z[k] for k in ("probs", "pooled", "labels", "patients", "sources", "refused"))
                )
                continue
        log.info("reading the %s split (%d films) through the product path", split, len(rows))
        reads = read_split(classifier, rows, data_dir / "nih14")
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, **{k: getattr(reads, k) for k in Reads.__dataclass_fields__})
        out[split] = reads
    return out


# ------------------------------------------------------------------------------------------ the rule


def film_scores(
    classifier: Classifier, reads: Reads, policy: triage.TriagePolicy | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(abnormality, urgency) of every film under ``policy`` (default: the card's), by the runtime's own
    function."""
    rules = triage.rules_from_card(classifier.card)
    names = classifier.finding_names
    policy = policy or triage.policy_from_card(classifier.card)
    pairs = [triage.scores(rules, dict(zip(names, row, strict=True)), policy) for row in reads.probs]
    return np.array([a for a, _ in pairs]), np.array([u for _, u in pairs])


def levels(classifier: Classifier, reads: Reads, policy: triage.TriagePolicy) -> np.ndarray:
    """The triage level of every film under ``policy``."""
    rules = triage.rules_from_card(classifier.card)
    names = classifier.finding_names
    return np.array(
        [
            triage.assess(rules, dict(zip(names, row, strict=True)), 0.0, 0.0, policy).level
            for row in reads.probs
        ]
    )


def groups(classifier: Classifier, reads: Reads) -> np.ndarray:
    """No Finding / urgent finding / other abnormal, from the labels and the card's urgent findings."""
    urgent_idx = [i for i, f in enumerate(classifier.card["findings"]) if f.get("urgent")]
    abnormal = reads.labels.any(axis=1)
    urgent = reads.labels[:, urgent_idx].any(axis=1)
    return np.where(~abnormal, NF, np.where(urgent, URGENT_GROUP, OTHER))


def sensitive_cut(scores: np.ndarray, positive: np.ndarray, sensitivity: float = SENSITIVITY) -> float:
    """The largest cut with at least ``sensitivity`` of the positives at or over it."""
    pos = np.sort(scores[positive])
    if len(pos) == 0:
        return 1.0
    k = int(np.floor((1 - sensitivity) * len(pos) + 1e-9))
    return float(pos[min(k, len(pos) - 1)])


def choose_routine_cut(
    abnormality: np.ndarray, grp: np.ndarray, sources: np.ndarray
) -> tuple[float, dict[str, float]]:
    """The validation cut (module docstring) and the cut each constraint alone would allow."""
    abnormal, urgent = grp != NF, grp == URGENT_GROUP
    constraints = {
        "abnormal films, overall": sensitive_cut(abnormality, abnormal),
        "films with an urgent finding, overall": sensitive_cut(abnormality, urgent),
    }
    for source in sorted(set(sources)):
        mask = sources == source
        if (abnormal & mask).sum() >= MIN_SOURCE_ABNORMAL:
            constraints[f"abnormal films, {source}"] = sensitive_cut(abnormality, abnormal & mask)
    return min(constraints.values()), constraints


# ------------------------------------------------------------------------------------------ measuring


def _bootstrap(
    patients: np.ndarray,
    statistic: Callable[[np.ndarray], float | None],
    seed: int = 0,
    reps: int = BOOTSTRAP,
) -> list[float] | None:
    """95 % interval of ``statistic(index)`` over a bootstrap of patients."""
    rng = np.random.default_rng(seed)
    ids, inverse = np.unique(patients, return_inverse=True)
    members = [np.where(inverse == i)[0] for i in range(len(ids))]
    values = []
    for _ in range(reps):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(ids), len(ids))])
        v = statistic(idx)
        if v is not None and not np.isnan(v):
            values.append(v)
    if len(values) < reps // 2:
        return None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def _auc(y: np.ndarray, s: np.ndarray) -> float | None:
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None


def difference(
    a: Callable[[np.ndarray], float | None], b: Callable[[np.ndarray], float | None]
) -> Callable[[np.ndarray], float | None]:
    """The statistic ``a - b`` on the same drawn films (None where either is undefined): paired figures."""

    def stat(i: np.ndarray) -> float | None:
        x, y = a(i), b(i)
        return None if x is None or y is None else x - y

    return stat


def _fraction(hit: np.ndarray, among: np.ndarray) -> float | None:
    return float(hit[among].mean()) if among.any() else None


def _within(
    stat: Callable[[np.ndarray], float | None], idx: np.ndarray
) -> Callable[[np.ndarray], float | None]:
    """``stat`` of a bootstrap sample drawn from the films ``idx``."""
    return lambda b: stat(idx[b])


def measure(
    name: str,
    stat: Callable[[np.ndarray], float | None],
    n: int,
    patients: np.ndarray,
    sources: np.ndarray,
    seed: int,
) -> dict[str, Any]:
    """One statistic overall (with CI), per source, and source-balanced (mean over sources, with CI)."""
    everyone = np.arange(n)
    per_source: dict[str, Any] = {}
    big = [s for s in sorted(set(sources)) if (sources == s).sum() >= MIN_SOURCE_FILMS]
    for source in big:
        idx = np.where(sources == source)[0]
        value = stat(idx)
        per_source[source] = {
            "value": value,
            "ci95": _bootstrap(patients[idx], _within(stat, idx), seed) if value is not None else None,
            "films": int(len(idx)),
        }

    def balanced(idx: np.ndarray) -> float | None:
        found = [stat(idx[sources[idx] == s]) for s in big if (sources[idx] == s).any()]
        values = [v for v in found if v is not None]
        return float(np.mean(values)) if values else None

    overall = stat(everyone)
    bal = balanced(everyone)
    return {
        "name": name,
        "overall": {
            "value": overall,
            "ci95": _bootstrap(patients, stat, seed) if overall is not None else None,
        },
        "per_source": per_source,
        "source_balanced": {
            "value": bal,
            "ci95": _bootstrap(patients, balanced, seed) if bal is not None else None,
        },
    }


def triage_figures(
    level: np.ndarray, grp: np.ndarray, abnormality: np.ndarray, reads: Reads
) -> list[dict[str, Any]]:
    """The triage table of the issue, each figure overall / per source / source-balanced with CIs."""
    nf, urg, abn = grp == NF, grp == URGENT_GROUP, grp != NF
    routine, urgent_level = level == "routine", level == "urgent"
    stats: list[tuple[str, Callable[[np.ndarray], float | None]]] = [
        ("No Finding films that are routine", lambda i: _fraction(routine[i], nf[i])),
        ("urgent-finding films not routine", lambda i: _fraction(~routine[i], urg[i])),
        ("urgent-finding films that are urgent", lambda i: _fraction(urgent_level[i], urg[i])),
        ("urgent PPV (urgent films with an urgent finding)", lambda i: _fraction(urg[i], urgent_level[i])),
        ("abnormal films not routine", lambda i: _fraction(~routine[i], abn[i])),
        (
            "abnormality score AUC (abnormal vs No Finding)",
            lambda i: _auc(abn[i].astype(int), abnormality[i]),
        ),
    ]
    return [
        measure(n, s, len(level), reads.patients, reads.sources, seed) for seed, (n, s) in enumerate(stats)
    ]


def reweighted(level: np.ndarray, grp: np.ndarray, prevalence: dict[str, float]) -> dict[str, float]:
    """Triage figures at another case mix: per-group rates from the test split, weighted by ``prevalence``."""
    rate = {
        g: {lv: float((level[grp == g] == lv).mean()) for lv in triage.LEVELS}
        for g in prevalence
        if (grp == g).any()
    }
    share = {lv: sum(prevalence[g] * rate[g][lv] for g in rate) for lv in triage.LEVELS}
    urgent_true = prevalence[URGENT_GROUP] * rate[URGENT_GROUP]["urgent"]
    return {
        **{f"share {lv}": share[lv] for lv in triage.LEVELS},
        "urgent PPV": urgent_true / share["urgent"] if share["urgent"] else float("nan"),
        "No Finding routine": rate[NF]["routine"],
        "urgent finding not routine": 1 - rate[URGENT_GROUP]["routine"],
    }


def paired_differences(
    new: tuple[np.ndarray, np.ndarray], old: tuple[np.ndarray, np.ndarray], grp: np.ndarray, reads: Reads
) -> list[dict[str, Any]]:
    """Rule ``new`` minus rule ``old`` on the same films, each a (level, abnormality) pair: one bootstrap over
    patients draws both, so the CI is that of the difference (overall, per source, source-balanced)."""
    (level_new, abn_new), (level_old, abn_old) = new, old
    nf, urg, abn = grp == NF, grp == URGENT_GROUP, grp != NF
    r_new, r_old = level_new == "routine", level_old == "routine"

    stats: list[tuple[str, Callable[[np.ndarray], float | None]]] = [
        (
            "No Finding films that are routine",
            difference(lambda i: _fraction(r_new[i], nf[i]), lambda i: _fraction(r_old[i], nf[i])),
        ),
        (
            "urgent-finding films that are routine",
            difference(lambda i: _fraction(r_new[i], urg[i]), lambda i: _fraction(r_old[i], urg[i])),
        ),
        (
            "abnormal films that are routine",
            difference(lambda i: _fraction(r_new[i], abn[i]), lambda i: _fraction(r_old[i], abn[i])),
        ),
        (
            "abnormality score AUC (abnormal vs No Finding)",
            difference(
                lambda i: _auc(abn[i].astype(int), abn_new[i]), lambda i: _auc(abn[i].astype(int), abn_old[i])
            ),
        ),
    ]
    return [measure(n, s, len(grp), reads.patients, reads.sources, 200 + k) for k, (n, s) in enumerate(stats)]


def nih_prevalence(data_dir: Path, urgent: Sequence[str]) -> dict[str, float]:
    """Share of No Finding / urgent finding / other abnormal films in the full NIH label table."""
    table = pd.read_csv(
        data_dir / "nih_metadata" / "Data_Entry_2017_v2020.csv.gz", usecols=["Finding Labels"]
    )
    labels = table["Finding Labels"].str.split("|")
    nf = float((table["Finding Labels"] == "No Finding").mean())
    urg = float(labels.apply(lambda ls: any(f.replace(" ", "_") in urgent or f in urgent for f in ls)).mean())
    return {NF: nf, URGENT_GROUP: urg, OTHER: 1 - nf - urg, "films": float(len(table))}


def per_finding_auc(classifier: Classifier, reads: Reads) -> dict[str, Any]:
    """Per-finding AUC overall / per source / source-balanced, with CIs (sources need >= 3 positives)."""
    out = {}
    for k, name in enumerate(classifier.finding_names):
        y, p = reads.labels[:, k], reads.probs[:, k]

        def stat(i: np.ndarray, y: np.ndarray = y, p: np.ndarray = p) -> float | None:
            return _auc(y[i], p[i]) if y[i].sum() >= 3 else None

        out[name] = measure(name, stat, len(y), reads.patients, reads.sources, seed=100 + k)
        out[name]["positives"] = int(y.sum())
    return out


def mean_auc(per_finding: dict[str, Any], sources: Sequence[str]) -> dict[str, Any]:
    """The mean of the per-finding AUCs (findings with a value): overall, within each source, source-balanced."""
    valid = [f for f in per_finding.values() if f["overall"]["value"] is not None]
    return {
        "overall": float(np.mean([f["overall"]["value"] for f in valid])),
        "per_source": {
            s: float(
                np.nanmean([f["per_source"][s]["value"] or np.nan for f in valid if s in f["per_source"]])
            )
            for s in sources
        },
        "source_balanced": float(
            np.nanmean(
                [f["source_balanced"]["value"] or np.nan for f in valid if f["source_balanced"]["value"]]
            )
        ),
    }


def shortcut_check(val: Reads, test: Reads) -> dict[str, Any]:
    """How well pooled features predict the image source (grouped 5-fold CV over val + test patients)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = np.concatenate([val.pooled, test.pooled])
    src = np.concatenate([val.sources, test.sources])
    pat = np.concatenate([val.patients, test.patients])
    keep = np.isin(src, [s for s in set(src) if (src == s).sum() >= MIN_SOURCE_FILMS])
    x, src, pat = x[keep], src[keep], pat[keep]
    pred = np.empty_like(src)
    for train_idx, test_idx in GroupKFold(n_splits=5).split(x, src, pat):
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
        model.fit(x[train_idx], src[train_idx])
        pred[test_idx] = model.predict(x[test_idx])
    classes, counts = np.unique(src, return_counts=True)
    per_class = {c: float((pred[src == c] == c).mean()) for c in classes}
    return {
        "films": int(len(src)),
        "sources": {c: int(n) for c, n in zip(classes, counts, strict=True)},
        "accuracy": float((pred == src).mean()),
        "balanced_accuracy": float(np.mean(list(per_class.values()))),
        "chance_accuracy": float(counts.max() / counts.sum()),
        "chance_balanced_accuracy": 1.0 / len(classes),
        "recall_per_source": per_class,
    }


def flags_per_film(
    classifier: Classifier, reads: Reads, grp: np.ndarray, policy: triage.TriagePolicy
) -> dict[str, Any]:
    """Mean number of likely / possible findings shown per film, by group."""
    rules = triage.rules_from_card(classifier.card)
    names = classifier.finding_names
    tiers = [
        triage.assess(rules, dict(zip(names, row, strict=True)), 0.0, 0.0, policy) for row in reads.probs
    ]
    likely = np.array([len(t.likely) for t in tiers])
    possible = np.array([len(t.possible) for t in tiers])
    return {
        g: {"likely": float(likely[grp == g].mean()), "possible": float(possible[grp == g].mean())}
        for g in (NF, URGENT_GROUP, OTHER)
    }


# ------------------------------------------------------------------------------------------ reporting


def _fmt(entry: dict[str, Any] | None, pct: bool = True) -> str:
    if not entry or entry.get("value") is None:
        return "—"
    v, ci = entry["value"], entry.get("ci95")
    if pct:
        text = f"{v:.0%}" + (f" ({ci[0]:.0%}–{ci[1]:.0%})" if ci else "")
    else:
        text = f"{v:.3f}" + (f" ({ci[0]:.3f}–{ci[1]:.3f})" if ci else "")
    return text


def _short(source: str) -> str:
    return source.split("/")[-1]


def _fmt_diff(entry: dict[str, Any] | None, pct: bool = True) -> str:
    if not entry or entry.get("value") is None:
        return "—"
    v, ci = entry["value"], entry.get("ci95")
    if pct:
        return f"{v * 100:+.1f} pts" + (f" ({ci[0] * 100:+.1f} to {ci[1] * 100:+.1f})" if ci else "")
    return f"{v:+.3f}" + (f" ({ci[0]:+.3f} to {ci[1]:+.3f})" if ci else "")


def _rule(name: str) -> str:
    return name.replace("triage-", "")


def _score_words(name: str) -> str:
    if name == triage.RULE_VERSION:
        return "the fitted abnormality score (card `triage.abnormality`)"
    return "1 - prod(1 - p)"


def markdown(report: dict[str, Any]) -> str:
    sources = report["sources"]
    lines = [
        f"Rule `{report['rule']}`, classifier `{report['version']}`. Routine cut on "
        f"{_score_words(report['rule'])} **{report['routine_cut']:.3f}**, chosen on validation "
        f"({report['val_films']} films) as the smallest of:",
        "",
    ]
    lines += [f"- {k}: {v:.3f}" for k, v in report["cut_constraints"].items()]
    for name, before in report["before"].items():
        if before["routine_cut"] is not None:
            lines.append(
                f"\nRule `{name}` (before), for comparison: routine cut on {_score_words(name)} "
                f"{before['routine_cut']:.3f}, chosen on validation the same way."
            )
    lines += [
        "",
        f"Test split ({report['test_films']} films, patient-disjoint; 95 % CIs from {BOOTSTRAP} bootstraps over "
        "patients). Per source: sources with at least "
        f"{MIN_SOURCE_FILMS} test films; source-balanced = the mean of the per-source figures.",
        "",
        "| figure | rule | overall | " + " | ".join(_short(s) for s in sources) + " | source-balanced |",
        "|---|---|---|" + "---|" * len(sources) + "---|",
    ]
    tables = [(_rule(report["rule"]), report["triage"])]
    tables += [(f"{_rule(n)} (before)", b["triage"]) for n, b in report["before"].items()]
    for rule_name, figures in tables:
        for f in figures:
            pct = "AUC" not in f["name"]
            cells = [_fmt(f["per_source"].get(s), pct) for s in sources]
            lines.append(
                f"| {f['name']} | {rule_name} | {_fmt(f['overall'], pct)} | "
                + " | ".join(cells)
                + f" | {_fmt(f['source_balanced'], pct)} |"
            )
    lines += [
        "",
        f"Paired difference, rule `{report['rule']}` minus `{report['paired_vs']}` on the same test films "
        "(percentage points; 95 % CI from one bootstrap over patients drawing both):",
        "",
        "| difference | overall | " + " | ".join(_short(s) for s in sources) + " | source-balanced |",
        "|---|---|" + "---|" * len(sources) + "---|",
    ]
    for f in report["paired"]:
        pct = "AUC" not in f["name"]
        cells = [_fmt_diff(f["per_source"].get(s), pct) for s in sources]
        lines.append(
            f"| {f['name']} | {_fmt_diff(f['overall'], pct)} | "
            + " | ".join(cells)
            + f" | {_fmt_diff(f['source_balanced'], pct)} |"
        )
    prev = report["nih_prevalence"]
    shares = [(report["rule"], report["reweighted"])]
    shares += [(n, b["reweighted"]) for n, b in report["before"].items()]
    lines += [
        "",
        f"Re-weighted to the NIH-wide case mix ({prev['films']:,.0f} films: {prev[NF]:.1%} No Finding, "
        f"{prev[URGENT_GROUP]:.1%} with an urgent finding, {prev[OTHER]:.1%} other abnormal): "
        + "; ".join(
            f"rule {_rule(n)}{'' if n == report['rule'] else ' (before)'}: routine {rw['share routine']:.0%}, "
            f"priority {rw['share priority']:.0%}, urgent {rw['share urgent']:.0%} of the worklist, "
            f"urgent PPV {rw['urgent PPV']:.0%}"
            for n, rw in shares
        )
        + ".",
        "",
        "Findings shown per film on test (mean): "
        + "; ".join(
            f"{g}: {v['likely']:.1f} likely, {v['possible']:.1f} possible" for g, v in report["flags"].items()
        ),
        "",
        "| finding | test positives | AUC overall | "
        + " | ".join(_short(s) for s in sources)
        + " | source-balanced |",
        "|---|---|---|" + "---|" * len(sources) + "---|",
    ]
    for name, f in report["per_finding"].items():
        cells = [_fmt(f["per_source"].get(s), pct=False) for s in sources]
        lines.append(
            f"| {name} | {f['positives']} | {_fmt(f['overall'], False)} | "
            + " | ".join(cells)
            + f" | {_fmt(f['source_balanced'], False)} |"
        )
    means = report["mean_auc"]
    lines += [
        f"| **mean** | | {means['overall']:.3f} | "
        + " | ".join(f"{means['per_source'].get(s, float('nan')):.3f}" for s in sources)
        + f" | {means['source_balanced']:.3f} |",
        "",
    ]
    sc = report["shortcut"]
    lines += [
        f"Shortcut check: a linear probe on the network's pooled features names the image source of "
        f"{sc['accuracy']:.0%} of {sc['films']} val+test films (balanced accuracy {sc['balanced_accuracy']:.0%}; "
        f"chance {sc['chance_accuracy']:.0%} / {sc['chance_balanced_accuracy']:.0%}; 5-fold CV grouped by patient). "
        "The features carry the source well above chance, and the sources' label mixes differ sharply, so pooled "
        "figures are flattered by it: read the per-source and source-balanced columns. What this evaluation "
        "does about it: the routine cut must hold 95 % sensitivity within each source on validation, not only "
        "pooled (it costs No Finding films sent to routine: the pooled cut alone would route more).",
    ]
    return "\n".join(lines)


def rules_compared(
    classifier: Classifier, val: Reads
) -> dict[str, tuple[triage.TriagePolicy, dict[str, float]]]:
    """The card's rule first, then the rules before it, each with its routine cut chosen on ``val``:
    {rule name: (policy, the cut each constraint alone would allow)}."""
    base = triage.policy_from_card(classifier.card)
    grp = groups(classifier, val)
    scored = [base] if base.abnormality is not None else []
    scored.append(replace(base, abnormality=None))  # rule v3: 1 - prod(1 - p)
    out = {}
    for policy in scored:
        abnormality, _ = film_scores(classifier, val, policy)
        cut, constraints = choose_routine_cut(abnormality, grp, val.sources)
        chosen = replace(policy, routine_cut=cut)
        out[chosen.version] = (chosen, constraints)
    v2 = replace(base, abnormality=None, routine_cut=None)
    out[v2.version] = (v2, {})
    return out


def evaluate(model_dir: Path, data_dir: Path, cache_dir: Path) -> dict[str, Any]:
    classifier = Classifier(model_dir)
    reads = load_reads(classifier, data_dir, cache_dir)
    val, test = reads["val"], reads["test"]
    compared = rules_compared(classifier, val)
    grp = groups(classifier, test)
    urgent_names = [f["name"] for f in classifier.card["findings"] if f.get("urgent")]
    prevalence = nih_prevalence(data_dir, urgent_names)
    outcome = {}  # rule name -> (level, abnormality score) of every test film
    for name, (policy, _) in compared.items():
        outcome[name] = (levels(classifier, test, policy), film_scores(classifier, test, policy)[0])
    (rule, (policy, constraints)), (previous, _) = list(compared.items())[:2]
    level, abnormality = outcome[rule]
    per_finding = per_finding_auc(classifier, test)
    sources = sorted(s for s in set(test.sources) if (test.sources == s).sum() >= MIN_SOURCE_FILMS)
    return {
        "rule": rule,
        "version": classifier.version,
        "routine_cut": policy.routine_cut,
        "cut_constraints": constraints,
        "val_films": int(len(val.probs)),
        "test_films": int(len(test.probs)),
        "sources": sources,
        "triage": triage_figures(level, grp, abnormality, test),
        "reweighted": reweighted(level, grp, prevalence),
        "before": {
            name: {
                "routine_cut": p.routine_cut,
                "triage": triage_figures(*outcome[name][:1], grp, outcome[name][1], test),
                "reweighted": reweighted(outcome[name][0], grp, prevalence),
            }
            for name, (p, _) in list(compared.items())[1:]
        },
        "paired_vs": previous,
        "paired": paired_differences(outcome[rule], outcome[previous], grp, test),
        "nih_prevalence": prevalence,
        "flags": flags_per_film(classifier, test, grp, policy),
        "per_finding": per_finding,
        "mean_auc": mean_auc(per_finding, sources),
        "shortcut": shortcut_check(val, test),
        "refused_chest_films": int(val.refused.sum() + test.refused.sum()),
    }


def write_card(model_dir: Path, report: dict[str, Any], text: str) -> None:
    """Put the chosen cut into card.json's ``triage`` section and the tables into MODEL_CARD.md."""
    card_path = model_dir / "card.json"
    card = json.loads(card_path.read_text())
    card.setdefault("triage", {})
    card["triage"].update(
        {
            "rule": report["rule"],
            "routine_cut": round(report["routine_cut"], 6),
            "routine_cut_rule": "largest abnormality-score cut with validation sensitivity >= 0.95 to abnormal "
            "films and to urgent-finding films overall, and to abnormal films within each source",
            "routine_cut_for": "the fitted abnormality score (triage.abnormality)"
            if report["rule"] == triage.RULE_VERSION
            else "1 - prod(1 - p) over the findings",
        }
    )
    card["triage_evaluation"] = json.loads(json.dumps(report, default=float))
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    put_section(
        model_dir / "MODEL_CARD.md",
        "triage-evaluation",
        "Triage and source-stratified evaluation",
        "python -m core.training.evaluate_triage --write-card",
        text,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", type=Path, default=None, help="classifier version folder (default: active)"
    )
    parser.add_argument(
        "--write-card", action="store_true", help="write the cut and the figures into the card"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the whole report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = get_settings()
    model_dir = args.model or active_model_dir("classifier")
    report = evaluate(model_dir, settings.shared_data_dir, settings.var_dir / "eval")
    text = markdown(report)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=float) + "\n")
    if args.write_card:
        write_card(model_dir, report, text)
        print(f"\nwrote the triage section of {model_dir / 'card.json'} and {model_dir / 'MODEL_CARD.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
