"""Real sample radiographs for the X-ray tests, and distinct variants of them (so uploads are not duplicates)."""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "assets" / "samples"
PNG = SAMPLES / "00005869_001.png"
PNGS = tuple(sorted(SAMPLES.glob("*.png")))
#: an NIH "No Finding" test-split film (256 px) that the committed model reads as likely normal: routine
ROUTINE_PNG = SAMPLES / "routine" / "00001996_010.png"
DICOM = SAMPLES / "nih_dx_chest_nofinding_1024.dcm"  # PatientID 'Covid0000'
DICOM_PATIENT_ID = "Covid0000"
NOT_CHEST_DICOM = SAMPLES / "nema_rg3_extremity_cr_NOT_CHEST_j2k_lossy.dcm"


@cache
def _grey(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("L"))


def png_variant(index: int, path: Path = PNG) -> bytes:
    """The sample re-encoded with one pixel changed: the same film, different bytes (a new sha256)."""
    pixels = _grey(path).copy()
    pixels[0, index % pixels.shape[1]] ^= 1 + index // pixels.shape[1] % 255
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG", compress_level=1)
    return out.getvalue()


@cache
def big_dicom(side: int = 3000) -> bytes:
    """A 16-bit DX DICOM of ``side`` x ``side`` pixels made from the PNG sample (a detector-sized film)."""
    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    grey = Image.fromarray(_grey(PNG)).resize((side, side), Image.Resampling.BILINEAR)
    pixels = (np.asarray(grey, dtype=np.uint16) * 16).astype(np.uint16)  # 12-bit values
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "DX"
    ds.BodyPartExamined = "CHEST"
    ds.PatientID = ""
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()
