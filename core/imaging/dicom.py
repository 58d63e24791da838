"""DICOM: the header read (:class:`DicomInfo`, the Patient ID alone) and the pixels decoded with pydicom.

Stored values become [0, 1] through the Modality LUT then the VOI LUT or window when the file has one, else
a robust percentile window (8-bit data is kept as it is); MONOCHROME1 is inverted and colour turned grey,
so that every image reaching the models is MONOCHROME2 (air dark, bone bright). pydicom is imported only
when a DICOM file is read.
"""

from __future__ import annotations

import io
import logging
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from core.config import Settings
from core.imaging._pixels import (
    check_decoded_bytes,
    check_pixel_count,
    colour_stats,
    decode_slot,
    finish,
    luma,
    map_bands,
    percentile_window,
    reduce_array,
    reduction_factor,
    stride,
)
from core.imaging.errors import CorruptImage, NoPixelData, TruncatedFile, UnsupportedFormat
from core.imaging.image import XrayImage
from core.imaging.scope import check_dicom_scope

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

# (7FE0,0010) Pixel Data as it appears in little- and big-endian files.
_PIXEL_DATA_TAG_LE = b"\xe0\x7f\x10\x00"
_PIXEL_DATA_TAG_BE = b"\x7f\xe0\x00\x10"
# The longest value each value representation allows (PS3.5 6.2); longer strings from a file are cut to
# these before they are stored or shown (one crafted file carried an 11 MB description). PN: three
# component groups of 64.
VR_MAX_CHARS = {"AE": 16, "AS": 4, "CS": 16, "DA": 8, "DS": 16, "DT": 26, "IS": 12, "LO": 64, "PN": 194}
VR_MAX_CHARS |= {"SH": 16, "TM": 14, "UI": 64, "ST": 1024, "LT": 10240}


@dataclass(frozen=True)
class DicomInfo:
    """The DICOM attributes the product shows or records. Absent attributes are ``None``."""

    patient_id: str | None
    patient_name: str | None
    study_date: date | None
    modality: str | None
    body_part: str | None
    view_position: str | None
    photometric: str | None
    rows: int
    cols: int
    transfer_syntax: str | None
    number_of_frames: int = 1
    study_description: str | None = None

    @property
    def transfer_syntax_name(self) -> str | None:
        """The transfer syntax in words (e.g. 'JPEG 2000 Image Compression'), or ``None``."""
        if not self.transfer_syntax:
            return None
        from pydicom.uid import UID

        return str(UID(self.transfer_syntax).name)

    def as_document(self) -> dict[str, Any]:
        """The attributes as JSON-ready values (dates as ISO 8601), with the transfer syntax in words."""
        document = {
            k: v.isoformat() if isinstance(v, date | datetime) else v for k, v in asdict(self).items()
        }
        document["transfer_syntax_name"] = self.transfer_syntax_name
        return document


def looks_like_dicom(data: bytes) -> bool:
    """DICOM Part 10: a 128-byte preamble then 'DICM'; a few writers drop the preamble."""
    return data[128:132] == b"DICM" or data.startswith(b"DICM")


def _stream(data: bytes) -> io.BytesIO:
    # pydicom looks for 'DICM' after a 128-byte preamble only; a file that starts with 'DICM' (its preamble
    # dropped) is given an empty one back, so its file meta information is read as such.
    return io.BytesIO(bytes(128) + data if data.startswith(b"DICM") else data)


def bounded(value: object, vr: str = "LO") -> str | None:
    """A DICOM value as stripped text cut to its VR's maximum length (``None`` when empty or absent)."""
    if value is None:
        return None
    raw = (
        value if isinstance(value, bytes) else None
    )  # pydicom leaves an unparsable value (an oversized PN) raw
    if raw is not None:
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            value = raw.decode("latin-1")
    text = str(value).strip()[: VR_MAX_CHARS.get(vr, 64)].strip()
    return text or None


@dataclass(frozen=True)
class HeaderPatient:
    """Who a DICOM header says the film is of (values as in the file, cut to their VR; None when absent)."""

    patient_id: str | None
    name: str | None  # PN as written: "FAMILY^GIVEN"
    sex: str | None  # M, F, O
    birth_date: date | None


def header_patient(data: bytes) -> HeaderPatient | None:
    """The patient attributes of a DICOM file from its header alone (no pixel decoding), else ``None``."""
    if not looks_like_dicom(data):
        return None
    import pydicom

    try:
        ds = pydicom.dcmread(_stream(data), stop_before_pixels=True)
    except Exception:  # the reader gives the proper refusal when the file is analysed
        return None
    born = None
    raw = bounded(ds.get("PatientBirthDate"), "DA")
    if raw and len(raw) == 8 and raw.isdigit():
        try:
            born = date(int(raw[:4]), int(raw[4:6]), int(raw[6:]))
        except ValueError:
            born = None
    return HeaderPatient(
        patient_id=bounded(ds.get("PatientID"), "LO"),
        name=bounded(ds.get("PatientName"), "PN"),
        sex=bounded(ds.get("PatientSex"), "CS"),
        birth_date=born,
    )


