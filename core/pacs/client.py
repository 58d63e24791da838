"""A small DICOMweb client (QIDO-RS search, WADO-RS retrieve, STOW-RS store) on the standard library.

``DicomWebClient(url).store(datasets)`` is the one standards-based way out of this installation: the hospital's
PACS (``CXR_PACS_URL``) and an outside site's PACS alike. Every network or HTTP failure becomes a
:class:`PacsUnavailable` whose message is one sentence naming the server, never a traceback.
"""

from __future__ import annotations

import io
import json
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydicom import Dataset

from core.errors import AppError

__all__ = ["DicomWebClient", "Instance", "PacsUnavailable", "StoreResult", "dataset_bytes"]

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
# QIDO-RS attributes asked for on every instance found
_FIELDS = {
    "00080016": "sop_class_uid",
    "00080018": "sop_instance_uid",
    "0020000D": "study_instance_uid",
    "0020000E": "series_instance_uid",
    "00100020": "patient_id",
    "00100010": "patient_name",
    "00080060": "modality",
}


class PacsUnavailable(AppError):
    """The PACS did not answer, or answered with an error; nothing was changed on this side."""


@dataclass(frozen=True)
class Instance:
    """One instance as QIDO-RS lists it."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str = ""
    patient_id: str = ""
    patient_name: str = ""
    modality: str = ""


@dataclass(frozen=True)
class StoreResult:
    """What a STOW-RS request stored (SOP Instance UIDs) and what the server refused."""

    stored: tuple[str, ...]
    failed: tuple[str, ...]


def dataset_bytes(dataset: Dataset | bytes) -> bytes:
    """A DICOM Part 10 file of ``dataset`` (bytes pass through)."""
    if isinstance(dataset, bytes | bytearray):
        return bytes(dataset)
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _value(item: dict[str, Any], tag: str) -> str:
    values = (item.get(tag) or {}).get("Value") or [""]
    first = values[0]
    if isinstance(first, dict):  # a person name: {"Alphabetic": "DOE^JOHN"}
        return str(first.get("Alphabetic", ""))
    return str(first)


def _multipart_parts(body: bytes, content_type: str) -> Iterator[bytes]:
    """The bodies of a multipart/related response (RFC 2046), in order."""
    params = dict(p.strip().split("=", 1) for p in content_type.split(";")[1:] if "=" in p)
    boundary = params.get("boundary", "").strip('"')
    if not boundary:
        raise PacsUnavailable("The PACS answered without a multipart boundary.")
    for chunk in body.split(b"--" + boundary.encode())[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, payload = chunk.partition(b"\r\n\r\n")
        yield payload[:-2] if payload.endswith(b"\r\n") else payload


class DicomWebClient:
    """DICOMweb at ``url`` (the base, e.g. ``http://127.0.0.1:8042/dicom-web``)."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _request(
        self, path: str, *, accept: str, data: bytes | None = None, content_type: str = ""
    ) -> tuple[bytes, str]:
        headers = {"Accept": accept}
        if content_type:
            headers["Content-Type"] = content_type
        request = urllib.request.Request(self.url + path, data=data, headers=headers)
        where = urllib.parse.urlsplit(self.url).netloc or self.url
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.read(), response.headers.get("Content-Type", "")
        except urllib.error.HTTPError as exc:
            raise PacsUnavailable(f"The PACS at {where} refused the request (HTTP {exc.code}).") from None
        except (urllib.error.URLError, OSError) as exc:
            why = getattr(exc, "reason", exc)
            raise PacsUnavailable(f"The PACS at {where} does not answer ({why}).") from None

    # ------------------------------------------------------------ QIDO-RS

    def search_instances(self, study_instance_uid: str | None = None, page: int = 500) -> Iterator[Instance]:
        """Every instance (of one study, or of the whole PACS), page by page."""
        prefix = f"/studies/{study_instance_uid}" if study_instance_uid else ""
        offset = 0
        while True:
            query = urllib.parse.urlencode(
                [("limit", page), ("offset", offset)] + [("includefield", t) for t in _FIELDS]
            )
            body, _ = self._request(f"{prefix}/instances?{query}", accept="application/dicom+json")
            items = json.loads(body) if body.strip() else []
            for item in items:
                yield Instance(**{name: _value(item, tag) for tag, name in _FIELDS.items()})
            if len(items) < page:
                return
            offset += page

    def search_studies(self, **filters: str) -> list[dict[str, Any]]:
        """QIDO-RS studies matching ``filters`` (DICOM keywords, e.g. ``PatientID="ED-1"``), as DICOM JSON."""
        query = urllib.parse.urlencode(filters)
        body, _ = self._request(f"/studies?{query}", accept="application/dicom+json")
        return list(json.loads(body)) if body.strip() else []

    # ------------------------------------------------------------ WADO-RS

    def retrieve_instance(self, instance: Instance) -> bytes:
        """The instance's DICOM file as stored (no transcoding)."""
        path = (
            f"/studies/{instance.study_instance_uid}/series/{instance.series_instance_uid}"
            f"/instances/{instance.sop_instance_uid}"
        )
        body, content_type = self._request(path, accept=DICOM_MULTIPART + "; transfer-syntax=*")
        parts = list(_multipart_parts(body, content_type))
        if len(parts) != 1:
            raise PacsUnavailable(f"The PACS returned {len(parts)} files for one instance.")
        return parts[0]

    # ------------------------------------------------------------ STOW-RS

    def store(self, datasets: Iterable[Dataset | bytes]) -> StoreResult:
        """Store ``datasets`` (pydicom datasets or DICOM files) in one STOW-RS request.

        Raises :class:`PacsUnavailable` when the server does not answer, refuses the request, or stores none.
        """
        boundary = uuid.uuid4().hex
        body = io.BytesIO()
        for dataset in datasets:
            body.write(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode())
            body.write(dataset_bytes(dataset))
            body.write(b"\r\n")
        body.write(f"--{boundary}--\r\n".encode())
        answer, _ = self._request(
            "/studies",
            accept="application/dicom+json",
            data=body.getvalue(),
            content_type=f"{DICOM_MULTIPART}; boundary={boundary}",
        )
        response = json.loads(answer) if answer.strip() else {}
        stored = tuple(_value(i, "00081155") for i in (response.get("00081199") or {}).get("Value", []))
        failed = tuple(_value(i, "00081155") for i in (response.get("00081198") or {}).get("Value", []))
        if failed and not stored:
            raise PacsUnavailable(f"The PACS refused all {len(failed)} instances sent to it.")
        return StoreResult(stored, failed)
