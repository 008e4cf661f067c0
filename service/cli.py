"""The `headstart` command line: parser, dispatch, and one-line errors with non-zero exit codes."""

from __future__ import annotations

import argparse
import json
import sys

from extractor.errors import HeadstartError


def emit(args: argparse.Namespace, data: dict | list, human: str) -> None:
    """Print `data` as one JSON line with --json, else the human text."""
    print(json.dumps(data, default=str) if getattr(args, "json", False) else human)


def table(header: list[str], rows: list[list[object]]) -> str:
    """Left-aligned columns, two spaces apart, each as wide as its widest cell."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def build_parser() -> argparse.ArgumentParser:
    from service import cli_extract, cli_heads, cli_serve

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", help="store and catalog folder (default: $HEADSTART_HOME or ~/.headstart)")
    common.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    parser = argparse.ArgumentParser(prog="headstart", description="Transfer learning with frozen backbones.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_extract.add_commands(sub, common)
    cli_heads.add_commands(sub, common)
    cli_serve.add_commands(sub, common)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except HeadstartError as exc:
        print(f"headstart: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("headstart: interrupted; finished batches are saved, run the same command to continue",
              file=sys.stderr)
        return 130
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        print(f"headstart: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
