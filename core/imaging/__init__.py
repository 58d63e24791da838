"""Reading radiographs: PNG, JPEG or DICOM bytes in, one normalised grayscale array out, or a typed refusal.

Every image the product analyses comes through :func:`read_image`, so the classifier, the detector and the
pages all see the same thing: a ``float32`` array in ``[0, 1]``, height x width, one channel, displayed the
MONOCHROME2 way (air dark, bone bright). Anything that cannot be that is refused with a subclass of
:class:`ImageRejected`, which carries a stable machine ``code`` and a ``user_message`` written for a doctor.

Scope checks come in two layers:

* :func:`read_image` refuses what the file itself says is out of scope (DICOM modality, body part), before the
  pixels are decoded.
* :func:`check_plausible_chest` looks at the decoded pixels with cheap, conservative rules (size, aspect
  ratio, blank image, colour photograph). It takes ``extra_checks`` so that the classifier can add a learned
  out-of-distribution check without this module importing TensorFlow.

No Streamlit and no TensorFlow here: this module runs under plain pytest and the command line.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, ClassVar, Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.config import Settings, get_settings
from core.errors import AppError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

log = logging.getLogger(__name__)

SourceFormat = Literal["png", "jpeg", "dicom"]

# A chest radiograph can be tall or wide, but never more than twice as long one way as the other; a narrow
# strip is a scanned text line, a panorama or a cropped detail.
MIN_SIDE_PX = 64
MAX_ASPECT_RATIO = 2.0
# Below this standard deviation (on the [0, 1] scale, about 3 grey levels of 255) the image is blank: a failed
# export, a black frame or a uniform test pattern. Real chest X-rays measure above 0.1.
MIN_PIXEL_STD = 0.012
# A radiograph has a continuum of grey levels (the real chest X-rays here: at least 119 of 256, even at
# 64 px); a chessboard, a mask or a line drawing has a handful.
MIN_GREY_LEVELS = 16
# Colour photograph test, on the RGB image before it is turned grey (see _colour_stats). Measured on real
# images (scikit-image samples and the NIH data): chest X-rays stored as RGB have spread 0 and chroma 0; an
# X-ray given a strong blue, sepia or left-to-right colour cast (a phone photo of a light box) reaches spread
# 0.038 and chroma 0.24; colour photographs have spread 0.045-0.46 or chroma 0.15-0.45 (retina: spread 0.045,
# chroma 0.445).
MAX_CHROMA_SPREAD = 0.06
MAX_MEAN_CHROMA = 0.30
# Robust windowing for high-bit-depth data that carries no window of its own.
PERCENTILE_WINDOW = (0.5, 99.5)

# DICOM scope. CR and DX are the radiography modalities of the standard; 'DR' is not a defined term but
# several vendors write it; 'RG' (film/screen radiography) covers digitised films. Secondary captures ('OT',
# 'SC' or no modality at all) are accepted only when Body Part Examined says chest, because a screenshot of
# anything can be an 'OT'. Everything else (CT, MR, US, MG, XA, RF, NM, PT, SR, ...) is refused.
RADIOGRAPHY_MODALITIES = frozenset({"CR", "DX", "DR", "RG"})
SECONDARY_CAPTURE_MODALITIES = frozenset({"OT", "SC", ""})
# Words that mark a chest in Body Part Examined (vendors write 'CHEST', 'THORAX', 'PORT CHEST', 'CHEST_PA',
# 'TORAX', ...); matched word by word so that 'TSPINE' or 'THORACIC SPINE' do not count as chest.
CHEST_BODY_PART_WORDS = frozenset({"CHEST", "THORAX", "TORAX", "LUNG", "LUNGS"})

_MODALITY_WORDS = {
    "CT": "a CT scan",
    "MR": "an MRI scan",
    "US": "an ultrasound image",
    "NM": "a nuclear medicine image",
    "PT": "a PET scan",
    "MG": "a mammogram",
    "XA": "an angiography image",
    "RF": "a fluoroscopy image",
    "PX": "a dental panoramic X-ray",
    "IO": "an intra-oral dental X-ray",
    "SR": "a structured report",
    "SEG": "a segmentation",
    "ECG": "an ECG recording",
    "RTDOSE": "a radiotherapy dose map",
    "RTPLAN": "a radiotherapy plan",
    "RTSTRUCT": "a radiotherapy structure set",
    "OT": "a secondary capture",
}

# (7FE0,0010) Pixel Data as it appears in little- and big-endian files.
_PIXEL_DATA_TAG_LE = b"\xe0\x7f\x10\x00"
_PIXEL_DATA_TAG_BE = b"\x7f\xe0\x00\x10"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# Formats people upload by mistake, named so that the refusal can say what the file is.
_OTHER_MAGICS: tuple[tuple[bytes, int, str], ...] = (
    (b"%PDF", 0, "a PDF document"),
    (b"II*\x00", 0, "a TIFF image"),
    (b"MM\x00*", 0, "a TIFF image"),
    (b"BM", 0, "a BMP image"),
    (b"GIF8", 0, "a GIF image"),
    (b"WEBP", 8, "a WebP image"),
    (b"ftypheic", 4, "an HEIC photo"),
    (b"ftypmif1", 4, "an HEIF photo"),
    (b"PK\x03\x04", 0, "a ZIP archive"),
)


# ----------------------------------------------------------------------------------------------------
# Refusals
# ----------------------------------------------------------------------------------------------------


class ImageRejected(AppError):
    """An uploaded file the product will not analyse.

    ``code`` is a stable machine string (logged, stored, returned by the CLI); ``user_message`` is one
    sentence a doctor understands, and is also ``str(error)``, as for every :class:`AppError` a page shows;
    ``detail`` is the technical reason, for logs only (it never contains patient data).
    """

    code: ClassVar[str] = "image_rejected"
    default_message: ClassVar[str] = "This file cannot be analysed."

    def __init__(self, detail: str = "", *, user_message: str | None = None) -> None:
        self.detail = detail
        self.user_message = user_message or self.default_message
        super().__init__(self.user_message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, detail={self.detail!r})"


class EmptyFile(ImageRejected):
    """The upload has no bytes."""

    code = "empty_file"
    default_message = "The file is empty; please upload the X-ray image again."


class FileTooLarge(ImageRejected):
    """The upload is larger than ``Settings.max_upload_mb``; refused before any decoding."""

    code = "file_too_large"
    default_message = "The file is too large to be analysed."


class UnsupportedFormat(ImageRejected):
    """Not a PNG, JPEG or DICOM file, or a DICOM compression no installed decoder reads."""

    code = "unsupported_format"
    default_message = "This file is not a PNG, JPEG or DICOM image; please upload the X-ray in one of those."


class CorruptImage(ImageRejected):
    """The file says it is an image but cannot be decoded (truncated, damaged, inconsistent)."""

    code = "corrupt_image"
    default_message = "This file is not a readable image (it may be damaged or incomplete)."


class TooManyPixels(ImageRejected):
    """Declared width x height over ``Settings.max_image_pixels`` (a decompression bomb or a bad header)."""

    code = "too_many_pixels"
    default_message = "This image has too many pixels to be analysed safely."


class NoPixelData(ImageRejected):
    """A DICOM file without an image in it (a structured report, a plan, a waveform...)."""

    code = "no_pixel_data"
    default_message = "This DICOM file contains no image (it may be a report or other non-image document)."


class WrongModality(ImageRejected):
    """A DICOM image of another modality than plain radiography (CT, MR, ultrasound...)."""

    code = "wrong_modality"
    default_message = (
        "This DICOM file is not an X-ray radiograph; only chest X-rays (CR, DX) can be analysed."
    )


class NotChestXray(ImageRejected):
    """Not a chest radiograph: another body part, a photograph, a blank or oddly shaped image."""

    code = "not_chest_xray"
    default_message = "This image does not look like a chest X-ray, so it cannot be analysed."


# ----------------------------------------------------------------------------------------------------
# Results
# ----------------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class XrayImage:
    """A decoded radiograph, ready for the models and the pages.

    ``pixels`` is float32, height x width, in [0, 1], air dark and bone bright, and read-only (models copy
    before they change it). ``original_shape`` is (height, width) as stored in the file, before any EXIF
    rotation. ``windowing`` says how stored values became [0, 1] (for the model card and the audit trail).
    ``mean_chroma`` and ``chroma_spread`` describe the colour of RGB sources (0 for grey ones); ``notes``
    lists anything the doctor should know about how the file was read (e.g. only the first frame was used).
    """

    pixels: np.ndarray
    source_format: SourceFormat
    original_shape: tuple[int, int]
    sha256: str
    bit_depth: int
    dicom: DicomInfo | None = None
    windowing: str = "full range"
    mean_chroma: float = 0.0
    chroma_spread: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of ``pixels``."""
        return (int(self.pixels.shape[0]), int(self.pixels.shape[1]))


