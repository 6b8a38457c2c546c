"""`sdxl-tui watch OUTPUT_DIR`: the live dashboard of a run started elsewhere.

Replays the run's events.jsonl from the start and follows it; stop / save now / sample now
reach the run through `OUTPUT_DIR/control.jsonl`, which the training process polls. A run
that has already ended opens as a static report. Leaving never stops the run.
"""
from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`watch`'s arguments: OUTPUT_DIR, --plain and --no-bell."""
    parser.add_argument("output_dir", help="the run's output folder (the one holding events.jsonl)")
    parser.add_argument("--plain", action="store_true",
                        help="print the run as plain lines (or the compact live panel) instead of the dashboard")
    parser.add_argument("--no-bell", action="store_true",
                        help="no terminal bell when the run ends (or set SDXL_TUI_NO_BELL=1)")


def run(args: argparse.Namespace) -> int:
    """Open the dashboard (or the plain view) of the run in `args.output_dir`; returns the exit code.

    Raises OutputError when the folder holds no events.jsonl. Exit code: 0 unless the run failed
    (then its error's own code), 130 when a plain watch is left with Ctrl-C.
    """
    from pathlib import Path

    from engine.errors import OutputError
    from engine.events.follow import events_path

    folder = Path(args.output_dir).expanduser().resolve()
    if not events_path(folder).exists():
        raise OutputError(f"no run in {folder}: events.jsonl not found",
                          hint="pass the output_dir of a run started with `sdxl-tui train` (it writes events.jsonl)")
    if args.plain:
        return _follow_plain(folder)
    from sdxl_tui.dashboard_app import DashboardApp
    from sdxl_tui.screens.dashboard import DashboardScreen

    screen = DashboardScreen.watching(folder, bell=False if args.no_bell else None)
    final = DashboardApp(screen).run()
    return exit_code_for(final)


def _follow_plain(folder) -> int:
    import sys

    from engine.events.follow import follow_events
    from engine.events.types import Failed, Finished
    from sdxl_tui.console_view import make_view

    final = None
    view = make_view(sys.stdout)
    try:
        for event in follow_events(folder):
            view(event)
            if isinstance(event, (Finished, Failed)):
                final = event
    except KeyboardInterrupt:
        print("left the watch; the run goes on", file=sys.stderr)
        return 130  # as every command does on Ctrl-C
    finally:
        view.close()
    if isinstance(final, Failed):
        return _failure_code(final.kind)
    return 0


def exit_code_for(final) -> int:
    """0 while running or after a normal end; a failed run's own exit code otherwise."""
    if final is None or final.status != "failed":
        return 0
    return _failure_code(final.kind)


def _failure_code(kind: str) -> int:
    from engine import errors

    error_class = getattr(errors, kind, None)
    return int(getattr(error_class, "exit_code", 1))
