"""`sdxl-tui inspect FILE.safetensors`: what is in a LoRA file and where it will load."""
from __future__ import annotations

import argparse

BROKEN_EXIT = 65  # sysexits EX_DATAERR: the input file is bad


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `sdxl-tui inspect`: FILE, --json."""
    parser.add_argument("file", help="LoRA .safetensors file (sd-scripts, diffusers/PEFT or sdxl-tui)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def run(args: argparse.Namespace) -> int:
    """Print the LoRA file's report (text or JSON); returns 65 (EX_DATAERR) when the file is broken, else 0."""
    import json

    from engine.lora.inspection import format_report, inspect_lora, report_as_dict

    report = inspect_lora(args.file)
    if args.json:
        print(json.dumps(report_as_dict(report), indent=2))
    else:
        print(format_report(report))
    return BROKEN_EXIT if report.broken else 0
