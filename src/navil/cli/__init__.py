"""The `navil` command. Each subcommand lives in its own module exposing `add_parser` and `run`."""
from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> module under navil.cli
SUBCOMMANDS = {
    "chat": "navil.cli.chat",
    "train": "navil.cli.train",
    "eval": "navil.cli.eval",
    "quickstart": "navil.cli.quickstart",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="navil", description="Native multimodal LLMs: chat, train, evaluate.")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in SUBCOMMANDS.values():
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name != module:
                raise
            continue
        mod.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from navil.errors import NavilError

    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except NavilError as e:
        print(f"navil {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
