"""The code's shape, checked: the import-linter contracts in pyproject.toml (layers, no UI in
the engine, no torch in engine.config, the wizard's screens never importing its app), no import
circle between modules of engine or sdxl_tui, and every engine module importable on its own in a
fresh interpreter."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def engine_modules() -> list[str]:
    out = []
    for path in sorted((ROOT / "engine").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        out.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return out


def test_import_linter_contracts_are_kept():
    done = subprocess.run([sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                                                 "lint_imports_command()"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "4 kept, 0 broken" in done.stdout


@pytest.mark.parametrize("package", ["engine", "sdxl_tui"])
def test_no_import_circle_between_modules(package):
    import grimp  # counts imports under TYPE_CHECKING too: a circle of types is still a circle

    graph = grimp.build_graph(package)
    edges = {m: {i for i in graph.find_modules_directly_imported_by(m) if i != package} for m in graph.modules}
    circles = []
    for module in sorted(edges):  # any module reachable from itself is on a circle
        seen, todo = set(), list(edges[module])
        while todo:
            current = todo.pop()
            if current == module:
                circles.append(module)
                break
            if current not in seen:
                seen.add(current)
                todo.extend(edges.get(current, ()))
    assert circles == []


def test_every_engine_module_imports_in_a_fresh_interpreter():
    modules = engine_modules()
    assert len(modules) > 50 and "engine.train.run" in modules
    code = ("import importlib, sys, traceback\nbad = []\n"
            f"for name in {modules!r}:\n"
            "    try:\n        importlib.import_module(name)\n"
            "    except Exception:\n        bad.append(name + ': ' + traceback.format_exc(limit=1))\n"
            "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
