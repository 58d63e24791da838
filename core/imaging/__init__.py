"""Reading radiographs: PNG, JPEG or DICOM bytes in, one normalised grayscale array out, or a typed refusal.

Every image the product analyses comes through :func:`read_image`, so the classifier, the detector and the
pages all see the same thing: a ``float32`` array in ``[0, 1]``, height x width, one channel, displayed the
MONOCHROME2 way (air dark, bone bright). Anything that cannot be that is refused with a subclass of
:class:`ImageRejected`, which carries a stable machine ``code`` and a ``user_message`` written for a doctor.

This module is the package's public face; the work is done in one module per job:

* :mod:`~core.imaging.read`: :func:`read_image` (format sniffing, size limits, PNG and JPEG through Pillow)
  and :func:`read_chest_xray` (read, then the scope rules: the one call an upload handler needs);
* :mod:`~core.imaging.dicom`: DICOM decoding with pydicom, :class:`DicomInfo` and the header-only reads;
* :mod:`~core.imaging.scope`: what counts as a chest X-ray, in two layers: the DICOM tags (modality, body
  part, checked before the pixels are decoded) and :func:`check_plausible_chest` on the decoded pixels,
  which takes ``extra_checks`` so that the classifier can add its learned check without this package
  importing a model runtime;
* :mod:`~core.imaging.errors`: the refusals; :mod:`~core.imaging.image`: :class:`XrayImage`;
  :mod:`~core.imaging._pixels`: shared pixel helpers (:func:`to_uint8`, the one 8-bit conversion);
* :mod:`~core.imaging.storage`: the content-addressed files of the studies.

No Streamlit and no TensorFlow here: this package runs under plain pytest and the command line.
"""

from __future__ import annotations

from core.imaging._pixels import to_uint8
from core.imaging.dicom import DicomInfo
from core.imaging.errors import (
    CorruptImage,
    EmptyFile,
    FileTooLarge,
    ImageRejected,
    NoPixelData,
    NotChestXray,
    TooManyPixels,
    TruncatedFile,
    UnsupportedFormat,
    WrongModality,
)
from core.imaging.image import SourceFormat, XrayImage
from core.imaging.read import read_chest_xray, read_image, sniff_format
from core.imaging.scope import (
    CHEST_BODY_PART_WORDS,
    RADIOGRAPHY_MODALITIES,
    PlausibilityCheck,
    check_plausible_chest,
    is_chest_body_part,
)

__all__ = [
    "CHEST_BODY_PART_WORDS",
    "RADIOGRAPHY_MODALITIES",
    "CorruptImage",
    "DicomInfo",
    "EmptyFile",
    "FileTooLarge",
    "ImageRejected",
    "NoPixelData",
    "NotChestXray",
    "PlausibilityCheck",
    "SourceFormat",
    "TooManyPixels",
    "TruncatedFile",
    "UnsupportedFormat",
    "WrongModality",
    "XrayImage",
    "check_plausible_chest",
    "is_chest_body_part",
    "read_chest_xray",
    "read_image",
    "sniff_format",
    "to_uint8",
]
