"""The box editor widget: streamlit-image-annotation's detection canvas that applies every change at once.

The package's editor (draw, move, resize, delete, relabel boxes) hands its boxes back to Python only when its
own **Complete** button is pressed; boxes drawn without it never reached a save. This module serves the
package's own built frontend (pinned version, read from the installed package, nothing downloaded) with one
added script, ``box_editor_assets/auto_apply.js``, that presses Complete after every change, so the value
Python reads is always what the canvas shows. The patched copy is written once into a folder named by the
content's hash under the app's own ``var`` folder (not the shared temp folder, where another local account
could plant a page of its own).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import streamlit.components.v1 as components
import streamlit_image_annotation
from PIL import Image
from streamlit.elements.lib.image_utils import image_to_url
from streamlit.elements.lib.layout_utils import LayoutConfig
from streamlit_image_annotation.Detection import get_colormap

from core.config import get_settings

__all__ = ["AUTO_APPLY_SCRIPT", "box_editor"]

_PACKAGE_BUILD = Path(streamlit_image_annotation.__file__).parent / "Detection" / "frontend" / "build"
AUTO_APPLY_SCRIPT = Path(__file__).parent / "box_editor_assets" / "auto_apply.js"
_MARKER = "</head>"


def _build() -> Path:
    """The package's frontend with the auto-apply script added (made once, reused by every process)."""
    index = (_PACKAGE_BUILD / "index.html").read_text(encoding="utf-8")
    script = AUTO_APPLY_SCRIPT.read_text(encoding="utf-8")
    if _MARKER not in index:
        raise RuntimeError("streamlit-image-annotation's editor page changed: ui/box_editor.py needs a look")
    digest = hashlib.sha256((index + script).encode()).hexdigest()[:16]
    target = get_settings().var_dir / "components" / f"box-editor-{digest}"
    if (target / "index.html").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-box-editor-", dir=target.parent))
    shutil.copytree(_PACKAGE_BUILD, staging, dirs_exist_ok=True)
    (staging / "auto_apply.js").write_text(script, encoding="utf-8")
    patched = index.replace(_MARKER, '<script defer="defer" src="./auto_apply.js"></script>' + _MARKER, 1)
    (staging / "index.html").write_text(patched, encoding="utf-8")
    for path in [staging, *staging.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    try:
        staging.rename(target)
    except OSError:  # another process made it first
        shutil.rmtree(staging, ignore_errors=True)
    return target


_component = components.declare_component("cxr_box_editor", path=str(_build()))


def box_editor(
    image: Image.Image,
    label_list: list[str],
    bboxes: list[list[float]],
    labels: list[int],
    *,
    width: int,
    height: int,
    line_width: float = 2,
    key: str,
) -> list[dict[str, Any]] | None:
    """Like ``streamlit_image_annotation.detection``: boxes ``[x, y, w, h]`` in ``image``'s pixels and their
    indices into ``label_list``; returns ``[{"bbox", "label_id", "label"}, ...]`` after the doctor's first
    change (``None`` until then)."""
    shown = image.copy()
    original_width = shown.size[0]
    shown.thumbnail(size=(width, height))
    scale = original_width / shown.size[0]
    url = image_to_url(
        shown,
        LayoutConfig(width=shown.size[0], height=shown.size[1]),
        True,
        "RGB",
        "PNG",
        f"cxr-box-editor-{hashlib.sha256(shown.tobytes()).hexdigest()[:32]}-{key}",
    )
    value = _component(
        image_url=url,
        image_size=shown.size,
        label_list=label_list,
        bbox_info=[
            {"bbox": [v / scale for v in box], "label_id": label, "label": label_list[label]}
            for box, label in zip(bboxes, labels, strict=True)
        ],
        color_map=get_colormap(label_list, colormap_name="gist_rainbow"),
        line_width=line_width,
        use_space=False,
        key=key,
    )
    if value is None:
        return None
    return [
        {"bbox": [v * scale for v in item["bbox"]], "label_id": item["label_id"], "label": item["label"]}
        for item in value
    ]
