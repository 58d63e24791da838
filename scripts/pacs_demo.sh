#!/usr/bin/env bash
# Start Debian's Orthanc as the hospital's PACS for a demo (make pacs-deps installs it): HTTP on 8042 with
# DICOMweb under /dicom-web, DICOM (C-STORE) on 4242 as AE title HOSPITALPACS, storage under var/orthanc,
# reachable from this machine only, no login. Stop it with Ctrl-C. Ports: ORTHANC_HTTP_PORT, ORTHANC_DICOM_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."
dir="${CXR_VAR_DIR:-var}/orthanc"
mkdir -p "$dir"
dir="$(cd "$dir" && pwd)"
cat >"$dir/orthanc.json" <<JSON
{
  "Name": "Hospital PACS (demo)",
  "HttpPort": ${ORTHANC_HTTP_PORT:-8042},
  "DicomPort": ${ORTHANC_DICOM_PORT:-4242},
  "DicomAet": "HOSPITALPACS",
  "StorageDirectory": "$dir/storage",
  "IndexDirectory": "$dir/index",
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
  "DicomWeb": {"Enable": true, "Root": "/dicom-web/"}
}
JSON
echo "PACS: export CXR_PACS_URL=http://127.0.0.1:${ORTHANC_HTTP_PORT:-8042}/dicom-web"
exec /usr/sbin/Orthanc "$dir/orthanc.json"
