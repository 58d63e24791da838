"""core.imaging: decoding contracts, windowing, DICOM handling, every refusal, and the plausibility hook.

Real images only: the project's copies in assets/samples (NIH PNGs and DICOM, NEMA CRs), pydicom's bundled
test files (shipped in its wheel, no download), scikit-image's bundled photographs, and files built here from
those real pixels (truncated, re-encoded, 16-bit, MONOCHROME1, multi-frame...).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

from core import imaging
from core.config import Settings, get_settings
from core.errors import AppError
from core.imaging import (
    CorruptImage,
    EmptyFile,
    FileTooLarge,
    ImageRejected,
    NoPixelData,
    NotChestXray,
    TooManyPixels,
    UnsupportedFormat,
    WrongModality,
    XrayImage,
    check_plausible_chest,
    is_chest_body_part,
    read_chest_xray,
    read_image,
    sniff_format,
    to_uint8,
)

ASSETS = Path(__file__).resolve().parent.parent / "assets" / "samples"
CHEST_PNG = ASSETS / "00000310_001.png"
NO_FINDING_PNG = ASSETS / "00001280_004.png"
NIH_DX = ASSETS / "nih_dx_chest_nofinding_1024.dcm"
RG1_CHEST_CR = ASSETS / "nema_rg1_chest_cr_pa_j2k_lossy.dcm"
RG3_EXTREMITY = ASSETS / "nema_rg3_extremity_cr_NOT_CHEST_j2k_lossy.dcm"


# ----------------------------------------------------------------------------------------------------------
# Helpers: real pixels, re-encoded
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chest_u8() -> np.ndarray:
    """A real NIH chest X-ray, 1024x1024 uint8."""
    return np.asarray(Image.open(CHEST_PNG))


@pytest.fixture(scope="module")
def chest_256(chest_u8: np.ndarray) -> np.ndarray:
    """The same X-ray at 256 px, made the way the shared 256 px training images were (LANCZOS)."""
    return np.asarray(Image.fromarray(chest_u8).resize((256, 256), Image.Resampling.LANCZOS))


def encode(array: np.ndarray | Image.Image, fmt: str = "PNG", **params: object) -> bytes:
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def make_dicom(
    stored: np.ndarray,
    *,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    modality: str | None = "CR",
    body_part: str | None = "CHEST",
    compress: str | None = None,
    **tags: object,
) -> bytes:
    """A Part 10 DICOM file holding ``stored`` (rows x cols, or frames x rows x cols)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ComputedRadiographyImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientID = "SYNTH0001"
    if modality is not None:
        ds.Modality = modality
    if body_part is not None:
        ds.BodyPartExamined = body_part
    ds.set_pixel_data(stored, photometric, bits_stored or stored.dtype.itemsize * 8)
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    if compress is not None:
        ds.compress(compress)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def patched_testdata(name: str, **tags: object) -> bytes:
    """One of pydicom's bundled files with some attributes changed (e.g. made a DX so that it is in scope)."""
    ds = pydicom.dcmread(get_testdata_file(name))
    for keyword, value in tags.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def settings_with(**changes: object) -> Settings:
    return dataclasses.replace(get_settings(), **changes)  # type: ignore[arg-type]


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """Let a test change CXR_* variables: get_settings() is re-read, and restored afterwards."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def refusal(action: Callable[[], object], kind: type[ImageRejected]) -> ImageRejected:
    with pytest.raises(kind) as caught:
        action()
    assert_doctor_sentence(caught.value)
    return caught.value


def assert_doctor_sentence(exc: ImageRejected) -> None:
    message = exc.user_message
    assert isinstance(message, str) and len(message) > 20
    assert message[0].isupper() and message.endswith("."), message
    for jargon in ("Traceback", "Error", "exception", "None", "0x", "b'"):
        assert jargon not in message, message


# ----------------------------------------------------------------------------------------------------------
# PNG and JPEG contracts
# ----------------------------------------------------------------------------------------------------------


def test_png_gives_float32_grey_in_unit_range_unchanged(chest_u8: np.ndarray) -> None:
    data = CHEST_PNG.read_bytes()
    image = read_image(data, CHEST_PNG.name)
    assert image.source_format == "png"
    assert image.pixels.dtype == np.float32 and image.pixels.shape == (1024, 1024)
    assert image.original_shape == (1024, 1024) and image.shape == (1024, 1024)
    assert image.pixels.min() >= 0.0 and image.pixels.max() <= 1.0
    assert image.bit_depth == 8 and image.dicom is None
    assert image.sha256 == hashlib.sha256(data).hexdigest()
    np.testing.assert_allclose(image.pixels, chest_u8 / 255.0, atol=1e-6)
    np.testing.assert_array_equal(to_uint8(image.pixels), chest_u8)


def test_pixels_are_read_only() -> None:
    image = read_image(CHEST_PNG.read_bytes())
    with pytest.raises(ValueError):
        image.pixels[0, 0] = 0.5
    with pytest.raises(dataclasses.FrozenInstanceError):
        image.bit_depth = 16  # type: ignore[misc]


def test_format_comes_from_bytes_not_extension() -> None:
    png = CHEST_PNG.read_bytes()
    assert read_image(png, "scan.dcm").source_format == "png"
    assert read_image(NIH_DX.read_bytes(), "scan.png").source_format == "dicom"
    assert sniff_format(png) == "png"
    assert sniff_format(b"\xff\xd8\xff\xe0" + b"\x00" * 20) == "jpeg"
    assert sniff_format(NIH_DX.read_bytes()) == "dicom"
    assert sniff_format(b"GIF89a" + b"\x00" * 200) is None


def test_jpeg_of_a_real_xray_matches_its_png(chest_u8: np.ndarray) -> None:
    image = read_image(encode(chest_u8, "JPEG", quality=92))
    assert image.source_format == "jpeg" and image.bit_depth == 8
    assert image.pixels.shape == chest_u8.shape
    assert float(np.abs(image.pixels - chest_u8 / 255.0).mean()) < 0.01


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P"])
def test_colour_modes_become_the_same_grey(chest_u8: np.ndarray, mode: str) -> None:
    grey = Image.fromarray(chest_u8)
    converted = grey.convert(mode)
    image = read_image(encode(converted))
    assert image.pixels.ndim == 2 and image.pixels.shape == chest_u8.shape
    # A grey picture saved as RGB/RGBA/palette is still grey: same pixels, no chroma.
    assert float(np.abs(image.pixels - chest_u8 / 255.0).max()) <= 1.5 / 255
    assert image.mean_chroma < 0.01 and image.chroma_spread < 0.01
    check_plausible_chest(image)


def test_exif_orientation_is_applied(chest_u8: np.ndarray) -> None:
    stored = chest_u8[:, :700]  # not square, so a 90 degree turn is visible in the shape
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the viewer must turn the stored image 90 degrees clockwise
    image = read_image(encode(stored, "JPEG", quality=95, exif=exif.tobytes()))
    assert image.original_shape == (1024, 700)
    assert image.pixels.shape == (700, 1024)
    expected = np.rot90(stored, k=-1) / 255.0
    assert float(np.abs(image.pixels - expected).mean()) < 0.01


def test_16bit_png_keeps_values_above_255_and_its_contrast(chest_u8: np.ndarray) -> None:
    # 12-bit detector data in a 16-bit PNG: Pillow's convert('L') would clip all of it to white.
    twelve_bit = chest_u8.astype(np.uint16) * 16 + 5
    data = encode(twelve_bit)
    assert data[24] == 16  # IHDR bit depth: really a 16-bit PNG
    image = read_image(data)
    assert image.bit_depth == 16 and "percentile" in image.windowing
    pixels = image.pixels
    assert float((pixels >= 0.999).mean()) < 0.01  # not clipped white
    assert float(pixels.std()) > 0.15  # contrast kept
    assert np.corrcoef(pixels.ravel(), chest_u8.ravel())[0, 1] > 0.99


def test_16bit_png_of_real_15bit_data_is_not_quantised_to_8_bits() -> None:
    raw = pydicom.dcmread(RG1_CHEST_CR).pixel_array  # real 15-bit CR values
    image = read_image(encode(raw.astype(np.uint16)))
    assert image.bit_depth == 16
    assert len(np.unique(image.pixels[::4, ::4])) > 2000  # far more than 256 grey levels survive
    assert float(image.pixels.std()) > 0.1


def test_16bit_png_using_the_full_range(chest_u8: np.ndarray) -> None:
    full = chest_u8.astype(np.uint16) * 257
    image = read_image(encode(full))
    assert image.bit_depth == 16
    assert np.corrcoef(image.pixels.ravel(), chest_u8.ravel())[0, 1] > 0.99
    assert float(image.pixels.std()) > 0.15


# ----------------------------------------------------------------------------------------------------------
# DICOM contracts
# ----------------------------------------------------------------------------------------------------------


def test_nih_dx_dicom_tags_and_pixels() -> None:
    image = read_image(NIH_DX.read_bytes(), NIH_DX.name)
    info = image.dicom
    assert info is not None
    assert info.patient_id == "Covid0000" and info.patient_name == "Covid0000"
    assert info.modality == "DX" and info.body_part is None
    assert info.photometric == "MONOCHROME2"
    assert (info.rows, info.cols) == (1024, 1024) and info.number_of_frames == 1
    assert info.transfer_syntax == "1.2.840.10008.1.2"
    assert info.transfer_syntax_name == "Implicit VR Little Endian"
    assert info.study_description == "No Finding"
    assert image.source_format == "dicom" and image.bit_depth == 8
    raw = pydicom.dcmread(NIH_DX).pixel_array
    np.testing.assert_allclose(image.pixels, raw / 255.0, atol=1e-6)
    check_plausible_chest(image)


def test_nema_chest_cr_j2k_monochrome1_is_inverted_with_its_window() -> None:
    image = read_image(RG1_CHEST_CR.read_bytes())
    info = image.dicom
    assert info is not None
    assert (info.modality, info.body_part, info.view_position) == ("CR", "CHEST", "PA")
    assert info.photometric == "MONOCHROME1" and info.transfer_syntax_name == "JPEG 2000 Image Compression"
    assert info.patient_id == "9RG1" and str(info.study_date) == "2004-08-26"
    assert image.bit_depth == 15 and image.pixels.shape == (1955, 1841)
    assert "MONOCHROME1 inverted" in image.windowing and "15000" in image.windowing

    # The stored window (centre 15000, width 30000, LINEAR) then inversion, computed independently.
    raw = pydicom.dcmread(RG1_CHEST_CR).pixel_array.astype(np.float64)
    expected = 1.0 - np.clip((raw - 14999.5) / 29999.0 + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(image.pixels, expected, atol=2e-3)

    # Anatomy: lungs dark, mediastinum and spine bright, as in every MONOCHROME2 training image.
    p = image.pixels
    rows = slice(int(0.3 * p.shape[0]), int(0.55 * p.shape[0]))
    lungs = np.concatenate([p[rows, int(0.2 * p.shape[1]) : int(0.35 * p.shape[1])].ravel(),
                            p[rows, int(0.65 * p.shape[1]) : int(0.8 * p.shape[1])].ravel()])  # fmt: skip
    mediastinum = p[rows, int(0.46 * p.shape[1]) : int(0.54 * p.shape[1])]
    assert float(mediastinum.mean()) > float(lungs.mean()) + 0.1
    check_plausible_chest(image)


def test_synthesised_monochrome1_reads_back_as_the_original(chest_u8: np.ndarray) -> None:
    # The same real X-ray stored MONOCHROME1 (white = 0): reading must flip it back exactly.
    inverted = (255 - chest_u8).astype(np.uint8)
    mono1 = read_image(make_dicom(inverted, photometric="MONOCHROME1", bits_stored=8))
    mono2 = read_image(make_dicom(chest_u8, photometric="MONOCHROME2", bits_stored=8))
    np.testing.assert_allclose(mono1.pixels, chest_u8 / 255.0, atol=1e-6)
    np.testing.assert_allclose(mono1.pixels, mono2.pixels, atol=1e-6)
    assert float(np.corrcoef(mono1.pixels.ravel(), inverted.ravel())[0, 1]) < -0.99


def test_12bit_dicom_with_window_applies_it(chest_u8: np.ndarray) -> None:
    stored = chest_u8.astype(np.uint16) * 16  # 0..4080
    centre, width = 2000.0, 1200.0
    image = read_image(make_dicom(stored, bits_stored=12, WindowCenter=centre, WindowWidth=width))
    expected = np.clip((stored - (centre - 0.5)) / (width - 1) + 0.5, 0.0, 1.0)
    np.testing.assert_allclose(image.pixels, expected, atol=1e-4)
    assert "window centre 2000 width 1200" in image.windowing
    # A narrow window really changes the picture: it is not the percentile fallback.
    fallback = read_image(make_dicom(stored, bits_stored=12))
    assert float(np.abs(fallback.pixels - image.pixels).mean()) > 0.05


def test_modality_lut_is_applied_before_the_window(chest_u8: np.ndarray) -> None:
    # Stored values s mean s * 2 - 1000 "units"; the window is given in units, so it must see them.
    stored = chest_u8.astype(np.uint16) * 16
    plain = read_image(make_dicom(stored, bits_stored=12, WindowCenter=2000.0, WindowWidth=1200.0))
    rescaled = read_image(
        make_dicom(
            stored,
            bits_stored=12,
            RescaleSlope=2.0,
            RescaleIntercept=-1000.0,
            WindowCenter=2000.0 * 2 - 1000,
            WindowWidth=1200.0 * 2,
        )
    )
    np.testing.assert_allclose(rescaled.pixels, plain.pixels, atol=2e-3)


def test_voi_lut_sequence_is_applied_and_rescaled_to_its_real_range(chest_u8: np.ndarray) -> None:
    # A LUT that declares 16-bit output but only reaches 4095 (a common vendor quirk): must not look black.
    stored = chest_u8.astype(np.uint16) * 16
    entries = 4096
    lut = (np.sqrt(np.arange(entries) / (entries - 1)) * 4095).astype(np.uint16)  # a gamma-like curve
    item = Dataset()
    item.LUTDescriptor = [entries, 0, 16]
    item.add_new("LUTData", "US", lut.tolist())  # LUT Data is US or OW; say which
    data = make_dicom(stored, bits_stored=12, VOILUTSequence=[item])
    image = read_image(data)
    assert image.windowing.startswith("VOI LUT")
    expected = lut[np.clip(stored, 0, entries - 1)] / 4095.0
    np.testing.assert_allclose(image.pixels, expected, atol=1e-4)
    # Divided by the declared 16-bit range instead, the brightest pixel (bone) would be 0.06: black.
    assert float(image.pixels.max()) > 0.85


def test_high_bit_dicom_without_window_uses_robust_percentiles(chest_u8: np.ndarray) -> None:
    stored = chest_u8.astype(np.uint16) * 16 + 300
    stored[0, 0] = 4095  # one hot pixel must not squash the rest
    image = read_image(make_dicom(stored, bits_stored=12))
    assert "percentile" in image.windowing
    assert float(image.pixels.std()) > 0.15
    assert 0.002 < float((image.pixels >= 1.0).mean()) < 0.02  # about 0.5% saturate at each end
    assert np.corrcoef(image.pixels.ravel(), chest_u8.ravel())[0, 1] > 0.99


def test_multiframe_dicom_uses_the_first_frame_and_says_so(chest_u8: np.ndarray) -> None:
    frames = np.stack([chest_u8, 255 - chest_u8]).astype(np.uint8)
    image = read_image(make_dicom(frames, bits_stored=8))
    assert image.dicom is not None and image.dicom.number_of_frames == 2
    np.testing.assert_allclose(image.pixels, chest_u8 / 255.0, atol=1e-6)
    assert any("2 frames" in note and "first" in note for note in image.notes)


def test_jpeg2000_lossless_and_rle_dicoms_decode_exactly(chest_u8: np.ndarray) -> None:
    stored = chest_u8[::4, ::4].astype(np.uint16) * 16  # 12-bit, 256 px keeps the encoder quick
    reference = read_image(make_dicom(stored, bits_stored=12, WindowCenter=2048.0, WindowWidth=4096.0))
    for syntax in (JPEG2000Lossless, RLELossless):
        data = make_dicom(stored, bits_stored=12, WindowCenter=2048.0, WindowWidth=4096.0, compress=syntax)
        image = read_image(data)
        assert image.dicom is not None and image.dicom.transfer_syntax == syntax
        np.testing.assert_array_equal(image.pixels, reference.pixels)


def test_jpeg_ls_lossless_dicom_decodes_exactly() -> None:
    # pydicom's bundled JPEG-LS file, relabelled DX so that it is in scope: needs pylibjpeg-libjpeg.
    jls = read_image(patched_testdata("MR_small_jpeg_ls_lossless.dcm", Modality="DX"))
    raw = read_image(patched_testdata("MR_small.dcm", Modality="DX"))
    assert jls.dicom is not None and "JPEG-LS" in (jls.dicom.transfer_syntax_name or "")
    np.testing.assert_array_equal(jls.pixels, raw.pixels)
    assert float(jls.pixels.std()) > 0.1


def test_jpeg_lossless_sv1_colour_dicom_decodes_and_turns_grey() -> None:
    # The only JPEG Lossless SV1 file pydicom bundles is an RGB secondary capture: relabel it a chest DX.
    sv1 = read_image(patched_testdata("SC_rgb_jpeg_gdcm.dcm", Modality="DX", BodyPartExamined="CHEST"))
    rle = read_image(patched_testdata("SC_rgb_rle.dcm", Modality="DX", BodyPartExamined="CHEST"))
    assert sv1.dicom is not None and "Selection Value 1" in (sv1.dicom.transfer_syntax_name or "")
    assert sv1.pixels.ndim == 2
    np.testing.assert_array_equal(sv1.pixels, rle.pixels)
    assert sv1.mean_chroma > 0.3  # it is a colour test pattern: the plausibility check will refuse it
    with pytest.raises(NotChestXray):
        check_plausible_chest(sv1)


@pytest.mark.parametrize(
    ("modality", "body_part", "accepted"),
    [
        ("CR", "CHEST", True),
        ("DX", None, True),
        ("DX", "THORAX", True),
        ("DR", "CHEST PA", True),
        ("OT", "CHEST", True),
        (None, "CHEST", True),
        ("OT", None, False),
        ("CR", "HAND", False),
        ("DX", "TSPINE", False),
        ("CT", "CHEST", False),
        ("MG", "BREAST", False),
        ("XA", "CHEST", False),
    ],
)
def test_dicom_scope_by_modality_and_body_part(
    chest_256: np.ndarray, modality: str | None, body_part: str | None, accepted: bool
) -> None:
    data = make_dicom(chest_256, bits_stored=8, modality=modality, body_part=body_part)
    if accepted:
        assert read_image(data).dicom is not None
    else:
        with pytest.raises((WrongModality, NotChestXray)):
            read_image(data)


@pytest.mark.parametrize(
    ("value", "chest"),
    [("CHEST", True), ("chest", True), ("PORT CHEST", True), ("CHEST_PA", True), ("Thorax", True),
     ("LUNG", True), ("", False), (None, False), ("EXTREMITY", False), ("THORACIC SPINE", False),
     ("ABDOMEN", False), ("SKULL", False)],
)  # fmt: skip
def test_is_chest_body_part(value: str | None, chest: bool) -> None:
    assert is_chest_body_part(value) is chest


# ----------------------------------------------------------------------------------------------------------
# Refusals
# ----------------------------------------------------------------------------------------------------------


def test_refusal_codes_are_stable_and_distinct() -> None:
    codes = {
        EmptyFile: "empty_file",
        FileTooLarge: "file_too_large",
        UnsupportedFormat: "unsupported_format",
        CorruptImage: "corrupt_image",
        TooManyPixels: "too_many_pixels",
        NoPixelData: "no_pixel_data",
        WrongModality: "wrong_modality",
        NotChestXray: "not_chest_xray",
    }
    for kind, code in codes.items():
        assert issubclass(kind, ImageRejected) and kind.code == code
        exc = kind("technical detail")
        assert exc.code == code and exc.detail == "technical detail"
        assert_doctor_sentence(exc)
        # Pages show str(error) for every AppError: it must be the doctor's sentence, never the detail.
        assert isinstance(exc, AppError) and str(exc) == exc.user_message
        assert "technical detail" in repr(exc) and code in repr(exc)
    assert len(set(codes.values())) == len(codes)


def test_empty_file() -> None:
    exc = refusal(lambda: read_image(b""), EmptyFile)
    assert exc.code == "empty_file"


def test_file_over_the_default_limit_is_refused_before_decoding() -> None:
    assert get_settings().max_upload_mb == 50
    # 51 MB that start like a PNG but are not one: the size check must come first.
    data = CHEST_PNG.read_bytes()[:64] + bytes(51 * 1024 * 1024)
    exc = refusal(lambda: read_image(data), FileTooLarge)
    assert "51 MB" in exc.user_message and "50 MB" in exc.user_message


@pytest.mark.usefixtures("fresh_settings")
def test_upload_limit_comes_from_settings_env(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = NIH_DX.read_bytes()  # 1,049,368 bytes: just over 1 MiB
    monkeypatch.setenv("CXR_MAX_UPLOAD_MB", "1")
    get_settings.cache_clear()
    refusal(lambda: read_image(data), FileTooLarge)
    monkeypatch.setenv("CXR_MAX_UPLOAD_MB", "2")
    get_settings.cache_clear()
    assert read_image(data).dicom is not None
    # An explicit Settings wins over the environment.
    refusal(lambda: read_image(data, settings=settings_with(max_upload_mb=1)), FileTooLarge)


@pytest.mark.parametrize(
    ("data", "named"),
    [
        (np.random.default_rng(7).bytes(4096), None),
        (b"%PDF-1.7\n" + bytes(500), "PDF"),
        (b"GIF89a" + bytes(500), "GIF"),
        (b"II*\x00" + bytes(500), "TIFF"),
        (b"PK\x03\x04" + bytes(500), "ZIP"),
        (b"Patient report: chest clear.", None),
    ],
)
def test_non_image_files_are_unsupported(data: bytes, named: str | None) -> None:
    exc = refusal(lambda: read_image(data, "upload.png"), UnsupportedFormat)
    if named:
        assert named in exc.user_message
    assert "PNG, JPEG or DICOM" in exc.user_message


def test_truncated_png_is_corrupt() -> None:
    data = CHEST_PNG.read_bytes()
    exc = refusal(lambda: read_image(data[: len(data) // 2]), CorruptImage)
    # issue 13: a file cut short says so (same code, corrupt_image)
    assert exc.code == "corrupt_image"
    assert exc.user_message.startswith("The file is incomplete (truncated)")
    # Cut just before its end marker: the pixels decode, but the transfer was incomplete (verify() sees it).
    refusal(lambda: read_image(data[:-12]), CorruptImage)


def test_png_with_a_damaged_chunk_is_corrupt() -> None:
    data = bytearray(CHEST_PNG.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte inside the image data: the chunk CRC no longer matches
    refusal(lambda: read_image(bytes(data)), CorruptImage)


def test_truncated_jpeg_is_corrupt(chest_u8: np.ndarray) -> None:
    data = encode(chest_u8, "JPEG", quality=90)
    refusal(lambda: read_image(data[: len(data) // 2]), CorruptImage)


def test_truncated_dicoms_are_corrupt() -> None:
    for data in (NIH_DX.read_bytes(), RG1_CHEST_CR.read_bytes()):
        refusal(lambda data=data: read_image(data[: len(data) // 2]), CorruptImage)
    refusal(lambda: read_image(patched_testdata("MR_truncated.dcm", Modality="DX")), CorruptImage)
    # The DICOM magic followed by garbage.
    refusal(lambda: read_image(bytes(128) + b"DICM" + b"\x02\x00\x10" + bytes(40)), CorruptImage)


def test_png_declaring_a_huge_size_is_refused_from_its_header() -> None:
    # A 100,000 x 100,000 PNG header with no image data: refused before anything is decompressed.
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b"")
    exc = refusal(lambda: read_image(bomb), TooManyPixels)
    assert exc.code == "too_many_pixels"


@pytest.mark.usefixtures("fresh_settings")
def test_pixel_limit_comes_from_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = CHEST_PNG.read_bytes()  # 1024 x 1024 = 1,048,576 pixels
    monkeypatch.setenv("CXR_MAX_IMAGE_PIXELS", "1000000")
    get_settings.cache_clear()
    exc = refusal(lambda: read_image(data), TooManyPixels)
    assert "1024 x 1024" in exc.user_message
    monkeypatch.setenv("CXR_MAX_IMAGE_PIXELS", "1048576")
    get_settings.cache_clear()
    assert read_image(data).shape == (1024, 1024)


def test_dicom_pixel_limit_is_checked_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def must_not_decode(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("pixel data decoded before the pixel limit was checked")

    monkeypatch.setattr(imaging.dicom, "_decode_first_frame", must_not_decode)
    data = RG1_CHEST_CR.read_bytes()  # 1955 x 1841 = 3.6 million pixels
    exc = refusal(lambda: read_image(data, settings=settings_with(max_image_pixels=3_000_000)), TooManyPixels)
    assert "1841 x 1955" in exc.user_message


def test_dicom_without_pixel_data() -> None:
    ds = pydicom.dcmread(NIH_DX)
    del ds.PixelData
    buffer = io.BytesIO()
    ds.save_as(buffer)
    # issue 13: an image (Rows, Columns) whose file ends before its pixels is a file cut short, not a report
    exc = refusal(lambda: read_image(buffer.getvalue()), CorruptImage)
    assert "truncated" in exc.user_message
    # A real structured report (pydicom's bundled SR).
    exc = refusal(lambda: read_image(Path(get_testdata_file("test-SR.dcm")).read_bytes()), NoPixelData)
    assert exc.code == "no_pixel_data"


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("CT_small.dcm", "CT scan"),
        ("MR_small.dcm", "MRI"),
        ("examples_rgb_color.dcm", "ultrasound"),
        ("JPEG2000.dcm", "nuclear medicine"),
        ("SC_rgb_rle.dcm", "secondary capture"),
    ],
)
def test_other_modalities_are_refused(name: str, words: str) -> None:
    data = Path(get_testdata_file(name)).read_bytes()
    exc = refusal(lambda: read_image(data), WrongModality)
    assert words in exc.user_message


def test_extremity_radiograph_is_not_a_chest_xray() -> None:
    exc = refusal(lambda: read_image(RG3_EXTREMITY.read_bytes()), NotChestXray)
    assert "extremity" in exc.user_message


# ----------------------------------------------------------------------------------------------------------
# Plausibility (pixels) and the hook for the learned check
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(ASSETS.glob("*.png")) + [NIH_DX, RG1_CHEST_CR], ids=lambda p: p.name)
def test_every_sample_chest_xray_is_accepted(path: Path) -> None:
    image = read_chest_xray(path.read_bytes(), path.name)
    assert isinstance(image, XrayImage)


def test_grey_256px_and_64px_xrays_are_accepted(chest_256: np.ndarray) -> None:
    # The training set's 256 px grey PNGs, and its 64 px RGB ones, must never be refused.
    check_plausible_chest(read_image(encode(chest_256)))
    small_rgb = Image.fromarray(chest_256).resize((64, 64), Image.Resampling.LANCZOS).convert("RGB")
    check_plausible_chest(read_image(encode(small_rgb)))


@pytest.mark.parametrize("tint", [(1.0, 0.9, 0.75), (0.6, 0.8, 1.0)], ids=["sepia", "strong-blue"])
def test_tinted_xray_photo_is_accepted(chest_u8: np.ndarray, tint: tuple[float, float, float]) -> None:
    # A phone photo of a film on a light box has a colour cast, but one hue: it is still an X-ray.
    rgb = (chest_u8[..., None] * np.array(tint)).clip(0, 255).astype(np.uint8)
    image = read_image(encode(rgb, "JPEG", quality=85))
    assert image.mean_chroma > 0.05
    check_plausible_chest(image)


@pytest.mark.parametrize("name", ["astronaut", "coffee", "chelsea", "rocket", "retina"])
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_colour_photographs_are_refused(name: str, fmt: str) -> None:
    import skimage.data

    photo = np.asarray(getattr(skimage.data, name)())[..., :3]
    image = read_image(encode(photo, fmt))
    exc = refusal(lambda: check_plausible_chest(image), NotChestXray)
    assert "colour" in exc.user_message


def test_too_small_image_is_refused(chest_u8: np.ndarray) -> None:
    tiny = np.asarray(Image.fromarray(chest_u8).resize((48, 48), Image.Resampling.LANCZOS))
    exc = refusal(lambda: read_chest_xray(encode(tiny)), NotChestXray)
    assert "48 x 48" in exc.user_message


def test_extreme_aspect_ratio_is_refused(chest_u8: np.ndarray) -> None:
    refusal(lambda: read_chest_xray(encode(chest_u8[:400, :])), NotChestXray)  # 2.56 : 1
    read_chest_xray(encode(chest_u8[:600, :]))  # 1.7 : 1 is still a chest film


def test_blank_image_is_refused() -> None:
    refusal(lambda: read_chest_xray(encode(np.full((512, 512), 128, np.uint8))), NotChestXray)
    black = make_dicom(np.zeros((512, 512), np.uint16), bits_stored=12)
    refusal(lambda: read_chest_xray(black), NotChestXray)


def test_two_level_drawing_is_refused(chest_u8: np.ndarray) -> None:
    mask = np.where(chest_u8 > 128, 255, 0).astype(np.uint8)  # a lung mask drawn from the X-ray
    exc = refusal(lambda: read_chest_xray(encode(mask)), NotChestXray)
    assert "drawing" in exc.user_message


def test_extra_checks_hook_runs_after_the_built_in_rules() -> None:
    seen: list[XrayImage] = []

    def learned_ood(img: XrayImage) -> None:
        seen.append(img)
        raise NotChestXray("ood score 0.97", user_message="This image does not look like a chest X-ray.")

    image = read_image(CHEST_PNG.read_bytes())
    check_plausible_chest(image, extra_checks=[lambda _img: None])
    with pytest.raises(NotChestXray) as caught:
        check_plausible_chest(image, extra_checks=[learned_ood])
    assert caught.value.detail == "ood score 0.97"
    assert seen == [image]
    with pytest.raises(NotChestXray):
        read_chest_xray(CHEST_PNG.read_bytes(), extra_checks=[learned_ood])
    # A refused-by-rule image never reaches the (expensive) learned check.
    seen.clear()
    with pytest.raises(NotChestXray):
        read_chest_xray(encode(np.full((512, 512), 128, np.uint8)), extra_checks=[learned_ood])
    assert seen == []


# ----------------------------------------------------------------------------------------------------------
# Helpers and boundaries
# ----------------------------------------------------------------------------------------------------------


def test_to_uint8() -> None:
    pixels = np.array([[-0.2, 0.0, 0.5], [0.999, 1.0, 1.3]], dtype=np.float32)
    np.testing.assert_array_equal(to_uint8(pixels), [[0, 0, 128], [255, 255, 255]])


def test_imaging_imports_neither_streamlit_nor_tensorflow() -> None:
    code = (
        "import sys, core.imaging; "
        "bad = [m for m in ('streamlit', 'tensorflow', 'keras', 'torch') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parent.parent
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0
