"""Start a YOLOv5nu detector from the official COCO YOLOv5n checkpoint, read without running its pickle.

    python -m core.training.coco_init --out var/runs/yolov5nu-coco-init.pt

``yolov5n_coco.pt`` (``<shared data>/weights``, see its PROVENANCE.txt) is a torch zip archive whose
``data.pkl`` pickles YOLOv5's own model classes. Loading it with ``torch.load(weights_only=False)`` would run
whatever those pickled references name. Instead :func:`read_coco_tensors` checks the file's sha256, then
unpickles ``data.pkl`` with an unpickler that builds only tensors (from the archive's raw storages) and plain
containers; every other class the pickle names becomes an inert :class:`_Stub` that just keeps its state.
The module tree is then walked for ``_parameters`` and ``_buffers`` to give ``model.N....`` tensor names.

Only the backbone and neck (``model.0`` to ``model.23``) carry over: they match Ultralytics' YOLOv5nu
(``yolov5n.yaml``) name for name and shape for shape; the detection head (``model.24``) differs and stays
random. :func:`build_init_checkpoint` writes an Ultralytics checkpoint of that initialised network, which the
trainer then fine-tunes with the data set's own class count (``train_detector --model that.pt``).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

COCO_SHA256 = "4f180cf23ba0717ada0badd6c685026d73d48f184d00fc159c2641284b2ac0a3"
COCO_FILE = "weights/yolov5n_coco.pt"
HEAD_PREFIX = "model.24."
_STORAGE_DTYPES = {
    "HalfStorage": "float16",
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "LongStorage": "int64",
    "IntStorage": "int32",
    "BoolStorage": "bool",
}
_PLAIN: dict[str, type] = {"set": set, "frozenset": frozenset, "slice": slice, "tuple": tuple, "list": list}


class _Stub:
    """Any pickled object that is not a tensor or a plain container: keeps its state, runs nothing."""

    def __init__(self, *args: Any, **_kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _stub_class(module: str, name: str) -> type:
    return type(name, (_Stub,), {"__module__": f"stub.{module}"})


class _TensorsOnly(pickle.Unpickler):
    """Resolves only tensor rebuilding and plain containers; storages come from the zip archive."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix

    def find_class(self, module: str, name: str) -> Any:
        import torch

        if module == "torch._utils" and name == "_rebuild_tensor_v2":
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return _rebuild_parameter
        if module == "torch" and name in _STORAGE_DTYPES:
            return getattr(torch, _STORAGE_DTYPES[name])  # the dtype stands for the storage class
        if module == "collections" and name == "OrderedDict":
            return OrderedDict
        if module == "builtins" and name in _PLAIN:
            return _PLAIN[name]
        return _stub_class(module, name)

    def persistent_load(self, pid: Any) -> Any:
        import torch

        kind, storage_type, key, _location, numel = pid
        if kind != "storage":
            raise pickle.UnpicklingError(f"unexpected persistent id {kind!r}")
        raw = self._archive.read(f"{self._prefix}/data/{key}")
        dtype = storage_type
        if not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"unexpected storage type {storage_type!r}")
        if not numel:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(bytearray(raw), dtype=dtype, count=numel)


def _rebuild_tensor(flat: Any, offset: int, size: Any, stride: Any, *_: Any) -> Any:
    """A tensor view of a flat storage (what torch's _rebuild_tensor_v2 does), copied out."""
    import torch

    return torch.as_strided(flat, tuple(size), tuple(stride), offset).clone()


def _rebuild_parameter(data: Any, *_: Any) -> Any:
    return data


def _walk(obj: Any, prefix: str, out: dict[str, Any]) -> None:
    """Collect ``prefix.name`` -> tensor from a stubbed nn.Module tree."""
    import torch

    state = getattr(obj, "state", None)
    if not isinstance(state, dict):
        return
    for field in ("_parameters", "_buffers"):
        for name, value in (state.get(field) or {}).items():
            if isinstance(value, torch.Tensor):
                out[f"{prefix}{name}"] = value
    for name, child in (state.get("_modules") or {}).items():
        _walk(child, f"{prefix}{name}.", out)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_coco_tensors(path: Path, expected_sha256: str = COCO_SHA256) -> dict[str, Any]:
    """The checkpoint's tensors by state-dict name (float32), after checking the file's sha256."""
    actual = sha256_of(path)
    if actual != expected_sha256:
        raise ValueError(
            f"{path}: sha256 {actual} is not the published {expected_sha256}; refusing to read it"
        )
    with zipfile.ZipFile(path) as archive:
        pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
        prefix = pkl[: -len("/data.pkl")]
        root = _TensorsOnly(archive.read(pkl), archive, prefix).load()
    model = root.get("ema") or root.get("model") if isinstance(root, dict) else None
    if model is None:
        raise ValueError(f"{path}: no model in the checkpoint")
    tensors: dict[str, Any] = {}
    _walk(model, "", tensors)
    return {name: t.float() for name, t in tensors.items()}


def build_init_checkpoint(out: Path, coco: Path, arch: str = "yolov5n.yaml") -> dict[str, int]:
    """Write an Ultralytics checkpoint of ``arch`` whose backbone and neck come from the COCO tensors."""
    import core.ml.yolo_env

    core.ml.yolo_env.configure()  # before ultralytics is imported: offline settings
    import torch
    from ultralytics import YOLO

    yolo = YOLO(arch, task="detect")
    model: Any = yolo.model  # a DetectionModel (typed loosely by Ultralytics)
    target = model.state_dict()
    tensors = read_coco_tensors(coco)
    loaded, skipped_head, mismatched = {}, 0, 0
    for name, tensor in tensors.items():
        if name.startswith(HEAD_PREFIX):
            skipped_head += 1
            continue
        if name in target and target[name].shape == tensor.shape:
            loaded[name] = tensor
        elif name.endswith(("weight", "bias", "running_mean", "running_var")):
            mismatched += 1
    if mismatched or not loaded:
        raise ValueError(f"{mismatched} backbone/neck tensors do not fit {arch}; {len(loaded)} did")
    model.load_state_dict(loaded, strict=False)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # the layout Ultralytics' trainer reads for a .pt start: the model object under "model"
    torch.save(
        {"model": model.float(), "train_args": {}, "date": None, "version": "coco-init", "epoch": -1},
        out,
    )
    return {"loaded": len(loaded), "head_skipped": skipped_head, "target": len(target)}


def main(argv: list[str] | None = None) -> int:
    from core.config import get_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="checkpoint to write (.pt)")
    parser.add_argument("--coco", type=Path, default=None, help=f"default: <shared data>/{COCO_FILE}")
    parser.add_argument("--arch", default="yolov5n.yaml")
    args = parser.parse_args(argv)
    coco = args.coco or get_settings().shared_data_dir / COCO_FILE
    counts = build_init_checkpoint(args.out, coco, args.arch)
    print(f"wrote {args.out}: {counts['loaded']} COCO tensors loaded, head left random ({counts})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
