"""The dependency direction of DESIGN.md, checked on the import statements.

server -> stream, server -> pipelines, pipelines -> kernels; never the reverse.
stream imports no asyncio, sockets or torch; pipelines no asyncio and nothing
from server. kernels/ is imported as ``livegen_kernels`` (kernels/README.md).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "stream": {
        "asyncio",
        "socket",
        "websockets",
        "uvloop",
        "aiortc",
        "torch",
        "server",
        "pipelines",
        "livegen_kernels",
        "prometheus_client",
    },
    "pipelines": {"asyncio", "socket", "websockets", "uvloop", "aiortc", "server"},
    "kernels": {"asyncio", "socket", "websockets", "server", "stream", "pipelines"},
}


def imported_top_levels(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", FORBIDDEN)
def test_package_imports_respect_the_dependency_direction(package):
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_top_levels(path) & FORBIDDEN[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_our_kernels_folder_never_stands_in_for_hugging_faces_kernels() -> None:
    # transformers depends on Hugging Face's ``kernels``, and diffusers imports it when it
    # is installed; the repository root is on sys.path here (pytest), as in ``python -m``.
    import importlib.metadata
    import importlib.util
    import sys

    import diffusers.utils

    import livegen_kernels

    assert str(ROOT) in [str(Path(entry or ".").resolve()) for entry in sys.path]
    assert not (ROOT / "kernels" / "__init__.py").exists()
    assert list(livegen_kernels.__path__)[0] == str(ROOT / "kernels")
    spec = importlib.util.find_spec("kernels")
    assert spec is not None and spec.origin != str(ROOT / "kernels" / "__init__.py")
    try:
        importlib.metadata.version("kernels")
    except importlib.metadata.PackageNotFoundError:
        assert diffusers.utils.is_kernels_available() is False
    else:
        # The real one: importing what diffusers takes from it works.
        assert diffusers.utils.is_kernels_available() is True
        from diffusers import AutoencoderKL  # noqa: F401  # imports diffusers.loaders.peft


def test_no_script_folder_holds_a_module_named_kernels() -> None:
    # A script run as `python bench/x.py` has bench/ first on sys.path: a bench/kernels.py
    # would stand in for Hugging Face's `kernels` there, and diffusers' imports would fail.
    folders = [ROOT, *(p for p in ROOT.iterdir() if p.is_dir() and any(p.glob("*.py")))]
    assert [str(f / "kernels.py") for f in folders if (f / "kernels.py").exists()] == []
