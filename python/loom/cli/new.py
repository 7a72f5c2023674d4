"""``loom new <dir>``: scaffold a project that runs as generated."""

from __future__ import annotations

import argparse
import sys
from importlib import resources
from pathlib import Path
from typing import Any

TEMPLATES = ("basic", "cognitive")


def add_parser(sub: Any) -> None:
    p = sub.add_parser("new", help="create a new project directory")
    p.add_argument("directory")
    p.add_argument("--template", default="basic", help=f"one of: {', '.join(TEMPLATES)}")
    p.add_argument("--force", action="store_true", help="write into a non-empty directory")
    p.set_defaults(func=cmd)


def _copy(src: Any, dst: Path, name: str) -> list[Path]:  # src: a resources Traversable
    written = []
    for item in src.iterdir():
        if item.name == "__pycache__":
            continue
        target = dst / item.name
        if item.is_dir():
            target.mkdir(exist_ok=True)
            written += _copy(item, target, name)
        else:
            text = item.read_text(encoding="utf-8")
            if item.name == "loom.toml":
                text = text.replace("{name}", name)
            target.write_text(text, encoding="utf-8")
            written.append(target)
    return written


def cmd(args: argparse.Namespace) -> int:
    if args.template not in TEMPLATES:
        print(
            f"loom new: unknown template {args.template!r}; choose from {', '.join(TEMPLATES)}",
            file=sys.stderr,
        )
        return 2
    dst = Path(args.directory)
    if dst.exists() and any(dst.iterdir()) and not args.force:
        print(f"loom new: {dst} exists and is not empty (use --force)", file=sys.stderr)
        return 2
    dst.mkdir(parents=True, exist_ok=True)
    src = resources.files("loom") / "templates" / args.template
    written = _copy(src, dst, dst.resolve().name)
    for path in written:
        print(f"  created {path}")
    print(f"\nNext: cd {dst} && loom run")
    return 0
