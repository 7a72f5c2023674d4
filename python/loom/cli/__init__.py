"""The ``loom`` command line."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from loom.cli import chat, dash, new, run, runs, tools, trace


def _setup_logging(level: str) -> None:
    from loom._text import SafeFormatter

    handler = logging.StreamHandler(sys.stderr)
    # Log messages carry model-chosen text (paths, tool names, errors): one record is
    # one line, with control characters escaped (see loom._text).
    handler.setFormatter(
        SafeFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", datefmt="%H:%M:%S")
    )
    logging.basicConfig(level=level.upper(), handlers=[handler])
    # One line per HTTP request is noise at INFO; Loom logs what matters itself.
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def build_parser() -> argparse.ArgumentParser:
    from loom._version import __version__

    parser = argparse.ArgumentParser(
        prog="loom", description="Loom: an event-driven runtime for AI agents."
    )
    parser.add_argument("--version", action="version", version=f"loom {__version__}")
    parser.add_argument(
        "--log-level",
        default=os.environ.get("LOOM_LOG_LEVEL", "INFO"),
        help="DEBUG, INFO, WARNING or ERROR (default: INFO or $LOOM_LOG_LEVEL)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (run, new, chat, tools, trace, runs, dash):
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``loom`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.log_level)
    code: int = args.func(args)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
