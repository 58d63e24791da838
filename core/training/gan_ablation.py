"""Does adding a conditional GAN's films to training help the classifier on the rarest findings?

    python -m core.training.gan_ablation --generator models/gan/cgan-64-v1 --epochs 8 --seeds 0 1 2
    python -m core.training.gan_ablation --generator DIR --arms real repeat --seeds 0 1 2   # some runs only
    python -m core.training.gan_ablation --generator DIR --report-only     # table from the runs already made
    python -m core.training.gan_ablation --generator DIR --limit 64 --epochs 1 --seeds 0 --rare 2 \
        --per-finding 8 --work var/runs/gan-ablation-smoke --json var/runs/gan-ablation-smoke.json

The product's classifier (``train_classifier.build_classifier``, ImageNet lite0, its weighted loss, data
pipeline and validation-best epoch) is trained at 64 px, with the same recipe, in three arms:

* ``real``: the train split;
* ``synthetic``: the train split plus, for each of the ``--rare`` findings with the fewest train positives,
  ``--per-finding`` generated films, each conditioned on (and labelled with) the label vector of a train row
  positive for that finding, so co-occurring findings keep their real proportions;
* ``repeat``: the train split plus those very train rows repeated (the same rows whose label vectors
  conditioned the synthetic films): the fair baseline for "more rare examples", which costs nothing.

Each arm is trained with several seeds. Each (arm, seed) writes its test scores to ``--work``, so runs can be
spread over processes and the report rebuilt. The test split is only measured: per rare finding the AUC of
each seed (mean and spread), the AUC of the seed-averaged scores with a 95 % interval from a bootstrap over
patients, and the paired difference from ``real`` on the same bootstrap samples; the same for the mean AUC
over all 14 findings and over the rare ones; each overall, within each image source and source-balanced
(``evaluate_triage``'s measure). Nothing is chosen on the test split: the epoch count is fixed beforehand,
and each run's best epoch is chosen on validation mean AUC.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf
import torch
from scipy.stats import rankdata

from core.config import get_settings
from core.training import cgan, evaluate_triage
from core.training.evaluate_classifier import predict
from core.training.evaluate_triage import difference
from core.training.model_card import put_section
from core.training.nih14 import FINDINGS, Split, dataset_hash, load_splits, read_table
from core.training.train_classifier import build_classifier, fit

log = logging.getLogger("gan_ablation")

ARMS = ("real", "synthetic", "repeat")
SIZE = cgan.SIZE
MIN_POSITIVES = 3  # a finding's AUC within a bootstrap sample or a source needs at least this many positives


# ------------------------------------------------------------------------------------------ the training sets


def _spread(n_rows: int, n: int) -> np.ndarray:
    """``n`` row indices spread evenly over ``n_rows`` (rows are grouped by source, so the first n are not)."""
    return np.unique(np.linspace(0, n_rows - 1, min(n, n_rows)).astype(int))


def _take(split: Split, idx: np.ndarray) -> Split:
    return Split(split.images[idx], split.labels[idx], split.patient_ids[idx], split.image_index[idx])


def _concat(split: Split, images: np.ndarray, labels: np.ndarray, tag: str) -> Split:
    n = len(labels)
    return Split(
        np.concatenate([split.images, images]),
        np.concatenate([split.labels, labels.astype(split.labels.dtype)]),
        np.concatenate([split.patient_ids, np.full(n, -1, split.patient_ids.dtype)]),
        np.concatenate([split.image_index, np.array([f"{tag}_{i}" for i in range(n)], dtype=object)]),
    )


def extra_rows(train: Split, rare: Sequence[int], per_finding: int) -> np.ndarray:
    """The train rows (indices) whose label vectors condition the synthetic films, ``per_finding`` per rare
    finding: drawn with replacement among that finding's positives, one fixed draw for every arm and seed."""
    return np.concatenate([cgan.positive_rows(train.labels, k, per_finding, seed=1000 + k) for k in rare])


