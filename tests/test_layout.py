"""The layout rules of README's *Layout* section, checked on every module's imports (read with ``ast``, so
imports inside functions count too; nothing is imported here).

- only ``app.py``, ``pages/`` and ``ui/`` import Streamlit;
- nothing in the product outside ``core/training/`` and ``core/cli/`` imports ``core.training``
  (``scripts/`` and ``tests/`` are tooling around training and may);
- ``core/ml/`` and ``core/imaging/`` never import ``db`` (``core/ml/promotion.py``, the audited promotion
  use case, is the one exception);
- ``pages/`` holds only the routes ``app.py`` registers (``ui/navigation.py``);
- no test module imports another test module (shared helpers live in ``tests/support/``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

from ui.navigation import ROUTES

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = ("app.py", "pages", "ui", "core", "db", "migrations")


def _files(*tops: str) -> Iterator[Path]:
    for top in tops:
        path = ROOT / top
        yield from [path] if path.is_file() else sorted(path.rglob("*.py"))


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, module: str | None = None) -> set[str]:
    """Every module ``path`` imports, absolute, with each ``from X import name`` also as ``X.name``."""
    module = module or _module(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def violations(files: Iterator[Path], forbidden: str, allowed: tuple[str, ...] = ()) -> list[str]:
    """``file: module`` for each import of ``forbidden`` (the package or anything in it) outside ``allowed``."""
    out = []
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith(allowed):
            continue
        for name in sorted(imports(path)):
            if name == forbidden or name.startswith(f"{forbidden}."):
                out.append(f"{rel}: {name}")
    return out


def test_the_import_walker_sees_relative_and_nested_imports(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("from . import triage\nfrom ..imaging import read\ndef f():\n    import db.session\n")
    assert imports(sample, "core.ml.sample") == {
        "core.ml",
        "core.ml.triage",
        "core.imaging",
        "core.imaging.read",
        "db.session",
    }
    assert violations(iter([ROOT / "app.py"]), "streamlit") == ["app.py: streamlit"]


def test_only_app_pages_and_ui_import_streamlit() -> None:
    assert violations(_files(*PRODUCT, "scripts"), "streamlit", allowed=("app.py", "pages/", "ui/")) == []


def test_nothing_in_the_product_imports_training_code() -> None:
    assert violations(_files(*PRODUCT), "core.training", allowed=("core/training/", "core/cli/")) == []


def test_ml_and_imaging_never_touch_the_database() -> None:
    files = _files("core/ml", "core/imaging")
    assert violations(files, "db", allowed=("core/ml/promotion.py",)) == []


def test_pages_holds_only_the_registered_routes() -> None:
    scripts = {
        p.relative_to(ROOT).as_posix() for p in (ROOT / "pages").glob("*.py") if p.name != "__init__.py"
    }
    assert scripts == {route.path for route in ROUTES}


def test_no_test_module_imports_another() -> None:
    found = []
    for path in _files("tests"):
        for name in imports(path):
            if name.startswith("tests.") and name.split(".")[1].startswith(("test_", "conftest")):
                found.append(f"{path.relative_to(ROOT).as_posix()}: {name}")
    assert found == []
