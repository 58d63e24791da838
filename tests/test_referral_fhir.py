"""Issue 14, the referral to an outside installation: the FHIR R4 transaction Bundle (Task + ServiceRequest +
the film's report resources) validated with fhir.resources, POSTed to a real local HTTP server standing in for
the outside site's FHIR endpoint (a site with ``fhir_url`` in the sites file), audited; an unreachable site is
told plainly. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from core.auth import AuthenticatedUser
from core.referral import crew, service, sites
from core.referral import fhir as referral_fhir
from core.xray import diagnosis as dx
from db import models
from db.session import session_scope
from tests.support.browser import free_port
from tests.support.db import TestAccount
from tests.support.xray_samples import png_variant

MakeUser = Callable[..., TestAccount]
ROOT = Path(__file__).resolve().parents[1]


class Receiver(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", referral_fhir.CONTENT_TYPE)
        self.end_headers()
        self.wfile.write(b'{"resourceType": "Bundle", "type": "transaction-response", "entry": []}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def outside_server() -> Iterator[str]:
    Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/fhir"
    finally:
        server.shutdown()
        server.server_close()


def _sites_with_outside(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "sites.toml"
    text = (ROOT / "config" / "sites.toml").read_text()
    path.write_text(
        text + f'\n[[site]]\ncode = "BASEL"\nname = "Basel University ED"\nkind = "ed"\nlat = 47.5596\n'
        f'lon = 7.5886\ncapabilities = ["thoracic_surgery", "icu"]\nfhir_url = "{url}"\n'
    )
    return path


def test_an_outside_department_receives_a_valid_fhir_task_and_service_request(
    make_user: MakeUser, admin: AuthenticatedUser, tmp_path: Path, outside_server: str
) -> None:
    from fhir.resources.R4B.bundle import Bundle

    sites.sync_sites(admin, _sites_with_outside(tmp_path, outside_server))
    crew_user = make_user("crew.one", role="ambulance").user
    sites.assign_user("crew.one", "AMB-1", admin)
    patient = crew.quick_register("male", 40, crew_user)
    study = dx.diagnose_upload(patient.patient_id, png_variant(21), "field.png", crew_user)
    referral_id = service.create_referral(study.study_id, ["ZH-CITY", "BASEL"], "Chest trauma", crew_user)
    assert referral_fhir.send(referral_id, crew_user) == {"BASEL": 200}
    ((path, content_type, body),) = Receiver.received  # only the outside site; ZH-CITY is rows here
    assert path == "/fhir" and content_type == referral_fhir.CONTENT_TYPE
    data = json.loads(body)
    parsed = Bundle.model_validate(data)
    assert parsed.type == "transaction"
    kinds = [e.resource.__resource_type__ for e in parsed.entry]
    assert kinds[-2:] == ["ServiceRequest", "Task"] and {
        "Patient",
        "ImagingStudy",
        "DiagnosticReport",
    } <= set(kinds)
    refs = {e["fullUrl"] for e in data["entry"]}
    request, task = data["entry"][-2]["resource"], data["entry"][-1]["resource"]
    assert task["focus"]["reference"] in refs and task["for"]["reference"] in refs
    assert task["owner"]["identifier"]["value"] == "BASEL" and task["status"] == "requested"
    assert all(info["reference"] in refs for info in request["supportingInfo"])
    assert request["note"][0]["text"] == "Chest trauma"
    patient_entry = next(e["resource"] for e in data["entry"] if e["resource"]["resourceType"] == "Patient")
    assert patient_entry["identifier"][0]["value"] == patient.patient_id
    assert all(e["request"]["method"] == "POST" for e in data["entry"])
    with session_scope() as s:
        row = s.scalars(select(models.AuditLog).where(models.AuditLog.action == "export")).one()
        assert (
            row.entity_id == str(referral_id)
            and "HTTP 200" in row.detail
            and row.patient_id == patient.patient_id
        )


def test_an_unreachable_outside_site_is_told_plainly(
    make_user: MakeUser, admin: AuthenticatedUser, tmp_path: Path
) -> None:
    sites.sync_sites(admin, _sites_with_outside(tmp_path, f"http://127.0.0.1:{free_port()}/fhir"))
    crew_user = make_user("crew.one", role="ambulance").user
    sites.assign_user("crew.one", "AMB-1", admin)
    patient = crew.quick_register("female", 33, crew_user)
    study = dx.diagnose_upload(patient.patient_id, png_variant(22), "field.png", crew_user)
    referral_id = service.create_referral(study.study_id, ["BASEL"], "", crew_user)
    with pytest.raises(referral_fhir.SendFailed, match="could not be sent to BASEL"):
        referral_fhir.send(referral_id, crew_user)
    with session_scope() as s:
        row = s.scalars(select(models.AuditLog).where(models.AuditLog.action == "export")).one()
        assert "failed" in row.detail