def synthetic_set(generator: cgan.Generator, train: Split, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(films, labels): one generated film per row of ``rows``, labelled with that row's label vector."""
    labels = train.labels[rows].astype(np.float32)
    return cgan.generate(generator, labels, seed=2026), labels


def arm_split(arm: str, train: Split, rows: np.ndarray, synthetic: tuple[np.ndarray, np.ndarray]) -> Split:
    if arm == "real":
        return train
    if arm == "synthetic":
        return _concat(train, *synthetic, tag="synthetic")
    if arm == "repeat":
        return _concat(train, train.images[rows], train.labels[rows], tag="repeat")
    raise ValueError(f"unknown arm {arm!r}")


# ------------------------------------------------------------------------------------------ one run


def fit_and_score(train: Split, val: Split, test: Split, args: argparse.Namespace, seed: int) -> dict:
    """train_classifier's recipe (warm-up + cosine AdamW, weighted BCE, its augmentation, best validation
    epoch) at 64 px; returns the test scores and the run's record."""
    keras.utils.set_random_seed(seed)
    train_model, inference_model = build_classifier(args.variant, SIZE, pretrained=not args.scratch)
    tracker, seconds = fit(train_model, train, val, args, seed)
    scores, _ = predict(inference_model, test, args.batch)
    return {
        "scores": scores,
        "best_epoch": tracker.best_epoch,
        "best_val_mean_auc": tracker.best,
        "history": tracker.history,
        "fit_seconds": seconds,
        "train_images": len(train),
    }


def run_all(args: argparse.Namespace, splits: dict[str, Split], rare: list[int]) -> None:
    """Every (arm, seed) asked for whose scores are not in ``--work`` yet."""
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    train = splits["train"]
    rows = extra_rows(train, rare, args.per_finding)
    synthetic = (np.zeros((0, SIZE, SIZE), np.uint8), np.zeros((0, len(FINDINGS)), np.float32))
    if "synthetic" in args.arms:
        torch.set_num_threads(1)
        generator = cgan.load_generator(Path(args.generator) / "generator.pt")
        synthetic = synthetic_set(generator, train, rows)
    for seed in args.seeds:
        for arm in args.arms:
            path = work / f"{arm}-seed{seed}.npz"
            if path.exists():
                print(f"{path} exists; skipped", flush=True)
                continue
            data = arm_split(arm, train, rows, synthetic)
            print(f"== arm {arm}, seed {seed}: {len(data)} training films", flush=True)
            out = fit_and_score(data, splits["val"], splits["test"], args, seed)
            meta = {k: v for k, v in out.items() if k != "scores"} | {
                "arm": arm,
                "seed": seed,
                "load_average_1_5_15min": list(os.getloadavg()),  # the machine is shared: say how busy
            }
            np.savez(path, scores=out["scores"], meta=json.dumps(meta))
            print(
                f"   best epoch {out['best_epoch']} val mean AUC {out['best_val_mean_auc']:.4f} "
                f"({out['fit_seconds']:.0f} s)",
                flush=True,
            )


# ------------------------------------------------------------------------------------------ measuring


def fast_auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """ROC AUC by the rank-sum formula (ties count a half), None below MIN_POSITIVES positives or without
    negatives; some 20x faster than sklearn's, which matters inside a 1,000-sample bootstrap."""
    pos = int(y.sum())
    neg = len(y) - pos
    if pos < MIN_POSITIVES or neg == 0:
        return None
    ranks = rankdata(s)
    return float((ranks[y > 0].sum() - pos * (pos + 1) / 2) / (pos * neg))


def _finding_auc(k: int) -> Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], float | None]]:
    def make(y: np.ndarray, s: np.ndarray) -> Callable[[np.ndarray], float | None]:
        return lambda i: fast_auc(y[i, k], s[i, k])

    return make


def _mean_auc(y: np.ndarray, s: np.ndarray, findings: Sequence[int]) -> Callable[[np.ndarray], float | None]:
    def stat(i: np.ndarray) -> float | None:
        values = [a for k in findings if (a := fast_auc(y[i, k], s[i, k])) is not None]
        return float(np.mean(values)) if values else None

    return stat


def load_runs(work: Path) -> dict[str, dict[int, dict[str, Any]]]:
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted(work.glob("*-seed*.npz")):
        z = np.load(path, allow_pickle=False)
        meta = json.loads(str(z["meta"]))
        runs.setdefault(meta["arm"], {})[meta["seed"]] = meta | {"scores": z["scores"]}
    return runs