PlausibilityCheck = Callable[[XrayImage], None]
"""A check that raises :class:`NotChestXray` for an image it judges out of scope, and returns otherwise."""


# ----------------------------------------------------------------------------------------------------
# Public functions
# ----------------------------------------------------------------------------------------------------


def sniff_format(data: bytes) -> SourceFormat | None:
    """The format of ``data`` from its magic bytes (never from a file name), or ``None`` if not supported."""
    if data.startswith(_PNG_MAGIC):
        return "png"
    if data.startswith(_JPEG_MAGIC):
        return "jpeg"
    # DICOM Part 10: a 128-byte preamble then 'DICM'; a few writers drop the preamble.
    if data[128:132] == b"DICM" or data.startswith(b"DICM"):
        return "dicom"
    return None


def read_image(data: bytes, filename: str | None = None, *, settings: Settings | None = None) -> XrayImage:
    """Decode an uploaded PNG, JPEG or DICOM file into an :class:`XrayImage`.

    ``filename`` is used for log messages only: the format comes from the bytes. Size limits come from
    ``settings`` (default :func:`core.config.get_settings`) and are checked before anything is decoded.
    Raises a subclass of :class:`ImageRejected` for anything that cannot be read or is not a chest X-ray by
    its DICOM tags; pixel-based plausibility is :func:`check_plausible_chest`'s job.
    """
    settings = settings or get_settings()
    if not data:
        raise EmptyFile("zero bytes")
    limit_bytes = settings.max_upload_mb * 1024 * 1024
    if len(data) > limit_bytes:
        raise FileTooLarge(
            f"{len(data)} bytes > {limit_bytes}",
            user_message=(
                f"This file is {len(data) / 2**20:.0f} MB, more than the {settings.max_upload_mb} MB limit; "
                "please upload a single X-ray image."
            ),
        )

    sha = hashlib.sha256(data).hexdigest()
    fmt = sniff_format(data)
    if fmt is None:
        what = _describe_unsupported(data)
        raise UnsupportedFormat(
            f"magic bytes {data[:8]!r}",
            user_message=(
                f"This file is {what}, which cannot be analysed; please upload the X-ray as PNG, JPEG or "
                "DICOM."
            ),
        )
    if filename and not _extension_matches(filename, fmt):
        # Common and harmless (a .dcm exported as .jpg); the bytes decide.
        log.debug("file %s has content %s despite its extension", sha[:12], fmt)

    image = _read_dicom(data, sha, settings) if fmt == "dicom" else _read_pillow(data, fmt, sha, settings)
    log.info(
        "read %s image %s: %dx%d, %d-bit, %s",
        image.source_format,
        sha[:12],
        image.shape[1],
        image.shape[0],
        image.bit_depth,
        image.windowing,
    )
    return image


