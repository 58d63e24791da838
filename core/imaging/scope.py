"""What is in scope: a chest radiograph. The rules that refuse everything else, in two layers.

* :func:`check_dicom_scope` refuses what a DICOM file's own tags say is out of scope (modality, body part);
  the DICOM reader calls it before the pixels are decoded.
* :func:`check_plausible_chest` looks at the decoded pixels with cheap, conservative rules (size, aspect
  ratio, blank image, colour photograph). It takes ``extra_checks`` so that the classifier can add a learned
  out-of-distribution check without this package importing a model runtime.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from core.imaging._pixels import stride, to_uint8
from core.imaging.errors import NotChestXray, WrongModality
from core.imaging.image import XrayImage

if TYPE_CHECKING:
    from core.imaging.dicom import DicomInfo

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
# Colour photograph test, on the RGB image before it is turned grey (see colour_stats). Measured on real
# images (scikit-image samples and the NIH data): chest X-rays stored as RGB have spread 0 and chroma 0; an
# X-ray given a strong blue, sepia or left-to-right colour cast (a phone photo of a light box) reaches spread
# 0.038 and chroma 0.24; colour photographs have spread 0.045-0.46 or chroma 0.15-0.45 (retina: spread 0.045,
# chroma 0.445).
MAX_CHROMA_SPREAD = 0.06
MAX_MEAN_CHROMA = 0.30

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

PlausibilityCheck = Callable[[XrayImage], None]
"""A check that raises :class:`NotChestXray` for an image it judges out of scope, and returns otherwise."""


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
    std = float(img.pixels[:: stride(img.pixels), :: stride(img.pixels)].std())
    if std < MIN_PIXEL_STD:
        raise NotChestXray(
            f"pixel std {std:.4f} < {MIN_PIXEL_STD}",
            user_message="This image is blank (it shows no detail); please check the export and try again.",
        )
    levels = len(np.unique(to_uint8(img.pixels[:: stride(img.pixels), :: stride(img.pixels)])))
    if levels < MIN_GREY_LEVELS:
        raise NotChestXray(
            f"{levels} grey levels < {MIN_GREY_LEVELS}",
            user_message="This image looks like a drawing or diagram, not an X-ray; please upload the X-ray.",
        )
    for check in extra_checks:
        check(img)


def is_chest_body_part(body_part: str | None) -> bool:
    """Whether a DICOM Body Part Examined value names the chest (see ``CHEST_BODY_PART_WORDS``)."""
    if not body_part:
        return False
    return any(word in CHEST_BODY_PART_WORDS for word in re.split(r"[^A-Z]+", body_part.upper()))


def check_dicom_scope(info: DicomInfo) -> None:
    """Raise :class:`NotChestXray` or :class:`WrongModality` when the tags say this is not a chest radiograph."""
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
