"""Imports point one way (DESIGN §1): companion_cli -> {server, training} -> companion -> {memory, persona_adapters}."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("companion_cli", "companion", "memory", "persona_adapters", "server", "training")
ALLOWED = {
    "companion_cli": {"server", "training", "companion", "memory", "persona_adapters"},
    "companion": {"memory", "persona_adapters"},
    "memory": set(),
    "persona_adapters": set(),
    "server": {"companion", "memory", "persona_adapters"},
    "training": {"companion", "memory", "persona_adapters"},
}


def _imported_packages(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & set(PACKAGES)


@pytest.mark.parametrize("package", [p for p in PACKAGES if (ROOT / p).is_dir()])
def test_imports_point_down(package):
    wrong = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = _imported_packages(path) - ALLOWED[package] - {package}
        if bad:
            wrong[str(path.relative_to(ROOT))] = sorted(bad)
    assert not wrong, f"imports against DESIGN §1: {wrong}"


def test_the_check_catches_a_wrong_arrow(tmp_path):
    leaky = tmp_path / "leak.py"
    leaky.write_text("from server.app import create_app\nimport companion.backbone\n")
    assert _imported_packages(leaky) == {"server", "companion"}


def test_the_game_side_client_imports_nothing_heavy():
    """A game server that only talks to Companion imports `server.client`: no torch, Chroma,
    transformers or FastAPI (issue 15: it loaded them all through server/__init__.py)."""
    import subprocess
    import sys

    probe = (
        "import sys, server.client, server.protocol; "
        "print(sorted(m for m in ('torch', 'chromadb', 'transformers', 'fastapi') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "[]", out.stdout