def measure(runs: dict, test: Split, sources: np.ndarray, rare: list[int]) -> dict[str, Any]:
    """The ablation's figures; only seeds that every arm has are used, so the arms stay paired."""
    seeds = sorted(set.intersection(*(set(r) for r in runs.values())))
    arms = [a for a in ARMS if a in runs]
    y, patients = test.labels, test.patient_ids
    averaged = {a: np.mean([runs[a][s]["scores"] for s in seeds], axis=0) for a in arms}
    stats: dict[str, Callable[[np.ndarray, np.ndarray], Callable[[np.ndarray], float | None]]] = {
        **{FINDINGS[k]: _finding_auc(k) for k in rare},
        "mean AUC, rare findings": lambda yy, ss: _mean_auc(yy, ss, rare),
        "mean AUC, all 14 findings": lambda yy, ss: _mean_auc(yy, ss, range(len(FINDINGS))),
    }
    everyone = np.arange(len(y))
    table: dict[str, Any] = {}
    for j, (name, make) in enumerate(stats.items()):
        row: dict[str, Any] = {
            "test_positives": int(y[:, FINDINGS.index(name)].sum()) if name in FINDINGS else None
        }
        for arm in arms:
            per_seed = [make(y, runs[arm][s]["scores"])(everyone) for s in seeds]
            known = [v for v in per_seed if v is not None]
            row[arm] = {
                "per_seed": per_seed,
                "seed_mean": float(np.mean(known)) if known else None,
                "seed_sd": float(np.std(known, ddof=1)) if len(known) > 1 else None,
                "seed_averaged": evaluate_triage.measure(
                    name, make(y, averaged[arm]), len(y), patients, sources, seed=j
                ),
            }
            if arm != "real" and "real" in arms:
                row[f"{arm} - real"] = evaluate_triage.measure(
                    name,
                    difference(make(y, averaged[arm]), make(y, averaged["real"])),
                    len(y),
                    patients,
                    sources,
                    seed=j,
                )
        table[name] = row
    return {
        "seeds": seeds,
        "arms": arms,
        "runs": {
            a: {s: {k: v for k, v in runs[a][s].items() if k not in ("scores", "history")} for s in seeds}
            for a in arms
        },
        "table": table,
    }


# ------------------------------------------------------------------------------------------ reporting


def _ci(entry: dict[str, Any] | None, signed: bool = False) -> str:
    if not entry or entry.get("value") is None:
        return "n/a"
    fmt = "{:+.3f}" if signed else "{:.3f}"
    ci = entry.get("ci95")
    text = fmt.format(entry["value"])
    return text + (f" ({fmt.format(ci[0])} to {fmt.format(ci[1])})" if ci else "")


