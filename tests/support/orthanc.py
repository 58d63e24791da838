"""A throwaway Orthanc (Debian's ``orthanc`` + ``orthanc-dicomweb``) for the PACS tests.

``start_orthanc(folder)`` writes a config with free local HTTP and DICOM ports and storage under ``folder``,
starts ``/usr/sbin/Orthanc``, waits until its DICOMweb answers and returns a handle; ``stop()`` ends it.
Several can run side by side (a hospital PACS and an outside site's). Tests skip with the reason only where
Orthanc is not installed (``make pacs-deps`` installs it).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Orthanc:
    """A running Orthanc: its REST root, DICOMweb base and DICOM port."""

    process: subprocess.Popen[bytes]
    http_port: int
    dicom_port: int
    folder: Path

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.rest}/dicom-web"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def require_orthanc() -> None:
    """Skip the calling test where Orthanc and its DICOMweb plugin are not installed."""
    if shutil.which(ORTHANC) is None or not DICOMWEB_PLUGIN.exists():
        pytest.skip("Orthanc is not installed (make pacs-deps: apt-get install orthanc orthanc-dicomweb)")


def start_orthanc(folder: Path, name: str = "PACS") -> Orthanc:
    """Start an Orthanc with storage in ``folder`` on free ports; returns once DICOMweb answers."""
    require_orthanc()
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = _free_port(), _free_port()
    config = {
        "Name": name,
        "HttpPort": http_port,
        "DicomPort": dicom_port,
        "DicomAet": name[:16].upper(),
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = (folder / "orthanc.log").open("wb")
    process = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    orthanc = Orthanc(process, http_port, dicom_port, folder)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited ({process.returncode}); see {folder / 'orthanc.log'}")
        try:
            with urllib.request.urlopen(f"{orthanc.dicomweb}/studies", timeout=2):
                return orthanc
        except OSError:
            time.sleep(0.1)
    orthanc.stop()
    raise RuntimeError(f"Orthanc did not answer within 30 s; see {folder / 'orthanc.log'}")