def check_plausible_chest(img: XrayImage, extra_checks: Iterable[PlausibilityCheck] = ()) -> None:
    """Raise :class:`NotChestXray` if ``img`` cannot plausibly be a chest radiograph.

    The built-in rules are cheap and conservative (they must never refuse a real chest X-ray): too small,
    more than 2:1 long, a colour photograph, blank, or a drawing with a handful of grey levels. Grey
    photographs and grey scans of other body parts pass them; the classifier adds a learned
    out-of-distribution check through ``extra_checks`` (each a callable that raises :class:`NotChestXray` or
    returns ``None``), run in order after the built-in rules.
    """
    height, width = img.shape
    if min(height, width) < MIN_SIDE_PX:
        raise NotChestXray(
            f"{width}x{height} px < {MIN_SIDE_PX}",
            user_message=(
                f"This image is only {width} x {height} pixels, too small to be read; please upload the "
                "original X-ray."
            ),
        )
    aspect = max(height, width) / min(height, width)
    if aspect > MAX_ASPECT_RATIO:
        raise NotChestXray(
            f"aspect ratio {aspect:.2f} > {MAX_ASPECT_RATIO}",
            user_message=(
                "This image is much longer in one direction than a chest X-ray ever is; it may be cropped or "
                "may not be a chest X-ray."
            ),
        )
    if img.mean_chroma > MAX_MEAN_CHROMA or img.chroma_spread > MAX_CHROMA_SPREAD:
        raise NotChestXray(
            f"colour: mean chroma {img.mean_chroma:.3f}, spread {img.chroma_spread:.3f}",
            user_message="This is a colour picture, not an X-ray; please upload the chest X-ray itself.",
        )
    std = float(img.pixels[:: _stride(img.pixels), :: _stride(img.pixels)].std())
    if std < MIN_PIXEL_STD:
        raise NotChestXray(
            f"pixel std {std:.4f} < {MIN_PIXEL_STD}",
            user_message="This image is blank (it shows no detail); please check the export and try again.",
        )
    levels = len(np.unique(to_uint8(img.pixels[:: _stride(img.pixels), :: _stride(img.pixels)])))
    if levels < MIN_GREY_LEVELS:
        raise NotChestXray(
            f"{levels} grey levels < {MIN_GREY_LEVELS}",
            user_message="This image looks like a drawing or diagram, not an X-ray; please upload the X-ray.",
        )
    for check in extra_checks:
        check(img)


