"""`retune data | train | eval | reproduce`. Sub-commands import their modules lazily: torch takes seconds."""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {"data": "retune.commands.data", "train": "retune.commands.train", "eval": "retune.commands.eval",
            "reproduce": "retune.commands.reproduce"}


def parser(command: str | None = None) -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="retune", description="The Re-Tuning companion.")
    sub = top.add_subparsers(dest="command", required=True, metavar="{" + ",".join(COMMANDS) + "}")
    for name, module in COMMANDS.items():
        if command in (None, name):
            importlib.import_module(module).add_cli(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    args = parser(command if command in COMMANDS else None).parse_args(argv)
    try:
        args.func(args)
    except (ValueError, OSError) as err:  # bad input or a file system refusal: one line, no traceback
        print(f"retune {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
