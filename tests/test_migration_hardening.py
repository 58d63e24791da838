"""Revision 0005 (hardening) on SQLite and PostgreSQL: duplicate allergies merged (the removed rows kept in the
audit log), one allergy per substance enforced, audit_log.client, the append-only audit log on PostgreSQL, and a
downgrade that removes exactly these."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError

from db.migrate import downgrade, upgrade
from tests.support.migration_rows import NOW, database_at


def _allergy(conn, substance: str, severity: str = "mild", reaction: str = "", patient: int = 1) -> None:  # type: ignore[no-untyped-def]
    conn.execute(
        text(
            "INSERT INTO allergies (patient_pk, substance, kind, reaction, severity, recorded_on, created_at,"
            " updated_at, version) VALUES (:p, :s, 'drug', :r, :sev, :on, :now, :now, 1)"
        ),
        {"p": patient, "s": substance, "r": reaction, "sev": severity, "on": date(2020, 1, 1), "now": NOW},
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def at_0004(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Engine, str]]:
    """A database at 0004 with two patients, duplicate allergies and an audit row."""
    with database_at(request.param, "0004", tmp_path, "cxr_m5") as (url, engine):
        with engine.begin() as conn:
            for pk in (1, 2):
                conn.execute(
                    text(
                        "INSERT INTO patients (id, patient_id, given_name, family_name, given_norm, family_norm,"
                        " sex, date_of_birth, phone, email, address, special_notes, created_at, updated_at,"
                        " version) VALUES (:pk, :pid, 'A', 'B', 'a', 'b', 'female', :dob, '', '', '', '', :now,"
                        " :now, 1)"
                    ),
                    {"pk": pk, "pid": f"ED-{pk}", "dob": date(1970, 1, 1), "now": NOW},
                )
            _allergy(conn, "Penicillin", "mild", "rash")
            _allergy(conn, "penicillin ", "severe", "wheeze")
            _allergy(conn, "PÉNICILLIN", "moderate", "rash")
            _allergy(conn, "Latex", "mild")
            _allergy(conn, "Penicillin", "mild", patient=2)  # another patient's: not a duplicate
            conn.execute(
                text(
                    "INSERT INTO audit_log (at, user_id, username, action, entity_type, detail)"
                    " VALUES (:now, NULL, 'someone', 'login', 'user', '')"
                ),
                {"now": NOW},
            )
        yield url, engine, request.param


def test_upgrade_merges_duplicates_and_enforces_one_allergy_per_substance(at_0004) -> None:  # type: ignore[no-untyped-def]
    url, engine, _backend = at_0004
    upgrade("0005", url=url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT patient_pk, substance, substance_norm, severity, reaction, version FROM allergies ORDER BY id"
            )
        ).all()
        assert [tuple(r) for r in rows] == [
            (1, "Penicillin", "penicillin", "severe", "rash; wheeze", 2),
            (1, "Latex", "latex", "mild", "", 1),
            (2, "Penicillin", "penicillin", "mild", "", 1),
        ]
        removed = conn.execute(
            text(
                "SELECT username, action, entity_type, patient_id, detail FROM audit_log WHERE action = 'delete'"
            )
        ).all()
        assert len(removed) == 2
        assert {r.username for r in removed} == {"migration"} and {r.patient_id for r in removed} == {"ED-1"}
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO allergies (patient_pk, substance, substance_norm, kind, reaction, severity,"
                " recorded_on, created_at, updated_at, version) VALUES (1, 'latex', 'latex', 'food', '',"
                " 'mild', :on, :now, :now, 1)"
            ),
            {"on": date(2021, 1, 1), "now": NOW},
        )
    assert "client" in {c["name"] for c in inspect(engine).get_columns("audit_log")}


def test_audit_log_append_only_on_postgresql_and_downgrade(at_0004) -> None:  # type: ignore[no-untyped-def]
    url, engine, backend = at_0004
    upgrade("0005", url=url)
    if backend == "postgresql":
        for statement in ("UPDATE audit_log SET detail = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
                conn.execute(text(statement))
    downgrade("0004", url=url)
    assert "substance_norm" not in {c["name"] for c in inspect(engine).get_columns("allergies")}
    assert "client" not in {c["name"] for c in inspect(engine).get_columns("audit_log")}
    with engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET detail = 'editable again below 0005'"))
        _allergy(conn, "Latex")  # no constraint any more
    upgrade("head", url=url)  # and back up: the new duplicate is merged in turn
    with engine.connect() as conn:
        assert (
            conn.execute(text("SELECT count(*) FROM allergies WHERE substance_norm = 'latex'")).scalar() == 1
        )
