"""`sdxl-tui` command line: a thin dispatcher over sdxl_tui.commands.*.

Exit codes (also in the README and `--help`): 0 done, 1 unexpected error, 2 usage, 65 data error,
66 model error, 70 training diverged, 73 output error, 74 disk full, 75 GPU out of memory,
78 config error,
129/130/143 stopped by SIGHUP/SIGINT/SIGTERM after saving.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Iterable
from typing import NoReturn

# command -> (module, one-line help). Order is the order --help lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "wizard": ("sdxl_tui.commands.wizard", "open the terminal wizard (the default)"),
    "train": ("sdxl_tui.commands.train", "train headless from a config TOML"),
    "resume": ("sdxl_tui.commands.resume", "continue a stopped run from its newest saved state"),
    "watch": ("sdxl_tui.commands.watch", "open the live dashboard of a run started elsewhere"),
    "plan": ("sdxl_tui.commands.plan", "check a config and dataset without loading a model"),
    "demo": ("sdxl_tui.commands.demo", "make the tiny model and demo data, then train on them"),
    "inspect": ("sdxl_tui.commands.inspect", "check a LoRA file and say where it will load"),
    "import-kohya": ("sdxl_tui.commands.import_kohya",
                     "convert an sd-scripts args TOML or kohya_ss GUI JSON to a run config"),
    "export-kohya": ("sdxl_tui.commands.export_kohya",
                     "write sd-scripts args + dataset TOML (or a kohya_ss GUI JSON) for a run config"),
    "make-tiny-model": ("sdxl_tui.commands.make_tiny_model", "build the tiny SDXL-shaped test model"),
    "make-demo-dataset": ("sdxl_tui.commands.make_demo_dataset", "write the demo images, captions and dataset TOML"),
    "options": ("sdxl_tui.commands.options", "list every config option with its help"),
}


EPILOG = """\
exit codes:
  0 done            1 unexpected error     2 usage, or the wizard without a terminal
  65 data error     66 model error         70 training diverged
  73 output error   74 disk full           75 GPU out of memory     78 config error
  129/130/143       stopped by SIGHUP / Ctrl-C (SIGINT) / SIGTERM (after saving, once training began)

environment:
  HF_HUB_OFFLINE=1        never contact the Hugging Face Hub (local files and its cache only)
  HF_HOME, HF_HUB_CACHE   where Hub downloads are cached
  HF_ENDPOINT             a Hub mirror
  HF_TOKEN                token for gated or private Hub models
  CUDA_VISIBLE_DEVICES    which GPUs a run may use
  NO_COLOR                no colours; TERM=dumb or a pipe gives plain lines instead of the live panel
  XDG_STATE_HOME          where the recent-runs list is kept (default ~/.local/state/sdxl-tui)
  SDXL_TUI_NO_BELL=1      no terminal bell when a run ends in the dashboard
"""


def version_text() -> str:
    """`sdxl-tui --version`: ours, the libraries that decide results, and the optional packages."""
    from engine.config.extras import package_report
    from engine.versions import library_versions, sdxl_tui_version

    versions = library_versions()
    lines = [f"sdxl-tui {sdxl_tui_version()}"]
    lines += [f"  {name} {version}" for name, version in versions.items() if name != "sdxl-tui"]
    for package, extra, installed in package_report():
        lines.append(f"  {package}: {'installed' if installed else f'not installed (sdxl-tui[{extra}])'}")
    return "\n".join(lines)


class _VersionAction(argparse.Action):
    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_text())
        parser.exit()


def _has_terminal() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def _load(command: str):
    return importlib.import_module(COMMANDS[command][0])


def named_commands(argv: list[str]) -> list[str]:
    """The command `argv` names, as build_parser's `loaded`: its first word not starting with "-"
    (the top-level options take no value); none for `--help`, `--version` or a bare `sdxl-tui`.
    An unknown word is left to argparse to refuse."""
    word = next((arg for arg in argv if not arg.startswith("-")), None)
    return [word] if word in COMMANDS else []


def build_parser(loaded: Iterable[str] = COMMANDS) -> argparse.ArgumentParser:
    """The whole command line; only the commands in `loaded` get their arguments (and have their
    module imported), so `sdxl-tui --help` lists every command from `COMMANDS` and imports none."""
    loaded = set(loaded)
    parser = argparse.ArgumentParser(
        prog="sdxl-tui",
        description="Train SDXL LoRA adapters: a wizard, a live dashboard, and headless replay of the same config.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_VersionAction, help="show the versions of sdxl-tui and its libraries")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        child = sub.add_parser(name, help=help_text, description=help_text)
        if name in loaded:
            _load(name).add_arguments(child)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `sdxl-tui` with `argv` (default sys.argv[1:]); returns the exit code: the command's, an SdxlTuiError's
    exit_code, 2 for the wizard without a terminal, 130 after Ctrl-C. argparse exits itself (2) on a usage error."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(named_commands(argv)).parse_args(argv)
    if args.command is None:  # a bare `sdxl-tui` opens the wizard
        args = build_parser(["wizard"]).parse_args(["wizard", *argv])
    command = args.command
    if command == "wizard" and not _has_terminal():
        print("sdxl-tui: the wizard needs a terminal, and stdin/stdout are not one; "
              "train headless with `sdxl-tui train CONFIG.toml` (see `sdxl-tui --help`)", file=sys.stderr)
        return 2
    from engine.errors import SdxlTuiError

    try:
        return int(_load(command).run(args) or 0)
    except SdxlTuiError as exc:
        print(f"sdxl-tui {command}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt as exc:  # Ctrl-C in any command; a run's own stop exits earlier with its code
        print(f"sdxl-tui {command}: interrupted", file=sys.stderr)
        return int(getattr(exc, "exit_code", 130))


def console_main() -> NoReturn:
    """The `sdxl-tui` console script and `python -m sdxl_tui`: exits the process with `main()`'s code.

    Every object still alive is moved out of the cyclic GC (`gc.freeze`) before the interpreter shuts
    down: its final collection would otherwise walk the million-odd objects that torch, diffusers and a
    loaded model leave behind, 2-3 s measured on a 2-core host, after the run has already saved and
    printed everything. Raises SystemExit."""
    try:
        code = main()
    finally:
        gc.freeze()
    sys.exit(code)
