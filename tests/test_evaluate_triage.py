"""The triage evaluation's choices and figures (core/training/evaluate_triage.py) and the worklist simulation
(scripts/simulate_worklist.py), on small made-up data whose answers are known."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from core.training import evaluate_triage as et

ROOT = Path(__file__).resolve().parent.parent


def _simulator():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(
        "simulate_worklist", ROOT / "scripts" / "simulate_worklist.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["simulate_worklist"] = module
    spec.loader.exec_module(module)
    return module


def test_the_sensitive_cut_keeps_at_least_the_asked_share_of_positives() -> None:
    scores = np.arange(100) / 100.0
    positive = np.ones(100, dtype=bool)
    cut = et.sensitive_cut(scores, positive, 0.95)
    assert (scores[positive] >= cut).mean() >= 0.95
    assert (scores[positive] >= cut + 0.01).mean() < 0.95  # the largest such cut
    assert et.sensitive_cut(scores, np.zeros(100, dtype=bool)) == 1.0


def test_the_routine_cut_holds_in_every_source_with_enough_abnormal_films() -> None:
    rng = np.random.default_rng(0)
    # source A separates well, source B badly: B's constraint must set the cut
    scores = np.concatenate([rng.uniform(0.5, 1, 40), rng.uniform(0, 0.5, 40), rng.uniform(0, 1, 40)])
    grp = np.array([et.URGENT_GROUP] * 40 + [et.NF] * 40 + [et.OTHER] * 40)
    sources = np.array(["A"] * 80 + ["B"] * 40)
    cut, constraints = et.choose_routine_cut(scores, grp, sources)
    assert cut == min(constraints.values()) == constraints["abnormal films, B"]
    for source in ("A", "B"):
        abnormal = (grp != et.NF) & (sources == source)
        assert (scores[abnormal] >= cut).mean() >= 0.95


def test_reweighting_to_another_case_mix() -> None:
    level = np.array(["routine", "routine", "priority", "urgent", "urgent", "priority"])
    grp = np.array([et.NF, et.NF, et.NF, et.URGENT_GROUP, et.OTHER, et.URGENT_GROUP])
    prevalence = {et.NF: 0.5, et.URGENT_GROUP: 0.25, et.OTHER: 0.25}
    rw = et.reweighted(level, grp, prevalence)
    assert rw["No Finding routine"] == pytest.approx(2 / 3)
    assert rw["share routine"] == pytest.approx(0.5 * 2 / 3)
    # urgent: half of the urgent-finding films, all of the other abnormal ones
    assert rw["urgent PPV"] == pytest.approx(0.25 * 0.5 / (0.25 * 0.5 + 0.25 * 1.0))


def test_the_worklist_simulation_reads_every_film_and_triage_serves_urgent_first() -> None:
    sim = _simulator()
    n = 200
    rank = np.array([0] * 20 + [2] * 180)  # 20 urgent films, the rest routine
    labels = np.zeros((n, 14), dtype=np.int8)
    labels[:20, 0] = 1
    films = sim.Films(
        rank,
        (rank == 0).astype(float),
        labels,
        ~labels.any(axis=1),
        tuple(f"F{i}" for i in range(14)),
    )
    times = {}
    for ordering in sim.ORDERINGS:
        drawn, rtat = sim.simulate(films, ordering, np.random.default_rng(3), 1.2, 1, 8.0, 4.0, 2.0, 60.0)
        assert len(rtat) == len(drawn) and np.all(rtat > 0)  # every arrival got a report
        times[ordering] = rtat[rank[drawn] == 0].mean()
    assert times["triage"] < times["FIFO"] / 2
    assert times["triage"] <= times["triage + limit"] <= times["FIFO"] * 1.05
