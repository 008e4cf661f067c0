"""The `headstart` command line: parser, dispatch, and one-line errors with non-zero exit codes."""

from __future__ import annotations

import argparse
import errno
import json
import sys

from extractor.errors import HeadstartError

# which backbone a command that names none uses (extractor.lookup.cached_backbone), as help texts and the API say it
CACHED_BACKBONE = "vgg16, or the one backbone whose features the dataset has"


def emit(args: argparse.Namespace, data: dict | list, human: str) -> None:
    """Print `data` as one JSON line with --json, else the human text."""
    print(json.dumps(data, default=str) if getattr(args, "json", False) else human)


def existing_store(home: str | None):
    """The store of a command that only reads: a home without a catalog is an error, never created."""
    from extractor.store import FeatureStore

    return FeatureStore(home, create=False)


def table(header: list[str], rows: list[list[object]]) -> str:
    """Left-aligned columns, two spaces apart, each as wide as its widest cell."""
    cells = [[str(c) for c in row] for row in [header, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("headstart")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    from service import cli_admin, cli_compare, cli_extract, cli_finetune, cli_heads, cli_predict, cli_serve

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--home", help="store and catalog folder (default: $HEADSTART_HOME or ~/.headstart)")
    common.add_argument("--json", action="store_true", help="print one JSON line instead of text")
    parser = argparse.ArgumentParser(prog="headstart", description="Transfer learning with frozen backbones.")
    parser.add_argument("--version", action="version", version=f"headstart {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli_extract.add_commands(sub, common)
    cli_heads.add_commands(sub, common)
    cli_predict.add_commands(sub, common)
    cli_finetune.add_commands(sub, common)
    cli_compare.add_commands(sub, common)
    cli_admin.add_commands(sub, common)
    cli_serve.add_commands(sub, common)
    return parser


def error(args: argparse.Namespace, message: str) -> None:
    """One line on stderr: plain text, or a JSON object with --json."""
    if getattr(args, "json", False):
        print(json.dumps({"error": message}), file=sys.stderr)
    else:
        print(f"headstart: error: {message}", file=sys.stderr)


def warn(args: argparse.Namespace, warnings) -> None:
    """`headstart: warning:` lines on stderr (with --json, the warnings are in the JSON instead)."""
    if not getattr(args, "json", False):
        for warning in warnings:
            print(f"headstart: warning: {warning}", file=sys.stderr)


# commands that keep their work when interrupted, and pick it up when run again
RESUMABLE = {"extract": "finished batches are saved", "compare": "features extracted so far are saved",
             "finetune": "its last checkpoint is kept"}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # `headstart ... | head`: the reader left; stop quietly, as other tools do
        _silence_stdout()
        return 141
    except HeadstartError as exc:
        error(args, str(exc))
        return 1
    except KeyboardInterrupt:
        kept = RESUMABLE.get(args.command)
        print(f"headstart: interrupted; {kept}, run the same command to continue" if kept else "headstart: interrupted",
              file=sys.stderr)
        return 130
    except OSError as exc:  # a path the user gave (--home, a data folder) that the system refused
        if exc.errno == errno.EROFS and exc.filename:  # a home mounted read-only: the commands that only read work
            error(args, f"{exc.filename} is on a read-only file system, and this command writes there; use a "
                        f"home that can be written (--home, HEADSTART_HOME), or mount it read-write")
            return 1
        where = f": {exc.filename}; check that path and its permissions" if exc.filename else ""
        error(args, f"{exc.strerror or exc}{where}")
        return 1


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush does not complain about the pipe."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is no real file (tests capture it)
        pass


if __name__ == "__main__":
    sys.exit(main())
