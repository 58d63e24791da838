"""A film against the patient's previous one: which films to compare and what changed, finding by finding,
in words ("new", "resolved", "higher", "lower", "unchanged") and percentage points, never raw decimals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.xray.stored import FindingRead

#: A change of at least this many percentage points, on a finding flagged on either film, reads as changed.
CHANGE_POINTS = 10


@dataclass(frozen=True)
class FindingChange:
    """One finding on the new film and the previous one."""

    name: str
    label: str
    now: float
    before: float | None  # None: the previous read did not have this finding
    change: str  # new, resolved, higher, lower, unchanged, not on the previous read

    @property
    def points(self) -> int | None:
        """The change in whole percentage points (positive: higher now)."""
        return None if self.before is None else round((self.now - self.before) * 100)


def changes(now: Sequence[FindingRead], before: Sequence[FindingRead]) -> tuple[FindingChange, ...]:
    """Each finding of ``now`` against ``before``: flagged now and not before is new; flagged before and
    not now is resolved; flagged on both or either and moved by at least :data:`CHANGE_POINTS` is higher or
    lower; else unchanged. New and resolved first, then the larger moves, then by probability."""
    earlier = {f.name: f for f in before}
    rows = []
    for f in now:
        prior = earlier.get(f.name)
        if prior is None:
            rows.append(FindingChange(f.name, f.label, f.probability, None, "not on the previous read"))
            continue
        delta = f.probability - prior.probability
        if f.flagged and not prior.flagged:
            word = "new"
        elif prior.flagged and not f.flagged:
            word = "resolved"
        elif (f.flagged or prior.flagged) and abs(delta) * 100 >= CHANGE_POINTS:
            word = "higher" if delta > 0 else "lower"
        else:
            word = "unchanged"
        rows.append(FindingChange(f.name, f.label, f.probability, prior.probability, word))
    rank = {"new": 0, "resolved": 1, "higher": 2, "lower": 2}
    return tuple(sorted(rows, key=lambda r: (rank.get(r.change, 3), -abs(r.points or 0), -r.now)))


def previous_study(history_ids_newest_first: Sequence[int], study_id: int) -> int | None:
    """The film taken before ``study_id`` in a history listed newest first (None when it is the first)."""
    ids = list(history_ids_newest_first)
    if study_id not in ids:
        return None
    index = ids.index(study_id)
    return ids[index + 1] if index + 1 < len(ids) else None
