"""`sdxl-tui train CONFIG.toml [--set key=value ...]`: train headless.

In a terminal a live panel shows the run; otherwise one plain line per logging interval.
Ctrl-C (SIGINT), SIGTERM and SIGHUP ask the engine to stop after the current step and save;
the exit code is then 128 + the signal number (130 / 143 / 129). A second Ctrl-C interrupts
at once. Other exit codes: engine/errors.py (README: "Exit codes").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="run config TOML (an sd-scripts args TOML is converted on the fly)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override an option by its sd-scripts name or section.name, e.g. --set network_dim=8 "
                             "(values are TOML: 1e-4, true, \"text\", [\"a\", \"b\"]; bare words are strings)")
    parser.add_argument("--plain", action="store_true", help="plain lines even in a terminal (no live panel)")


def load_run_config(path: str, sets: list[str]) -> Any:
    """The config as `train` runs it: file (ours or sd-scripts'), --set applied, paths made
    absolute against the config file's folder."""
    from engine.config import resolve_relative_paths
    from engine.config_io import apply_sets
    from engine.kohya_args import load_any_config

    cfg, notes = load_any_config(path)
    for note in notes:
        print(note, file=sys.stderr)
    cfg = apply_sets(cfg, sets)
    return resolve_relative_paths(cfg, Path(path).expanduser().resolve().parent)


def run(args: argparse.Namespace) -> int:
    cfg = load_run_config(args.config, args.sets)
    return train_headless(cfg, plain=args.plain)


class _StopOnSignals:
    """Route stop signals to `control.request_stop`; remember the first one for the exit code."""

    def __init__(self, control: Any) -> None:
        self.control = control
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait
        self.received = self.received or signum
        self.control.request_stop(f"stopped by {signal.Signals(signum).name}")

    def __enter__(self) -> "_StopOnSignals":
        import signal

        for name in STOP_SIGNALS:
            signum = getattr(signal, name, None)
            if signum is not None:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *_: object) -> None:
        import signal

        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def train_headless(cfg: Any, *, resume: bool = False, plain: bool = False) -> int:
    """Run the engine with the console view; the process exit code."""
    from engine import run as run_engine
    from engine.control import RunControl
    from sdxl_tui.console_view import PlainView, make_view

    control = RunControl()
    view = PlainView(sys.stdout) if plain else make_view(sys.stdout)
    with _StopOnSignals(control) as signals, view:
        result = run_engine(cfg, view, control, resume=resume)
    if result.stopped and signals.received is not None:
        return 128 + int(signals.received)
    return result.exit_code
