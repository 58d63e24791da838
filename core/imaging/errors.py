"""The typed refusals of an upload: every image the product will not analyse raises one of these.

Each carries a stable machine ``code`` (logged, stored, returned by the CLI) and a ``user_message`` written
for a doctor.
"""

from __future__ import annotations

from typing import ClassVar

from core.errors import AppError


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


class TruncatedFile(CorruptImage):
    """The file ends before the image it declares does (cut short in a transfer or a copy).

    The same ``code`` as :class:`CorruptImage` (a truncated file is a damaged one); the message says which.
    """

    default_message = "The file is incomplete (truncated): it ends before its image does; please upload the whole file again."


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
