"""Measure the out-of-scope check of core.imaging on real images: false rejections and true rejections.

Runs read_image + check_plausible_chest (the built-in, cheap rules; with --learned also the active
classifier's out-of-scope check on its features) over
  (a) every real chest X-ray under Settings.shared_data_dir: nih14/images_256, nih14/images_64,
      nih_boxes/images_512 and samples/ (PNG, JPEG, DICOM), and the project's own assets/samples;
  (b) real images that are not chest X-rays: the NEMA extremity CR, every DICOM file bundled with pydicom
      (CT, MR, ultrasound, NM, secondary captures, reports...), the picture files shipped inside installed
      packages (scikit-image's photographs, micrographs and scanned text; scikit-learn's, ultralytics' and
      matplotlib's photographs), and matplotlib's sample MRI head slice as a 16-bit PNG.
and prints, per set and overall, how many were refused and why, with Wilson 95% intervals.

    python scripts/measure_scope.py [--json results.json] [--list]
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import itertools
import json
import logging
import math
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))

from core.config import get_settings  # noqa: E402
from core.imaging import ImageRejected, check_plausible_chest, read_image  # noqa: E402

Item = tuple[str, bytes]  # (name, file bytes)


@dataclass
class Tally:
    """Outcomes of one set of images."""

    name: str
    is_chest: bool
    total: int = 0
    codes: Counter[str] = field(default_factory=Counter)
    refused_names: list[tuple[str, str]] = field(default_factory=list)
    accepted_names: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return sum(self.codes.values())


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for k successes out of n."""
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def files(folder: Path, patterns: tuple[str, ...]) -> Iterator[Item]:
    for pattern in patterns:
        for path in sorted(folder.glob(pattern)):
            yield path.name, path.read_bytes()


def chest_sets(shared: Path) -> dict[str, Iterator[Item]]:
    samples = shared / "samples"
    chest_dicoms = [p for p in sorted((samples / "dicom").glob("*.dcm")) if "NOT_CHEST" not in p.name]
    return {
        "nih14/images_256 (PNG, 256 px grey)": files(shared / "nih14" / "images_256", ("*.png",)),
        "nih14/images_64 (PNG, 64 px RGB/RGBA)": files(shared / "nih14" / "images_64", ("*.png",)),
        "nih_boxes/images_512 (JPEG, 512 px)": files(
            shared / "nih_boxes" / "images_512", ("*.jpg", "*.jpeg")
        ),
        "samples/png_1024 (PNG, 1024 px)": files(samples / "png_1024", ("*.png",)),
        "samples/dicom chest (DX 8-bit; CR 15-bit MONOCHROME1, raw and J2K)": (
            (p.name, p.read_bytes()) for p in chest_dicoms
        ),
        "assets/samples chest (project copies)": (
            (p.name, p.read_bytes())
            for p in sorted((PROJECT_ROOT / "assets" / "samples").glob("*"))
            if p.suffix in (".png", ".dcm") and "NOT_CHEST" not in p.name
        ),
    }


def package_pictures() -> Iterator[Item]:
    """Real picture files shipped inside installed packages, uploaded byte for byte as a user would."""
    wanted = [
        # scikit-image: photographs, micrographs, astronomy, scanned text, test patterns
        ("skimage", "data", ("*.png", "*.jpg")),
        # scikit-learn: two colour photographs
        ("sklearn", "datasets/images", ("*.jpg",)),
        # ultralytics: two colour street/people photographs
        ("ultralytics", "assets", ("*.jpg",)),
        # matplotlib: a portrait photograph and two graphics
        ("matplotlib", "mpl-data/sample_data", ("*.jpg", "*.png")),
    ]
    for package, sub, patterns in wanted:
        root = package_dir(package)
        if root is None:
            logging.warning("%s not installed: its sample pictures are skipped", package)
            continue
        for item_name, data in files(root / sub, patterns):
            yield f"{package}/{item_name}", data


def mri_slice_png() -> Iterator[Item]:
    """matplotlib's sample MRI head slice (256x256, 16-bit raw), uploaded as a 16-bit PNG."""
    import gzip

    import numpy as np
    from PIL import Image

    root = package_dir("matplotlib")
    raw = root / "mpl-data" / "sample_data" / "s1045.ima.gz" if root else None
    if raw is None or not raw.exists():
        logging.warning("matplotlib's sample MRI slice not found: skipped")
        return
    # Big-endian samples: read little-endian, this 8-bit-range scan shows values up to 55,040.
    array = np.frombuffer(gzip.decompress(raw.read_bytes()), dtype=">u2").reshape(256, 256)
    buffer = io.BytesIO()
    Image.fromarray(array.astype(np.uint16)).save(buffer, "PNG")
    yield "matplotlib/s1045_mri_head.png", buffer.getvalue()


def package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    return Path(spec.origin).parent if spec and spec.origin else None


