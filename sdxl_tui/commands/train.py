"""`sdxl-tui train CONFIG.toml [--set key=value ...]`: train headless.

In a terminal a live panel shows the run; otherwise one plain line per logging interval.
Ctrl-C (SIGINT), SIGTERM and SIGHUP ask the engine to stop after the current step and save;
the exit code is then 128 + the signal number (130 / 143 / 129). A second Ctrl-C waits only
for a save that is nearly done, otherwise quits at once with the previous files intact
(engine/control/signals.py). Other exit codes: engine/errors.py (README: "Exit codes").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `sdxl-tui train`: CONFIG, --set, --plain."""
    parser.add_argument("config", help="run config TOML (an sd-scripts args TOML is converted on the fly)")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="override an option by its sd-scripts name or section.name, e.g. --set network_dim=8 "
                             "(values are TOML: 1e-4, true, \"text\", [\"a\", \"b\"]; bare words are strings)")
    parser.add_argument("--plain", action="store_true", help="plain lines even in a terminal (no live panel)")


def load_run_config(path: str, sets: list[str]) -> Any:
    """The config as `train` runs it: file (ours or sd-scripts'), --set applied, paths made
    absolute against the config file's folder."""
    from engine.config.schema import resolve_relative_paths
    from engine.config.toml_file import apply_sets
    from engine.interop.any_config import load_any_config

    cfg, notes = load_any_config(path)
    for note in notes:
        print(note, file=sys.stderr)
    cfg = apply_sets(cfg, sets)
    return resolve_relative_paths(cfg, Path(path).expanduser().resolve().parent)


def run(args: argparse.Namespace) -> int:
    """Train the config headless; returns the run's exit code (0 when done, 128 + the signal number after a stop
    by signal). Raises SdxlTuiError subclasses, whose exit codes are in engine/errors.py."""
    cfg = load_run_config(args.config, args.sets)
    return train_headless(cfg, plain=args.plain)


def _say(text: str) -> None:
    """A line for the person at the terminal; silent when the terminal is gone (SIGHUP)."""
    try:
        print(f"sdxl-tui: {text}", file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


def _survives_hangup(view: Any):
    """The view as the engine's emit, minus the OSError (EIO) a closed terminal raises after
    SIGHUP: the run must still save and stop, and events.jsonl keeps every event."""
    def emit(event: Any) -> None:
        try:
            view(event)
        except OSError:
            pass

    return emit


def train_headless(cfg: Any, *, resume: bool = False, plain: bool = False) -> int:
    """Run the engine with the console view; the process exit code."""
    # the submodule's function: once engine.train.run is imported, the package attribute `engine.train.run`
    # is that module, no longer the wrapper function in engine/__init__.py
    from engine.control.run_control import RunControl
    from engine.control.signals import handle_stop_signals
    from engine.train.run import run as run_engine
    from sdxl_tui.console_view import PlainView, make_view

    control = RunControl()
    view = PlainView(sys.stdout) if plain else make_view(sys.stdout)
    with handle_stop_signals(control, say=_say) as signals, view:
        try:
            result = run_engine(cfg, _survives_hangup(view), control, resume=resume)
        except KeyboardInterrupt as exc:  # stopped before the first step: nothing to save
            return int(getattr(exc, "exit_code", 130))
    if result.stopped and signals.exit_code is not None:
        return signals.exit_code
    return result.exit_code