def read_dicom(data: bytes, sha: str, settings: Settings) -> XrayImage:
    """Decode a DICOM file (``sha`` its sha256 hex) after checking its tags' scope and declared pixel count."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(_stream(data))
    except InvalidDicomError as exc:
        raise CorruptImage(f"not a valid DICOM file: {exc}") from exc
    except EOFError as exc:
        raise TruncatedFile(f"DICOM parse ran out of bytes: {exc}") from exc
    except Exception as exc:  # truncated headers raise EOFError, struct.error, ValueError...
        raise CorruptImage(f"DICOM parse failed: {type(exc).__name__}: {exc}") from exc

    if len(ds) == 0:  # pydicom gives up quietly (a warning) on some truncated files
        raise CorruptImage("no DICOM element could be read")
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if _PIXEL_DATA_TAG_LE in data or _PIXEL_DATA_TAG_BE in data:
            # The bytes hold a Pixel Data element that the parser lost: truncated, not a report.
            raise TruncatedFile("Pixel Data tag present in the bytes but not parsed")
        if "Rows" in ds and "Columns" in ds:
            # The image pixel module is there and its pixels are not: an image cut short, not a report.
            raise TruncatedFile("image attributes present, the file ends before its Pixel Data")
        meta = getattr(ds, "file_meta", None)
        if "SOPClassUID" not in ds and (meta is None or "MediaStorageSOPClassUID" not in meta):
            # Every DICOM object names its SOP class; without one this is noise behind a DICM marker.
            raise CorruptImage("no SOP Class UID and no pixel data")
        raise NoPixelData(f"modality {ds.get('Modality')!r}, SOP class {ds.get('SOPClassUID')!r}")
    info = _dicom_info(ds)
    check_dicom_scope(info)
    if info.rows <= 0 or info.cols <= 0:
        raise CorruptImage(f"Rows/Columns missing or zero: {info.rows}x{info.cols}")
    check_pixel_count(info.cols, info.rows, settings)
    photometric = (info.photometric or "MONOCHROME2").upper()
    check_decoded_bytes(info.cols, info.rows, _decoded_bytes_per_pixel(ds, photometric))

    notes: list[str] = []
    if info.number_of_frames > 1:
        notes.append(
            f"The DICOM file holds {info.number_of_frames} frames; only the first is shown and analysed."
        )
        log.info("DICOM %s has %d frames; using the first", sha[:12], info.number_of_frames)
    with decode_slot():
        pixels, windowing, bits_stored, mean_chroma, spread = _decode(ds, data, photometric, notes)
    return XrayImage(
        pixels=finish(pixels),
        source_format="dicom",
        original_shape=(info.rows, info.cols),
        sha256=sha,
        bit_depth=bits_stored,
        dicom=info,
        windowing=windowing,
        mean_chroma=mean_chroma,
        chroma_spread=spread,
        notes=tuple(notes),
    )


def _decoded_bytes_per_pixel(ds: Dataset, photometric: str) -> int:
    try:
        allocated = -(-int(ds.get("BitsAllocated") or 8) // 8)
        samples = int(ds.get("SamplesPerPixel") or 1)
    except (TypeError, ValueError):
        return 4
    return 3 * 2 if photometric == "PALETTE COLOR" else max(1, samples) * max(1, allocated)


def _decode(
    ds: Dataset, data: bytes, photometric: str, notes: list[str]
) -> tuple[np.ndarray, str, int, float, float]:
    """(pixels in [0, 1], windowing, bits stored, mean chroma, spread): the first frame decoded, reduced to
    MAX_ANALYSIS_PIXELS while still integers, then windowed a band of rows at a time (float32 only)."""
    arr = _decode_first_frame(ds, data)
    for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
        if keyword in ds:
            delattr(ds, keyword)  # the decoded array is all that is needed now: free the encoded copy
    factor = reduction_factor(arr.shape[1], arr.shape[0])
    if factor > 1:
        rows, cols = arr.shape[:2]
        reduced = reduce_array(arr, factor)
        # Back to the stored integers: lookup tables (modality, VOI, palette) index by them.
        arr = np.rint(reduced).astype(arr.dtype) if arr.dtype.kind in "iu" else reduced
        notes.append(
            f"The image ({cols} x {rows} pixels) was reduced to {arr.shape[1]} x {arr.shape[0]} for analysis."
        )
    bits_stored = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    mean_chroma = spread = 0.0
    if arr.ndim == 3 or photometric == "PALETTE COLOR":
        pixels, windowing, mean_chroma, spread = _dicom_colour_to_grey(arr, ds, photometric, bits_stored)
    else:
        pixels, windowing = _dicom_grey(arr, ds, bits_stored)
        if photometric == "MONOCHROME1":
            # MONOCHROME1 shows the lowest value as white; flip so that every image reaching the models is
            # MONOCHROME2 (air dark, bone bright), as the NIH training images are.
            np.subtract(1.0, pixels, out=pixels)
            windowing += ", MONOCHROME1 inverted"
    return pixels, windowing, bits_stored, mean_chroma, spread


def _dicom_info(ds: Dataset) -> DicomInfo:
    def text(keyword: str) -> str | None:
        element = ds.get(keyword) if keyword in ds else None
        if element is None:
            return None
        from pydicom.datadict import dictionary_VR

        return bounded(element, dictionary_VR(keyword))

    def integer(keyword: str, default: int) -> int:
        try:
            return int(ds.get(keyword) or default)
        except (TypeError, ValueError):
            return default

    meta = getattr(ds, "file_meta", None)
    transfer_syntax = meta.get("TransferSyntaxUID") if meta is not None else None
    return DicomInfo(
        patient_id=text("PatientID"),
        patient_name=text("PatientName"),
        study_date=_parse_da(text("StudyDate")),
        modality=(text("Modality") or "").upper() or None,
        body_part=text("BodyPartExamined"),
        view_position=text("ViewPosition"),
        photometric=text("PhotometricInterpretation"),
        rows=integer("Rows", 0),
        cols=integer("Columns", 0),
        transfer_syntax=str(transfer_syntax) if transfer_syntax else None,
        number_of_frames=max(1, integer("NumberOfFrames", 1)),
        study_description=text("StudyDescription"),
    )


def _parse_da(value: str | None) -> date | None:
    if not value:
        return None
    try:
        return datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        log.debug("unparseable DICOM date %r", value)
        return None


def _pixel_data_cut_short(data: bytes) -> bool:
    """Whether the last Pixel Data element of ``data`` declares more bytes than the file still holds."""
    import struct

    tag = data.rfind(_PIXEL_DATA_TAG_LE)
    if tag < 0:
        return False
    if data[tag + 4 : tag + 6] in (b"OB", b"OW", b"OF", b"OD", b"UN"):
        (length,) = struct.unpack("<I", data[tag + 8 : tag + 12].ljust(4, b"\0"))
        start = tag + 12
    else:  # implicit VR: a four-byte length right after the tag
        (length,) = struct.unpack("<I", data[tag + 4 : tag + 8].ljust(4, b"\0"))
        start = tag + 8
    return length != 0xFFFFFFFF and start + length > len(data)


def _decode_first_frame(ds: Dataset, data: bytes) -> np.ndarray:
    from pydicom.pixels import pixel_array

    try:
        # index=0 decodes only the first frame: a 30-frame series need not be decompressed whole.
        return pixel_array(ds, index=0)
    except (NotImplementedError, RuntimeError) as exc:
        # pydicom raises these when no installed plugin can decode the transfer syntax.
        message = str(exc).lower()
        if isinstance(exc, NotImplementedError) or "plugin" in message or "decoder" in message:
            raise UnsupportedFormat(
                f"no decoder for {ds.file_meta.get('TransferSyntaxUID', '?')}: {exc}",
                user_message=(
                    "This DICOM image is compressed in a way this software cannot read; please export it "
                    "uncompressed or as JPEG 2000."
                ),
            ) from exc
        raise CorruptImage(f"DICOM pixel decode failed: {type(exc).__name__}: {exc}") from exc
    except Exception as exc:  # truncated or inconsistent pixel data: ValueError, decoder errors...
        detail = f"DICOM pixel decode failed: {type(exc).__name__}: {exc}"
        if _pixel_data_cut_short(data):
            raise TruncatedFile(detail) from exc
        if "less than expected" in str(exc):
            raise CorruptImage(
                detail,
                user_message=(
                    "This DICOM file holds fewer pixels than its header declares: it is incomplete (truncated) "
                    "or its header is wrong; please export it again."
                ),
            ) from exc
        raise CorruptImage(detail) from exc


def _dicom_grey(arr: np.ndarray, ds: Dataset, bits_stored: int) -> tuple[np.ndarray, str]:
    """Stored values -> [0, 1]: Modality LUT then VOI LUT / window, else percentiles or the full range."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    has_modality_lut = bool(ds.get("ModalityLUTSequence")) or (
        "RescaleSlope" in ds and "RescaleIntercept" in ds
    )
    has_voi = bool(ds.get("VOILUTSequence")) or ("WindowCenter" in ds and "WindowWidth" in ds)
    try:
        # float32, a band of rows at a time: pydicom's float64 results never span the whole image
        values = map_bands(arr, lambda band: apply_modality_lut(band, ds))
    except Exception as exc:
        raise CorruptImage(f"Modality LUT failed: {type(exc).__name__}: {exc}") from exc

    if has_voi:
        try:
            low, high = _voi_output_range(values, ds)
            if high > low:
                # the modality LUT again, band by band, so that the VOI sees what pydicom's own pipeline gives it
                windowed = map_bands(
                    arr, lambda band: apply_voi_lut(apply_modality_lut(band, ds), ds, index=0)
                )
                windowed -= np.float32(low)
                windowed /= np.float32(high - low)
                how = "VOI LUT" if ds.get("VOILUTSequence") else _describe_window(ds)
                return windowed, how
            log.warning("VOI output range is empty (%s..%s); falling back to percentiles", low, high)
        except Exception as exc:  # a broken window (width 0, bad LUT) should not cost the doctor the image
            log.warning("VOI LUT / window not applied (%s: %s); using percentiles", type(exc).__name__, exc)
    if bits_stored <= 8 and not has_modality_lut:
        # 8-bit data is already display-ready (the NIH DICOMs are 8-bit exports of the PNGs): keep it as is,
        # so that a DICOM and the PNG of the same image give the same pixels.
        signed = int(ds.get("PixelRepresentation") or 0) == 1
        low = -(2 ** (bits_stored - 1)) if signed else 0
        values -= np.float32(low)
        values /= np.float32(2**bits_stored - 1)
        return values, f"full range ({bits_stored}-bit)"
    return percentile_window(values)