def markdown(report: dict[str, Any]) -> str:
    """The ablation table for the model card."""
    arms = report["measured"]["arms"]
    table = report["measured"]["table"]
    head = ["finding (test positives)"]
    for arm in arms:
        head += [f"{arm}: AUC per seed, mean ± sd", f"{arm}: seed-averaged AUC (95 % CI)"]
    head += [f"{a} - real (95 % CI)" for a in arms if a != "real"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in table.items():
        cells = [f"{name} ({row['test_positives']})" if row["test_positives"] is not None else name]
        for arm in arms:
            mean, sd = row[arm]["seed_mean"], row[arm]["seed_sd"]
            cells.append(
                "n/a" if mean is None else f"{mean:.3f}" + (f" ± {sd:.3f}" if sd is not None else "")
            )
            cells.append(_ci(row[arm]["seed_averaged"]["overall"]))
        cells += [_ci(row[f"{a} - real"]["overall"], signed=True) for a in arms if a != "real"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "Source-balanced (mean over image sources with at least 20 test films; a finding counts in a source "
        "with at least 3 positives there):",
        "",
    ]
    head = ["figure", *[f"{a}: seed-averaged" for a in arms], *[f"{a} - real" for a in arms if a != "real"]]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, row in table.items():
        cells = [name]
        cells += [_ci(row[a]["seed_averaged"]["source_balanced"]) for a in arms]
        cells += [_ci(row[f"{a} - real"]["source_balanced"], signed=True) for a in arms if a != "real"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(
    args: argparse.Namespace, splits: dict[str, Split], sources: np.ndarray, rare: list[int], data_dir: Path
) -> dict:
    runs = {a: r for a, r in load_runs(Path(args.work)).items() if a in args.arms}
    if not runs:
        raise SystemExit(f"no runs in {args.work}")
    train = splits["train"]
    result = {
        "question": "does adding the conditional GAN's films to training help the classifier on rare findings?",
        "generator": str(args.generator),
        "rare_findings": {FINDINGS[k]: int(train.labels[:, k].sum()) for k in rare},
        "per_finding_extra": args.per_finding,
        "recipe": {
            "variant": args.variant,
            "pretrained": not args.scratch,
            "size": SIZE,
            "epochs": args.epochs,
            "batch": args.batch,
            "learning_rate": args.lr,
            "weight_decay": args.weight_decay,
            "epoch_choice": "best validation mean AUC over the 14 findings, per run",
        },
        "test_images": len(splits["test"]),
        "test_patients": len(set(splits["test"].patient_ids)),
        "bootstrap": "1000 replicates over test patients; the difference's CI from the same replicates",
        "data_sha256": None if args.limit else dataset_hash(data_dir),
        "measured": measure(runs, splits["test"], sources, rare),
        "command": "python -m core.training.gan_ablation " + " ".join(args.argv),
    }
    result["markdown"] = markdown(result)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    if args.card:
        write_card(Path(args.card), result)
    print(result["markdown"], flush=True)
    print(f"wrote {args.json}", flush=True)
    return result


def card_text(result: dict[str, Any]) -> str:
    """The model card's ablation section: what was compared, on what, and the table."""
    m, r = result["measured"], result["recipe"]
    rare = ", ".join(f"{name} {n}" for name, n in result["rare_findings"].items())
    minutes = {a: np.mean([run["fit_seconds"] for run in m["runs"][a].values()]) / 60 for a in m["arms"]}
    loads = [run.get("load_average_1_5_15min") for a in m["arms"] for run in m["runs"][a].values()]
    loads = [x[0] for x in loads if x]
    return "\n".join(
        [
            f"Rare findings (train positives): {rare}. Extra films per rare finding: "
            f"{result['per_finding_extra']}, conditioned on / copied from the same train rows.",
            f"Classifier: {r['variant']} {'ImageNet-pretrained' if r['pretrained'] else 'from scratch'} at "
            f"{r['size']} px, {r['epochs']} epochs (fixed beforehand), batch {r['batch']}, AdamW lr "
            f"{r['learning_rate']}, weighted BCE; epoch per run: {r['epoch_choice']}. Seeds: "
            f"{', '.join(str(s) for s in m['seeds'])} per arm. Test split: {result['test_images']} films, "
            f"{result['test_patients']} patients; CIs: {result['bootstrap']}.",
            "Training minutes per run (mean): "
            + ", ".join(f"{a} {v:.1f}" for a, v in minutes.items())
            + (
                f"; 1-min load average at the end of the runs {min(loads):.1f}-{max(loads):.1f} on 2 cores "
                "(shared with other training)."
                if loads
                else "."
            ),
            "",
            result["markdown"],
        ]
    )


def write_card(folder: Path, result: dict[str, Any]) -> None:
    """The ablation's table into the GAN's MODEL_CARD.md, its headline figures into card.json."""
    put_section(
        folder / "MODEL_CARD.md",
        "gan-ablation",
        "Does adding its films help the classifier on rare findings? (test split)",
        result["command"],
        card_text(result),
    )
    card = json.loads((folder / "card.json").read_text())
    table, arms = result["measured"]["table"], result["measured"]["arms"]
    card["ablation"] = {
        "rare_findings": result["rare_findings"],
        "per_finding_extra": result["per_finding_extra"],
        "seeds": result["measured"]["seeds"],
        "epochs": result["recipe"]["epochs"],
        "seed_averaged_auc": {
            name: {a: row[a]["seed_averaged"]["overall"] for a in arms}
            | {f"{a} - real": row[f"{a} - real"]["overall"] for a in arms if a != "real"}
            for name, row in table.items()
        },
        "results": "var/runs/gan-ablation.json",
        "command": result["command"],
    }
    (folder / "card.json").write_text(json.dumps(card, indent=2) + "\n")


# ------------------------------------------------------------------------------------------ command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--generator", required=True, help="folder holding generator.pt")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--rare", type=int, default=5, help="how many of the rarest findings get extra films")
    p.add_argument("--per-finding", type=int, default=200, help="extra films per rare finding")
    p.add_argument("--variant", default="lite0")
    p.add_argument("--scratch", action="store_true", help="no ImageNet weights")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--limit", type=int, default=0, help="N train/val/test films only (smoke tests)")
    p.add_argument("--work", default="var/runs/gan-ablation", help="per-run test scores")
    p.add_argument("--json", default="var/runs/gan-ablation.json")
    p.add_argument("--card", help="GAN model folder whose MODEL_CARD.md / card.json get the table")
    p.add_argument("--report-only", action="store_true", help="measure the runs in --work; train nothing")
    p.add_argument("--data-dir", default=None)
    p.add_argument(
        "--threads",
        type=int,
        default=0,
        help="TensorFlow intra-op threads (0: its default; 1 on a shared machine)",
    )
    args = p.parse_args(argv)
    args.argv = list(argv) if argv is not None else __import__("sys").argv[1:]
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(args.threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # TensorFlow already ran in this process (a test session): keep its threads
            log.warning("TensorFlow is already initialised; --threads %d ignored", args.threads)
    settings = get_settings()
    data_dir = Path(args.data_dir) if args.data_dir else settings.shared_data_dir
    splits = load_splits(data_dir, SIZE, cache_dir=settings.var_dir / "cache")
    table = read_table(data_dir)
    sources = table["source"].to_numpy()[(table["split"] == "test").to_numpy()]
    if args.limit:
        sources = sources[_spread(len(sources), args.limit)]
        splits = {k: _take(v, _spread(len(v), args.limit)) for k, v in splits.items()}
    rare = cgan.rarest(splits["train"].labels, args.rare)
    print(
        "rare findings (train positives): "
        + ", ".join(f"{FINDINGS[k]} {int(splits['train'].labels[:, k].sum())}" for k in rare),
        flush=True,
    )
    if not args.report_only:
        run_all(args, splits, rare)
    return report(args, splits, sources, rare, data_dir)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
