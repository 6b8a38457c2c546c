"""The console script's exit: main()'s code, and the live objects frozen out of the final GC pass."""
import gc
from pathlib import Path

import pytest
import tomllib

from sdxl_tui import cli

ROOT = Path(__file__).resolve().parents[2]


def test_the_console_script_and_python_m_use_console_main():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["sdxl-tui"] == "sdxl_tui.cli:console_main"
    assert "console_main()" in (ROOT / "sdxl_tui" / "__main__.py").read_text()


@pytest.mark.parametrize("outcome", [7, SystemExit(3)])
def test_console_main_exits_with_mains_code_after_freezing_the_heap(monkeypatch, outcome):
    calls = []

    def fake_main():
        calls.append("main")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    monkeypatch.setattr(cli, "main", fake_main)
    monkeypatch.setattr(gc, "freeze", lambda: calls.append("freeze"))
    with pytest.raises(SystemExit) as exited:
        cli.console_main()
    assert exited.value.code == (outcome if isinstance(outcome, int) else outcome.code)
    assert calls == ["main", "freeze"]
