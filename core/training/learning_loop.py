"""Measure whether retraining from doctors' reviews learns: films held out of the first training, reviewed through
the product, exported, retrained on, compared and promoted, in a scratch installation.

    python -m core.training.learning_loop --out var/runs/loop [--sizes 100 300 all] [--controls zero shuffled]

Stages (each resumable: a finished stage's output is kept and skipped on a rerun):

1. ``holdout``: a fixed ~40 % of the NIH *train* patients (md5 of ``learning-loop:<patient_id>``, never val/test)
   is written to ``holdout_patients.txt``; their films play the ED films the model has never seen.
2. ``m0``: the product's recipe (``core.training.train_classifier``) trained without them (``--exclude-patients``).
3. A scratch installation under ``--out`` (``CXR_VAR_DIR``, ``CXR_DATA_DIR``, ``CXR_DATABASE_URL``,
   ``CXR_MODELS_DIR``; the real ``var/`` database and ``models/registry.json`` are never touched): M0 is
   published there (``evaluate_classifier --publish``) and made active, a doctor reviews the held-out films
   (uploaded through ``core.xray.diagnosis``, read with their NIH labels through ``core.review``), and for each
   nested subset (100, 300, all; fixed seed) the reviews are exported (``python -m core corrections export``),
   retrained on (``core.training.retrain_classifier --exclude-patients``), measured on the fixed test split
   against M0 (paired patient bootstrap, per source and source-balanced) and offered for promotion
   (``core.ml.promotion``, audited; every candidate is compared with M0, which stays active).
4. Controls: ``zero`` (the same retrain with no reviewed film) and ``shuffled`` (all films, labels permuted
   across films): a gain that is from the doctors' labels shows in neither.

Results go to ``<out>/results.json``; progress lines to stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from core.config import PROJECT_ROOT

#: Fraction of the NIH train patients held out of M0 (hash buckets out of 100).
HOLDOUT_PERCENT = 40
HOLDOUT_SALT = "learning-loop"


def holdout_bucket(patient_id: object, salt: str = HOLDOUT_SALT) -> int:
    """0..99 from md5 of ``<salt>:<patient_id>``; independent of the split's own md5(patient_id) buckets."""
    return int(hashlib.md5(f"{salt}:{patient_id}".encode()).hexdigest(), 16) % 100


def holdout_patients(
    table: pd.DataFrame, percent: int = HOLDOUT_PERCENT, salt: str = HOLDOUT_SALT
) -> list[str]:
    """Sorted ids (as strings) of the train patients held out; a patient with any val/test film is never held out
    (the split is patient-disjoint, so there is none, and this keeps it so if the table ever changes)."""
    not_train = set(table.loc[table["split"] != "train", "patient_id"].astype(str))
    train_ids: Iterable[str] = sorted(set(table.loc[table["split"] == "train", "patient_id"].astype(str)))
    return [p for p in train_ids if p not in not_train and holdout_bucket(p, salt) < percent]


def review_order(n: int, seed: int) -> np.ndarray:
    """The order the doctor reviews the held-out films in: one seeded permutation, so the arms' film sets
    (its first 100, 300, ... films) are nested."""
    return np.random.default_rng(seed).permutation(n)


# ------------------------------------------------------------------------------------------ the driver

ADMIN, DOCTOR = "loop.admin", "loop.doctor"
PASSWORD = "learning loop measurement only"  # a throwaway scratch installation's accounts
M0_VERSION = "loop-m0"
RESTORE_REASON = "learning-loop measurement: every candidate is compared with M0, so M0 is made active again"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def scratch_environment(out: Path) -> dict[str, str]:
    """Point the product at a scratch installation under ``out/install`` (database, data, var, models)."""
    install = out / "install"
    env = {
        "CXR_DATABASE_URL": f"sqlite:///{install / 'cxr.db'}",
        "CXR_VAR_DIR": str(install / "var"),
        "CXR_DATA_DIR": str(install / "data"),
        "CXR_MODELS_DIR": str(install / "models"),
    }
    os.environ.pop("DATABASE_URL", None)
    os.environ.update(env)
    from core.config import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    assert settings.models_dir != PROJECT_ROOT / "models" and settings.var_dir != PROJECT_ROOT / "var"
    (install / "var").mkdir(parents=True, exist_ok=True)
    (install / "models" / "classifier").mkdir(parents=True, exist_ok=True)
    cache = install / "var" / "cache"
    if not cache.exists():  # the decoded NIH arrays: a cache, shared with the project's var/
        (PROJECT_ROOT / "var" / "cache").mkdir(parents=True, exist_ok=True)
        cache.symlink_to(PROJECT_ROOT / "var" / "cache", target_is_directory=True)
    return env