def read_chest_xray(
    data: bytes,
    filename: str | None = None,
    *,
    extra_checks: Iterable[PlausibilityCheck] = (),
    settings: Settings | None = None,
) -> XrayImage:
    """:func:`read_image` then :func:`check_plausible_chest`: the one call an upload handler needs."""
    image = read_image(data, filename, settings=settings)
    check_plausible_chest(image, extra_checks)
    return image


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """``pixels`` in [0, 1] as uint8 0-255 (rounded, clipped), for display and for 8-bit model inputs."""
    return np.round(np.clip(pixels, 0.0, 1.0) * 255.0).astype(np.uint8)


def thumbnail(pixels: np.ndarray, size: int = 256) -> np.ndarray:
    """A uint8 copy of ``pixels`` whose longer side is at most ``size`` pixels, aspect ratio kept."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    image = Image.fromarray(to_uint8(pixels))
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    return np.asarray(image)


# ----------------------------------------------------------------------------------------------------
# PNG and JPEG
# ----------------------------------------------------------------------------------------------------


def _read_pillow(data: bytes, fmt: SourceFormat, sha: str, settings: Settings) -> XrayImage:
    # Pillow's own bomb guard is process-wide state (Image.MAX_IMAGE_PIXELS) that training code shares, so the
    # configured limit is enforced here from the header instead; Pillow's guard stays as a second line.
    try:
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
            _check_pixel_count(width, height, settings)
            probe.verify()  # PNG: walks every chunk and checks its CRC without decoding
        image = Image.open(io.BytesIO(data))
        image.load()
    except ImageRejected:
        raise
    except Image.DecompressionBombError as exc:
        raise TooManyPixels(str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise CorruptImage(f"Pillow cannot identify the {fmt}: {exc}") from exc
    except Exception as exc:  # untrusted bytes make parsers raise anything: OSError, struct.error...
        raise CorruptImage(f"{fmt} decode failed: {type(exc).__name__}: {exc}") from exc

    notes: list[str] = []
    n_frames = int(getattr(image, "n_frames", 1))
    if n_frames > 1:  # an animated PNG: Pillow has loaded the first frame
        notes.append(f"The file holds {n_frames} frames; only the first is shown and analysed.")
    original_shape = (height, width)
    oriented: Image.Image = image
    try:
        oriented = ImageOps.exif_transpose(image)
    except Exception as exc:  # a malformed EXIF block should not cost the doctor the image
        log.warning("image %s: EXIF orientation ignored (%s)", sha[:12], exc)
        notes.append("The orientation stored in the file could not be read; the image is shown as stored.")

    mean_chroma = spread = 0.0
    mode = oriented.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grey PNG. Image.convert('L') would clip every value above 255 to white, so go through numpy.
        raw = np.asarray(oriented).astype(np.float64)
        pixels, windowing = _percentile_window(raw)
        bit_depth = 16
    else:
        if mode in ("L", "LA", "1"):
            grey = np.asarray(oriented.convert("L"), dtype=np.float64)
        else:  # RGB, RGBA, P, PA, CMYK, YCbCr...: measure the colour before it is thrown away
            rgb = np.asarray(oriented.convert("RGB"))
            mean_chroma, spread = _colour_stats(rgb)
            grey = _luma(rgb.astype(np.float64))
        pixels = grey / 255.0
        windowing = "full range (8-bit)"
        bit_depth = 8
    return XrayImage(
        pixels=_finish(pixels),
        source_format=fmt,
        original_shape=original_shape,
        sha256=sha,
        bit_depth=bit_depth,
        windowing=windowing,
        mean_chroma=mean_chroma,
        chroma_spread=spread,
        notes=tuple(notes),
    )


# ----------------------------------------------------------------------------------------------------
# DICOM
# ----------------------------------------------------------------------------------------------------


def _read_dicom(data: bytes, sha: str, settings: Settings) -> XrayImage:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=data.startswith(b"DICM"))
    except InvalidDicomError as exc:
        raise CorruptImage(f"not a valid DICOM file: {exc}") from exc
    except Exception as exc:  # truncated headers raise EOFError, struct.error, ValueError...
        raise CorruptImage(f"DICOM parse failed: {type(exc).__name__}: {exc}") from exc

    if len(ds) == 0:  # pydicom gives up quietly (a warning) on some truncated files
        raise CorruptImage("no DICOM element could be read")
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        if _PIXEL_DATA_TAG_LE in data or _PIXEL_DATA_TAG_BE in data:
            # The bytes hold a Pixel Data element that the parser lost: truncated, not a report.
            raise CorruptImage("Pixel Data tag present in the bytes but not parsed")
        meta = getattr(ds, "file_meta", None)
        if "SOPClassUID" not in ds and (meta is None or "MediaStorageSOPClassUID" not in meta):
            # Every DICOM object names its SOP class; without one this is noise behind a DICM marker.
            raise CorruptImage("no SOP Class UID and no pixel data")
        raise NoPixelData(f"modality {ds.get('Modality')!r}, SOP class {ds.get('SOPClassUID')!r}")
    info = _dicom_info(ds)
    _check_dicom_scope(info)
    if info.rows <= 0 or info.cols <= 0:
        raise CorruptImage(f"Rows/Columns missing or zero: {info.rows}x{info.cols}")
    _check_pixel_count(info.cols, info.rows, settings)

    notes: list[str] = []
    if info.number_of_frames > 1:
        notes.append(
            f"The DICOM file holds {info.number_of_frames} frames; only the first is shown and analysed."
        )
        log.info("DICOM %s has %d frames; using the first", sha[:12], info.number_of_frames)
    arr = _decode_first_frame(ds)

    photometric = (info.photometric or "MONOCHROME2").upper()
    bits_stored = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 8)
    mean_chroma = spread = 0.0
    if arr.ndim == 3 or photometric == "PALETTE COLOR":
        pixels, windowing, mean_chroma, spread = _dicom_colour_to_grey(arr, ds, photometric, bits_stored)
    else:
        pixels, windowing = _dicom_grey(arr, ds, bits_stored)
        if photometric == "MONOCHROME1":
            # MONOCHROME1 shows the lowest value as white; flip so that every image reaching the models is
            # MONOCHROME2 (air dark, bone bright), as the NIH training images are.
            pixels = 1.0 - pixels
            windowing += ", MONOCHROME1 inverted"
    return XrayImage(
        pixels=_finish(pixels),
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


def _dicom_info(ds: Dataset) -> DicomInfo:
    def text(keyword: str) -> str | None:
        value = ds.get(keyword)
        if value is None:
            return None
        value = str(value).strip()
        return value or None

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


def is_chest_body_part(body_part: str | None) -> bool:
    """Whether a DICOM Body Part Examined value names the chest (see ``CHEST_BODY_PART_WORDS``)."""
    if not body_part:
        return False
    return any(word in CHEST_BODY_PART_WORDS for word in re.split(r"[^A-Z]+", body_part.upper()))


def _check_dicom_scope(info: DicomInfo) -> None:
    modality = info.modality or ""
    if modality in RADIOGRAPHY_MODALITIES:
        # An absent body part is common on exported chest films (the NIH DICOMs have none): accept it.
        if info.body_part and not is_chest_body_part(info.body_part):
            raise NotChestXray(
                f"{modality} body part {info.body_part!r}",
                user_message=(
                    f"This X-ray is labelled as showing the {info.body_part.lower()}, not the chest; only "
                    "chest X-rays can be analysed."
                ),
            )
        return
    if modality in SECONDARY_CAPTURE_MODALITIES and is_chest_body_part(info.body_part):
        return
    what = _MODALITY_WORDS.get(modality, f"a '{modality}' image" if modality else "an image of unknown type")
    raise WrongModality(
        f"modality {modality!r}, body part {info.body_part!r}",
        user_message=(
            f"This DICOM file is {what}, not a chest X-ray; only chest radiographs (CR, DX) can be analysed."
        ),
    )


def _decode_first_frame(ds: Dataset) -> np.ndarray:
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
        raise CorruptImage(f"DICOM pixel decode failed: {type(exc).__name__}: {exc}") from exc


def _dicom_grey(arr: np.ndarray, ds: Dataset, bits_stored: int) -> tuple[np.ndarray, str]:
    """Stored values -> [0, 1]: Modality LUT then VOI LUT / window, else percentiles or the full range."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    has_modality_lut = bool(ds.get("ModalityLUTSequence")) or (
        "RescaleSlope" in ds and "RescaleIntercept" in ds
    )
    has_voi = bool(ds.get("VOILUTSequence")) or ("WindowCenter" in ds and "WindowWidth" in ds)
    try:
        values = apply_modality_lut(arr, ds)
    except Exception as exc:
        raise CorruptImage(f"Modality LUT failed: {type(exc).__name__}: {exc}") from exc

    if has_voi:
        try:
            windowed = np.asarray(apply_voi_lut(values, ds, index=0), dtype=np.float64)
            low, high = _voi_output_range(values, ds)
            if high > low:
                how = "VOI LUT" if ds.get("VOILUTSequence") else _describe_window(ds)
                return (windowed - low) / (high - low), how
            log.warning("VOI output range is empty (%s..%s); falling back to percentiles", low, high)
        except Exception as exc:  # a broken window (width 0, bad LUT) should not cost the doctor the image
            log.warning("VOI LUT / window not applied (%s: %s); using percentiles", type(exc).__name__, exc)
    values = np.asarray(values, dtype=np.float64)
    if bits_stored <= 8 and not has_modality_lut:
        # 8-bit data is already display-ready (the NIH DICOMs are 8-bit exports of the PNGs): keep it as is,
        # so that a DICOM and the PNG of the same image give the same pixels.
        signed = int(ds.get("PixelRepresentation") or 0) == 1
        low = -(2 ** (bits_stored - 1)) if signed else 0
        return (values - low) / (2**bits_stored - 1), f"full range ({bits_stored}-bit)"
    return _percentile_window(values)


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
    rgb = np.asarray(arr, dtype=np.float64) / scale
    rgb8 = np.round(np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    mean_chroma, spread = _colour_stats(rgb8)
    return _luma(rgb), f"RGB to grey (ITU-R 601 luma), {bits_stored}-bit", mean_chroma, spread


# ----------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------


def _check_pixel_count(width: int, height: int, settings: Settings) -> None:
    if width * height > settings.max_image_pixels:
        raise TooManyPixels(
            f"{width}x{height} = {width * height} px > {settings.max_image_pixels}",
            user_message=(
                f"This image declares {width} x {height} pixels, more than the "
                f"{settings.max_image_pixels / 1e6:g} million this software accepts; the file may be damaged."
            ),
        )


def _percentile_window(values: np.ndarray) -> tuple[np.ndarray, str]:
    """Map the 0.5th-99.5th percentile of ``values`` onto [0, 1] (robust to a few hot or dead pixels)."""
    stride = _stride(values)
    low, high = np.percentile(values[::stride, ::stride], PERCENTILE_WINDOW)
    if high <= low:  # a constant image: leave it flat, check_plausible_chest refuses it as blank
        return np.zeros_like(values, dtype=np.float64), "constant image"
    return (values - low) / (high - low), (
        f"percentile window {PERCENTILE_WINDOW[0]:g}-{PERCENTILE_WINDOW[1]:g}% ({low:g}..{high:g})"
    )


def _stride(arr: np.ndarray) -> int:
    # Statistics on about a million pixels are as good as on all of them, and faster on a 4k detector image.
    return max(1, int(np.sqrt(arr.shape[0] * arr.shape[1] / 1_000_000)))


def _luma(rgb: np.ndarray) -> np.ndarray:
    # ITU-R 601-2, the weights Pillow's convert('L') uses, so RGB PNGs and RGB DICOMs turn grey the same way.
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def _colour_stats(rgb: np.ndarray) -> tuple[float, float]:
    """(mean chroma, chromaticity spread) of a uint8 RGB image, on a copy at most 256 px on a side.

    Mean chroma is the average of max(R,G,B) - min(R,G,B). The spread is the standard deviation of the
    chromaticity (each pixel's R, G, B divided by their sum) over pixels that are not dark: a grey image
    tinted one colour has constant chromaticity (spread ~0) whatever its tint, a photograph has many hues.
    """
    small = Image.fromarray(np.ascontiguousarray(rgb[..., :3]))
    small.thumbnail((256, 256))
    a = np.asarray(small, dtype=np.float64) / 255.0
    chroma = float((a.max(axis=-1) - a.min(axis=-1)).mean())
    total = a.sum(axis=-1)
    lit = total > 0.3  # dark pixels have noisy chromaticity
    if int(lit.sum()) < 100:
        return chroma, 0.0
    chromaticity = a[lit] / total[lit][:, None]
    spread = float(np.sqrt(chromaticity.var(axis=0).sum()))
    return chroma, spread


def _finish(pixels: np.ndarray) -> np.ndarray:
    out = np.clip(pixels, 0.0, 1.0).astype(np.float32)
    out.flags.writeable = False  # XrayImage is frozen; so are its pixels
    return out


def _describe_unsupported(data: bytes) -> str:
    for magic, offset, what in _OTHER_MAGICS:
        if data[offset : offset + len(magic)] == magic:
            return what
    return "not an image this software recognises"


def _extension_matches(filename: str, fmt: SourceFormat) -> bool:
    ext = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    return ext in {"png": {"png"}, "jpeg": {"jpg", "jpeg", "jpe"}, "dicom": {"dcm", "dicom", ""}}[fmt]


__all__ = [
    "CHEST_BODY_PART_WORDS",
    "CorruptImage",
    "DicomInfo",
    "EmptyFile",
    "FileTooLarge",
    "ImageRejected",
    "NoPixelData",
    "NotChestXray",
    "PlausibilityCheck",
    "RADIOGRAPHY_MODALITIES",
    "TooManyPixels",
    "UnsupportedFormat",
    "WrongModality",
    "XrayImage",
    "check_plausible_chest",
    "is_chest_body_part",
    "read_chest_xray",
    "read_image",
    "sniff_format",
    "thumbnail",
    "to_uint8",
]