def dicoms_without_tags(paths: Iterator[Item]) -> Iterator[Item]:
    """Non-chest DICOM images re-encoded as 8-bit PNG: the header can no longer refuse them, only the pixels can."""
    for name, data in paths:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                read_image(data, name)
        except ImageRejected as exc:
            if exc.code not in ("wrong_modality", "not_chest_xray"):
                continue  # no pixels to re-encode (reports, unsupported codecs)
            import pydicom

            try:
                ds = pydicom.dcmread(io.BytesIO(data))
                arr = ds.pixel_array.astype("float32")
            except Exception:  # pydicom's odd test files fail in many ways
                continue
            if arr.ndim != 2 or arr.max() <= arr.min():
                continue  # colour, multi-frame or blank: the cheap rules already cover those
            arr = (arr - arr.min()) / (arr.max() - arr.min())
            if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
                arr = 1.0 - arr
        else:
            continue  # accepted as DICOM: not part of this set
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray((arr * 255 + 0.5).astype("uint8")).save(buf, format="PNG")
        yield f"{name} (as PNG)", buf.getvalue()


def non_chest_sets(shared: Path) -> dict[str, Iterator[Item]]:
    from pydicom.data import get_testdata_file

    pydicom_dir = Path(get_testdata_file("CT_small.dcm")).parent  # bundled in the wheel, no download
    return {
        "NEMA RG3 extremity CR (J2K, MONOCHROME1)": files(shared / "samples" / "dicom", ("*NOT_CHEST*.dcm",)),
        "pydicom bundled DICOM files (CT, MR, US, NM, SC, SR, RT...)": files(pydicom_dir, ("*.dcm",)),
        "pictures shipped in skimage, sklearn, ultralytics, matplotlib": package_pictures(),
        "MRI head slice (matplotlib sample data) as 16-bit PNG": mri_slice_png(),
        "the non-chest DICOM images above re-encoded as PNG (no header to refuse them)": dicoms_without_tags(
            itertools.chain(
                files(shared / "samples" / "dicom", ("*NOT_CHEST*.dcm",)), files(pydicom_dir, ("*.dcm",))
            )
        ),
    }


def run(sets: dict[str, Iterator[Item]], is_chest: bool, extra_checks: tuple = ()) -> list[Tally]:
    tallies = []
    for name, items in sets.items():
        tally = Tally(name, is_chest)
        for item_name, data in items:
            tally.total += 1
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # pydicom warns about odd VRs in its own test files
                    image = read_image(data, item_name)
                check_plausible_chest(image, extra_checks)
            except ImageRejected as exc:
                tally.codes[exc.code] += 1
                tally.refused_names.append((item_name, f"{exc.code}: {exc.detail}"))
            else:
                tally.accepted_names.append(item_name)
        tallies.append(tally)
    return tallies


def report(tallies: list[Tally], show_names: bool) -> dict[str, object]:
    out: dict[str, object] = {"sets": []}
    for is_chest, title, verb in (
        (True, "CHEST X-RAYS", "false rejections"),
        (False, "NOT CHEST", "rejected"),
    ):
        group = [t for t in tallies if t.is_chest == is_chest]
        print(f"\n{title}")
        print(f"{'set':<68} {'n':>5} {verb:>17} {'rate':>7}  reasons")
        for t in group:
            rate = t.rejected / t.total if t.total else 0.0
            reasons = ", ".join(f"{code} {n}" for code, n in t.codes.most_common()) or "-"
            print(f"{t.name:<68} {t.total:>5} {t.rejected:>17} {rate:>7.1%}  {reasons}")
            if show_names:
                shown = t.refused_names if is_chest else [(n, "ACCEPTED") for n in t.accepted_names]
                for item_name, why in shown:
                    print(f"    {item_name}: {why}")
            out["sets"].append(  # type: ignore[attr-defined]
                {
                    "set": t.name,
                    "chest": is_chest,
                    "n": t.total,
                    "rejected": t.rejected,
                    "codes": dict(t.codes),
                    "accepted": t.accepted_names if not is_chest else None,
                    "refused": t.refused_names if is_chest else None,
                }
            )
        n = sum(t.total for t in group)
        k = sum(t.rejected for t in group)
        low, high = wilson(k, n)
        label = "false-rejection rate on chest X-rays" if is_chest else "rejection rate on non-chest images"
        print(f"{label}: {k}/{n} = {k / n if n else 0:.2%} (95% CI {low:.2%}-{high:.2%})")
        out["chest_false_rejection" if is_chest else "non_chest_rejection"] = {
            "rejected": k,
            "n": n,
            "rate": k / n if n else None,
            "ci95": [low, high],
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--list", action="store_true", help="name refused chest and accepted non-chest files")
    parser.add_argument(
        "--learned", action="store_true", help="add the active classifier's out-of-scope check"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import pydicom  # noqa: F401  (imported first: its import resets the "pydicom" logger's level)

    logging.getLogger("pydicom").setLevel(logging.CRITICAL)  # its own test files are deliberately odd

    shared = get_settings().shared_data_dir
    if not shared.is_dir():
        print(f"shared data not found at {shared} (set CXR_SHARED_DATA)", file=sys.stderr)
        return 2
    extra: tuple = ()
    if args.learned:
        from core.ml.inference import get_classifier, learned_scope_check

        extra = (learned_scope_check(get_classifier()),)
    tallies = run(chest_sets(shared), True, extra) + run(non_chest_sets(shared), False, extra)
    results = report(tallies, args.list)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