def run(command: list[str], log_file: Path) -> int:
    """Run a step of the product as its own process (the scratch environment is inherited), output to a log."""
    log("$ " + " ".join(command) + f"  > {log_file.name}")
    with log_file.open("a") as f:
        return subprocess.run(
            command, cwd=PROJECT_ROOT, stdout=f, stderr=subprocess.STDOUT, check=False
        ).returncode


class Results:
    """``results.json``: what each stage measured; written after every stage, so a rerun resumes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {"arms": {}}

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)


# ------------------------------------------------------------------------------------------ the films


def heldout_films(data_dir: Path, patients: list[str], seed: int) -> pd.DataFrame:
    """The held-out train films in the fixed review order (a seeded permutation; subsets are its prefixes)."""
    from core.training.nih14 import read_table

    table = read_table(data_dir)
    films = table[(table["split"] == "train") & table["patient_id"].astype(str).isin(set(patients))]
    films = films.sort_values("image_index").reset_index(drop=True)
    return films.iloc[review_order(len(films), seed)].reset_index(drop=True)


def nih_boxes_by_image(data_dir: Path) -> dict[str, Any]:
    from core.training.nih_boxes import read_ground_truth

    return {g.image_index: g for g in read_ground_truth(data_dir) if len(g.boxes)}


def review_films(
    films: pd.DataFrame, upto: int, data_dir: Path, done_file: Path, boxes: dict[str, Any]
) -> dict:
    """Upload films ``[0, upto)`` as the doctor (``core.xray.diagnosis``) and save each one's reading with its
    NIH labels and, where NIH has them, its boxes (``core.review.corrections``). Films already done are
    skipped (``done_file``: one JSON line per film)."""
    from PIL import Image

    from core.auth import find_active_user
    from core.errors import ValidationError
    from core.imaging import ImageRejected
    from core.records import Demographics, create_patient
    from core.review.corrections import ABSENT, PRESENT, CorrectedBox, get_editor_state, save_correction
    from core.training.nih14 import FINDINGS
    from core.training.nih_boxes import CLASSES
    from core.xray.diagnosis import diagnose_upload

    done = (
        {json.loads(line)["image_index"] for line in done_file.read_text().splitlines()}
        if done_file.exists()
        else set()
    )
    doctor = find_active_user(DOCTOR)
    t0, n_new = time.perf_counter(), 0
    counts = {"rejected": 0, "boxes_refused": 0}
    for i, row in films.iloc[:upto].iterrows():
        if row["image_index"] in done:
            continue
        t_film = time.perf_counter()
        patient = f"NIH-{row['patient_id']}"
        with contextlib.suppress(ValidationError):  # exists: another film of the same patient
            create_patient(
                patient, Demographics("NIH", str(row["patient_id"]), "unknown", date(1970, 1, 1)), doctor
            )
        path = data_dir / "nih14" / row["path"]
        entry: dict[str, Any] = {"image_index": row["image_index"], "patient": patient}
        try:
            view = diagnose_upload(patient, path.read_bytes(), row["image_index"], doctor)
        except ImageRejected as exc:
            counts["rejected"] += 1
            entry["rejected"] = str(exc)[:200]
        else:
            state = get_editor_state(view.study_id, doctor, audit=False)
            labels = {f: PRESENT if row[f] == 1 else ABSENT for f in FINDINGS if f in state.labels}
            film_boxes: list[CorrectedBox] = []
            g = boxes.get(row["image_index"])
            if g is not None:
                with Image.open(g.file) as im:
                    sx, sy = state.width / im.size[0], state.height / im.size[1]
                film_boxes = [
                    CorrectedBox(
                        CLASSES[int(c)],
                        max(0.0, b[0] * sx),
                        max(0.0, b[1] * sy),
                        min(float(state.width), b[2] * sx),
                        min(float(state.height), b[3] * sy),
                    )
                    for b, c in zip(g.boxes, g.classes, strict=True)
                ]
            try:
                save_correction(view.study_id, labels, film_boxes, "NIH labels", state.study_version, doctor)
            except ValidationError:
                counts["boxes_refused"] += 1
                save_correction(view.study_id, labels, [], "NIH labels", state.study_version, doctor)
                film_boxes = []
            entry.update(
                study_id=view.study_id,
                boxes=len(film_boxes),
                present=[k for k, v in labels.items() if v == PRESENT],
            )
        entry["seconds"] = round(time.perf_counter() - t_film, 2)
        with done_file.open("a") as f:
            f.write(json.dumps(entry) + "\n")
        n_new += 1
        if n_new % 25 == 0:
            log(f"  reviewed {i + 1}/{upto} films ({(time.perf_counter() - t0) / n_new:.2f} s a film)")
    seconds = time.perf_counter() - t0
    log(f"reviewed films up to {upto}: {n_new} new in {seconds:.0f} s; {counts}")
    return {"new_films": n_new, "seconds": round(seconds, 1), **counts}


def shuffled_export(source: Path, target: Path, findings: tuple[str, ...], seed: int) -> None:
    """A copy of an export with the label rows permuted across films (the control), manifest re-hashed."""
    import hashlib as _h

    shutil.copytree(source, target)
    table = pd.read_csv(target / "labels.csv", dtype={"image": str, "patient_key": str})
    columns = [c for c in table.columns if c in findings or c.removesuffix("_source") in findings]
    order = np.random.default_rng(seed).permutation(len(table))
    table[columns] = table[columns].to_numpy()[order]
    table.to_csv(target / "labels.csv", index=False)
    manifest = json.loads((target / "manifest.json").read_text())
    manifest["files"]["labels.csv"] = _h.sha256((target / "labels.csv").read_bytes()).hexdigest()
    manifest["control"] = f"labels.csv rows permuted across films (seed {seed})"
    (target / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


# ------------------------------------------------------------------------------------------ measuring


def fast_auc(y: np.ndarray, s: np.ndarray) -> float | None:
    """ROC AUC by the rank-sum (ties averaged: equal to sklearn's), None without both classes."""
    pos = int(y.sum())
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return None
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


MIN_POSITIVES = 3  # as evaluate_triage.per_finding_auc: a finding counts where a sample has >= 3 positives


def mean_auc_stat(reads: Any) -> Callable[[np.ndarray], float | None]:
    def stat(i: np.ndarray) -> float | None:
        values = [
            fast_auc(reads.labels[i, k], reads.probs[i, k])
            for k in range(reads.labels.shape[1])
            if reads.labels[i, k].sum() >= MIN_POSITIVES
        ]
        kept = [v for v in values if v is not None]
        return float(np.mean(kept)) if kept else None

    return stat


def paired_gain_stat(new: Any, old: Any) -> Callable[[np.ndarray], float | None]:
    """Mean over findings of (new AUC - old AUC) on the same films."""

    def stat(i: np.ndarray) -> float | None:
        diffs = []
        for k in range(old.labels.shape[1]):
            y = old.labels[i, k]
            if y.sum() >= MIN_POSITIVES:
                a, b = fast_auc(y, new.probs[i, k]), fast_auc(y, old.probs[i, k])
                if a is not None and b is not None:
                    diffs.append(a - b)
        return float(np.mean(diffs)) if diffs else None

    return stat


def compare_on_test(new: Any, old: Any) -> dict[str, Any]:
    """Test mean AUC of each model (overall, per source, source-balanced) and the paired gain with 95 % CIs
    (one bootstrap over test patients draws both models' films; ``evaluate_triage.measure``)."""
    from core.training.evaluate_triage import measure

    if not (np.array_equal(new.labels, old.labels) and np.array_equal(new.patients, old.patients)):
        raise ValueError("the two reads are not of the same films")
    n = len(old.labels)
    gain = measure("test mean AUC gain", paired_gain_stat(new, old), n, old.patients, old.sources, seed=300)
    absolute = {}
    for name, reads in (("new", new), ("old", old)):
        stat = mean_auc_stat(reads)
        per_source = {s: stat(np.where(reads.sources == s)[0]) for s in gain["per_source"]}
        values = [v for v in per_source.values() if v is not None]
        absolute[name] = {
            "overall": stat(np.arange(n)),
            "per_source": per_source,
            "source_balanced": float(np.mean(values)) if values else None,
        }
    return {"gain": gain, "mean_auc": absolute, "test_films": n, "test_patients": int(len(set(old.patients)))}


def test_reads(version: str, models_dir: Path, data_dir: Path, cache_dir: Path) -> Any:
    """The served classifier's reads of the test split, through the product's reader (cached per version)."""
    from core.ml.classifier import Classifier
    from core.training.evaluate_triage import load_reads

    return load_reads(Classifier(models_dir / "classifier" / version), data_dir, cache_dir, splits=("test",))[
        "test"
    ]


# ------------------------------------------------------------------------------------------ the stages


def arm_names(sizes: list[str], controls: list[str]) -> list[str]:
    """The retraining arms in run order: the zero-film control first (cheap), then the sizes, then shuffled."""
    return (
        (["0"] if "zero" in controls else []) + list(sizes) + (["shuffled"] if "shuffled" in controls else [])
    )


def ensure_m0(args: argparse.Namespace, out: Path, holdout_file: Path) -> None:
    if (out / "m0" / "model.keras").exists():
        return
    command = [
        sys.executable, "-m", "core.training.train_classifier",
        "--variant", args.variant, "--size", str(args.size), "--epochs", str(args.m0_epochs),
        "--exclude-patients", str(holdout_file), "--out", str(out / "m0"),
    ] + (["--limit", str(args.limit)] if args.limit else [])  # fmt: skip
    if run(command, out / "m0.log"):
        raise SystemExit(f"M0 training failed: see {out / 'm0.log'}")


def ensure_installation(out: Path) -> None:
    """Migrate the scratch database, publish M0 and make it active, copy the active detector, add the accounts."""
    from core.auth import create_user
    from core.config import get_settings
    from core.errors import ValidationError
    from core.ml.registry import read_registry, set_active
    from db.migrate import upgrade

    models = get_settings().models_dir
    upgrade()
    if not (models / "classifier" / M0_VERSION / "card.json").exists():
        command = [sys.executable, "-m", "core.training.evaluate_classifier", str(out / "m0"),
                   "--publish", M0_VERSION, "--activate"]  # fmt: skip
        if run(command, out / "publish-m0.log"):
            raise SystemExit(f"publishing M0 failed: see {out / 'publish-m0.log'}")
    detector = read_registry(PROJECT_ROOT / "models").get("detector")
    if detector and not (models / "detector" / detector).exists():
        shutil.copytree(PROJECT_ROOT / "models" / "detector" / detector, models / "detector" / detector)
        set_active("detector", detector, models)
    for username, role in ((ADMIN, "admin"), (DOCTOR, "doctor")):
        with contextlib.suppress(ValidationError):  # made on an earlier run
            create_user(username, PASSWORD, role=role, full_name=f"Learning loop {role}")


def promote_or_record(version: str, out: Path) -> dict[str, Any]:
    """``python -m core models promote``: the product's rules decide against M0 (active); if accepted, M0 is
    promoted back (with a recorded reason) so the next candidate is compared with M0 as well."""
    log_file = out / f"promote-{version}.log"
    code = run(
        [sys.executable, "-m", "core", "models", "promote", "classifier", version, "--user", ADMIN], log_file
    )
    result = {"accepted": code == 0, "exit": code, "message": log_file.read_text().strip().splitlines()[-1:]}
    if code == 0:
        back = run(
            [sys.executable, "-m", "core", "models", "promote", "classifier", M0_VERSION, "--user", ADMIN,
             "--override-reason", RESTORE_REASON],
            log_file,
        )  # fmt: skip
        result["m0_restored"] = back == 0
    return result


def run_arm(
    arm: str, films: pd.DataFrame, args: argparse.Namespace, out: Path, results: Results, ctx: dict
) -> None:
    from core.config import get_settings
    from core.training.nih14 import FINDINGS

    key = f"{arm}-np" if args.no_parent_epoch else arm
    entry = results.data["arms"].setdefault(key, {})
    if entry.get("done"):
        log(f"arm {key}: done earlier; skipped")
        return
    t0 = time.perf_counter()
    settings = get_settings()
    export = out / "exports" / arm
    if arm == "shuffled":
        source = out / "exports" / "all"
        if not source.exists():
            raise SystemExit("the shuffled control needs the 'all' arm's export first")
        if not export.exists():
            shuffled_export(source, export, FINDINGS, args.seed)
        entry["films"] = len(films)
    else:
        k = len(films) if arm == "all" else int(arm)
        entry["films"] = min(k, len(films))
        if k:
            entry["review"] = review_films(films, k, ctx["data_dir"], out / "reviews.jsonl", ctx["boxes"])
        if not export.exists():
            export.parent.mkdir(parents=True, exist_ok=True)
            if run(
                [sys.executable, "-m", "core", "corrections", "export", str(export), "--user", ADMIN],
                out / "export.log",
            ):
                raise SystemExit(f"export failed: see {out / 'export.log'}")
    entry["exported_studies"] = (
        len(pd.read_csv(export / "labels.csv")) if (export / "labels.csv").exists() else 0
    )
    version = f"{M0_VERSION}-ft-{key}"
    t_retrain = time.perf_counter()
    if not (settings.models_dir / "classifier" / version / "card.json").exists():
        run_dir = out / "runs" / f"retrain-{key}"
        shutil.rmtree(run_dir, ignore_errors=True)
        command = [
            sys.executable, "-m", "core.training.retrain_classifier", str(export),
            "--parent", M0_VERSION, "--version", version, "--exclude-patients", str(ctx["holdout_file"]),
            "--out", str(run_dir), "--epochs", str(args.retrain_epochs),
        ] + (["--limit", str(args.limit)] if args.limit else []) + (
            ["--no-parent-epoch"] if args.no_parent_epoch else []
        )  # fmt: skip
        if run(command, out / f"retrain-{key}.log"):
            raise SystemExit(f"retraining failed: see {out / f'retrain-{key}.log'}")
    entry["retrain_minutes"] = round((time.perf_counter() - t_retrain) / 60, 1)
    card = json.loads((settings.models_dir / "classifier" / version / "card.json").read_text())
    entry["version"] = version
    entry["reviewed_studies_used"] = card["retraining"]["reviewed_studies_used"]
    entry["dropped_as_val_or_test_image"] = len(card["retraining"]["dropped_as_val_or_test_image"])
    entry["card_test_mean_auc"] = card["metrics"]["test"]["mean_auc"]
    entry["card_test_mean_auc_ci95"] = card["metrics"]["test"]["mean_auc_ci95"]
    entry["best_epoch"] = card["training"]["best_epoch"]
    entry["parent_is_a_candidate"] = not args.no_parent_epoch
    entry["val_history"] = [round(h["val_mean_auc"], 4) for h in card["training"]["history"]]
    entry["val_mean_auc"] = {
        "parent": card["training"]["parent_val_mean_auc"],
        "best": card["training"]["best_val_mean_auc"],
    }
    reads = test_reads(version, settings.models_dir, ctx["data_dir"], ctx["cache_dir"])
    entry["test"] = compare_on_test(reads, ctx["m0_reads"])
    entry["promotion"] = promote_or_record(version, out)
    entry["minutes"] = round((time.perf_counter() - t0) / 60, 1)
    entry["done"] = True
    results.save()
    g = entry["test"]["gain"]
    log(
        f"arm {key}: {entry['reviewed_studies_used']} reviewed films; test mean AUC gain over M0 "
        f"{g['overall']['value']:+.4f} {g['overall']['ci95']}, source-balanced {g['source_balanced']['value']:+.4f} "
        f"{g['source_balanced']['ci95']}; promotion {'accepted' if entry['promotion']['accepted'] else 'refused'}; "
        f"{entry['minutes']} min"
    )


def versus_zero_control(results: Results, ctx: dict, models_dir: Path) -> None:
    """Each arm against the zero-film control of the same kind (paired on the test films): the effect of the
    reviewed films net of the fine-tune itself (for product arms the control is M0's own weights)."""
    arms = results.data["arms"]
    for zero_key in ("0", "0-np"):
        zero = arms.get(zero_key)
        if not (zero and zero.get("done")):
            continue
        zero_reads = test_reads(zero["version"], models_dir, ctx["data_dir"], ctx["cache_dir"])
        for key, arm in arms.items():
            if key != zero_key and arm.get("done") and key.endswith("-np") == zero_key.endswith("-np"):
                reads = test_reads(arm["version"], models_dir, ctx["data_dir"], ctx["cache_dir"])
                arm["test_vs_zero_control"] = compare_on_test(reads, zero_reads)["gain"]
                g = arm["test_vs_zero_control"]
                log(
                    f"arm {key} vs {zero_key}: {_ci(g['overall'])}, source-balanced {_ci(g['source_balanced'])}"
                )
    results.save()


def _ci(entry: dict[str, Any] | None) -> str:
    if not entry or entry.get("value") is None:
        return "-"
    ci = entry.get("ci95")
    return f"{entry['value']:+.3f}" + (f" ({ci[0]:+.3f}, {ci[1]:+.3f})" if ci else "")


def markdown_table(data: dict[str, Any]) -> str:
    """The results as a markdown table: one row per arm (test split, paired against M0)."""
    sources = sorted(
        {s for arm in data["arms"].values() if "test" in arm for s in arm["test"]["gain"]["per_source"]}
    )
    head = ["arm", "reviewed films used", "test mean AUC (M0 -> new)", "gain, all films (95 % CI)"]
    head += [f"gain within {s.split('/')[0]}" for s in sources]
    head += [
        "gain, source-balanced (95 % CI)",
        "val mean AUC: M0 -> kept",
        "kept epoch",
        "promotion",
        "minutes",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, arm in data["arms"].items():
        if "test" not in arm:
            continue
        g, m = arm["test"]["gain"], arm["test"]["mean_auc"]
        base = name.removesuffix("-np")
        label = {"0": "control: 0 films", "shuffled": "control: all films, labels shuffled"}.get(base, base)
        label += (
            ", best fine-tuned epoch" if name.endswith("-np") else ", product (parent kept unless beaten)"
        )
        row = [
            label,
            str(arm["reviewed_studies_used"]),
            f"{m['old']['overall']:.3f} -> {m['new']['overall']:.3f}",
            _ci(g["overall"]),
            *(_ci(g["per_source"].get(s)) for s in sources),
            _ci(g["source_balanced"]),
            f"{arm['val_mean_auc']['parent']:.3f} -> {arm['val_mean_auc']['best']:.3f}",
            str(arm["best_epoch"]),
            "accepted" if arm["promotion"]["accepted"] else "refused",
            str(arm["minutes"]),
        ]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=PROJECT_ROOT / "var" / "runs" / "loop")
    p.add_argument(
        "--sizes", nargs="+", default=["100", "300", "all"], help="reviewed films per arm (nested)"
    )
    p.add_argument("--controls", nargs="*", default=["zero", "shuffled"], choices=["zero", "shuffled"])
    p.add_argument("--percent", type=int, default=HOLDOUT_PERCENT, help="share of train patients held out")
    p.add_argument("--variant", default="lite0")
    p.add_argument("--size", type=int, default=128, help="M0's input size (the product's default is 224)")
    p.add_argument("--m0-epochs", type=int, default=8)
    p.add_argument("--retrain-epochs", type=int, default=2)
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument(
        "--no-parent-epoch",
        action="store_true",
        help="retrain with --no-parent-epoch (arms '<name>-np'): measures what the fine-tune learned even where "
        "the product would keep M0",
    )
    p.add_argument(
        "--limit", type=int, default=0, help="smoke test: N NIH rows for training and N held-out films"
    )
    args = p.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results = Results(out / "results.json")
    results.data["command"] = "python -m core.training.learning_loop " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    t_start = time.perf_counter()

    from core.config import get_settings
    from core.training.nih14 import read_table

    data_dir = get_settings().shared_data_dir
    table = read_table(data_dir)
    patients = holdout_patients(table, args.percent)
    holdout_file = out / "holdout_patients.txt"
    text = "".join(f"{pid}\n" for pid in patients)
    if holdout_file.exists() and holdout_file.read_text() != text:
        raise SystemExit(f"{holdout_file} differs from the hold-out this run would choose; use another --out")
    holdout_file.write_text(text)
    films = heldout_films(data_dir, patients, args.seed)
    if args.limit:
        films = films.iloc[: args.limit]
    results.data["holdout"] = {
        "patients": len(patients),
        "films": len(films),
        "by_source": {str(k): int(v) for k, v in films["source"].value_counts().items()},
        "rule": f"md5('{HOLDOUT_SALT}:<patient_id>') % 100 < {args.percent}, train split only",
    }
    log(f"hold-out: {len(patients)} train patients, {len(films)} films; M0 trains without them")

    t = time.perf_counter()
    ensure_m0(args, out, holdout_file)
    m0 = json.loads((out / "m0" / "train.json").read_text())
    results.data["m0"] = {
        k: m0.get(k)
        for k in (
            "variant",
            "input_size",
            "epochs",
            "best_epoch",
            "best_val_mean_auc",
            "train_images",
            "fit_seconds",
        )
    }
    log(
        f"M0: {m0['train_images']} train images, best val mean AUC {m0['best_val_mean_auc']:.4f} ({m0['fit_seconds'] / 60:.1f} min fit)"
    )

    scratch_environment(out)
    settings = get_settings()
    ensure_installation(out)
    cache_dir = settings.var_dir / "eval"
    m0_reads = test_reads(M0_VERSION, settings.models_dir, data_dir, cache_dir)
    card = json.loads((settings.models_dir / "classifier" / M0_VERSION / "card.json").read_text())
    results.data["m0"]["card_test_mean_auc"] = card["metrics"]["test"]["mean_auc"]
    results.data["m0"]["card_test_mean_auc_ci95"] = card["metrics"]["test"]["mean_auc_ci95"]
    results.data["m0"]["publish_minutes"] = round((time.perf_counter() - t) / 60, 1)
    results.save()
    ctx = {
        "data_dir": data_dir,
        "cache_dir": cache_dir,
        "m0_reads": m0_reads,
        "holdout_file": holdout_file,
        "boxes": nih_boxes_by_image(data_dir),
    }
    for arm in arm_names(args.sizes, args.controls):
        run_arm(arm, films, args, out, results, ctx)
    versus_zero_control(results, ctx, settings.models_dir)
    results.data["total_minutes_this_run"] = round((time.perf_counter() - t_start) / 60, 1)
    results.save()
    (out / "table.md").write_text(markdown_table(results.data))
    print(markdown_table(results.data), flush=True)
    log(f"done: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