def _voi_output_range(values: np.ndarray, ds: Dataset) -> tuple[float, float]:
    """The lowest and highest value the dataset's VOI transform can output, to map it onto [0, 1]."""
    from pydicom.pixels import apply_voi, apply_windowing

    if ds.get("VOILUTSequence"):
        # The LUT's own entries bound its output; its nominal bit depth is often wrong (16 declared, 12 used).
        item = ds.VOILUTSequence[0]
        n_entries = int(item.LUTDescriptor[0]) or 2**16
        first = int(item.LUTDescriptor[1])
        table = apply_voi(np.arange(first, first + n_entries, dtype=np.int64), ds, index=0)
        return float(np.min(table)), float(np.max(table))
    # Far below and far above any stored value: the window maps them to its output minimum and maximum.
    span = float(np.abs(values).max()) + 1.0
    with np.errstate(over="ignore"):  # a SIGMOID window overflows exp() out there, harmlessly
        ends = apply_windowing(np.array([-1e6 * span, 1e6 * span], dtype=np.float64), ds, index=0)
    return float(np.min(ends)), float(np.max(ends))


def _describe_window(ds: Dataset) -> str:
    from pydicom.multival import MultiValue

    def first(value: object) -> float:
        # Window Centre/Width may hold several alternative windows; apply_voi_lut(index=0) used the first.
        if isinstance(value, MultiValue | list | tuple):
            value = value[0]
        return float(value)  # type: ignore[arg-type]

    try:
        return f"DICOM window centre {first(ds.WindowCenter):g} width {first(ds.WindowWidth):g}"
    except (TypeError, ValueError, IndexError):
        return "DICOM window"


def _dicom_colour_to_grey(
    arr: np.ndarray, ds: Dataset, photometric: str, bits_stored: int
) -> tuple[np.ndarray, str, float, float]:
    from pydicom.pixels import apply_color_lut

    if photometric == "PALETTE COLOR":
        try:
            arr = apply_color_lut(arr, ds)
        except Exception as exc:
            raise CorruptImage(f"palette lookup failed: {exc}") from exc
        bits_stored = 16 if arr.dtype == np.uint16 else 8
    # pydicom has already turned YBR into RGB (raw=False).
    scale = float(2 ** min(bits_stored, 16) - 1)
    step = stride(arr)  # the colour measured on about a million pixels, never a float copy of all of them
    sample = np.asarray(arr[::step, ::step], dtype=np.float64) / scale
    mean_chroma, spread = colour_stats(np.round(np.clip(sample, 0, 1) * 255).astype(np.uint8))
    grey = map_bands(arr, lambda band: luma(np.asarray(band, dtype=np.float32)) / np.float32(scale))
    return grey, f"RGB to grey (ITU-R 601 luma), {bits_stored}-bit", mean_chroma, spread
