"""The dependency direction of DESIGN.md, checked on the import statements.

server -> stream, server -> pipelines, pipelines -> kernels; never the reverse.
stream imports no asyncio, sockets or torch; pipelines no asyncio and nothing
from server.
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
        "kernels",
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
