"""Prompt files: prompts and few-shot examples kept in a directory, versioned.

``PromptLoader(prompt_dir)`` keeps the seed's methods — :meth:`~PromptLoader.load`,
:meth:`~PromptLoader.load_json`, :meth:`~PromptLoader.load_versioned` — and adds
:meth:`~PromptLoader.render` (named fields, ``{field}``; ``{{``/``}}`` for literal
braces). ``ctx.prompts`` is a loader on the project's ``[prompts] dir`` (default
``prompts/`` beside loom.toml).

Paths are confined to the prompt directory: absolute paths, ``..`` and symlinks anywhere
in the path are refused (each component is opened with ``O_NOFOLLOW`` relative to the
one above, so a symlink swapped in cannot lead outside either). Loaded text is a
:class:`Prompt` — a ``str`` that remembers its file and version, which the LLM client
puts on the ``chat`` span (``loom.prompt.file``, ``loom.prompt.version``; never the text
unless content capture is on).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import string
from pathlib import Path
from typing import Any

from loom.errors import LoomError, PromptNotFound

__all__ = ["Prompt", "PromptError", "PromptLoader", "PromptNotFound"]

_MAX_BYTES = 4 << 20


class PromptError(LoomError, ValueError):
    """A prompt file cannot be used: a path outside the directory, bad JSON, or a
    template field without a value."""


class Prompt(str):
    """Text loaded from a prompt file; ``file`` and ``version`` say which."""

    file: str
    version: str | None

    def __new__(cls, text: str, file: str, version: str | None = None) -> Prompt:
        obj = super().__new__(cls, text)
        obj.file = file
        obj.version = version
        return obj


class PromptLoader:
    """Loads prompt files from ``prompt_dir`` (and ``prompt_dir/<version>/``)."""

    def __init__(self, prompt_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(prompt_dir)

    def __repr__(self) -> str:
        return f"PromptLoader({str(self.dir)!r})"

    def load(self, filename: str) -> Prompt:
        """The text of ``filename``.

        Raises:
            PromptNotFound: no such file (also a ``FileNotFoundError``).
            PromptError: the path leaves the prompt directory or is not UTF-8 text.
        """
        return Prompt(self._read(filename), filename)

    def load_json(self, filename: str) -> Any:
        """``filename`` parsed as JSON (few-shot examples, schemas)."""
        text = self._read(filename)
        try:
            return json.loads(text)
        except ValueError as exc:
            raise PromptError(f"{self.dir / filename}: not valid JSON: {exc}") from None

    def load_versioned(self, version: str, filename: str) -> Prompt:
        """``<prompt_dir>/<version>/<filename>``."""
        if not version or "/" in version or version in (".", ".."):
            raise PromptError(f"invalid prompt version {version!r}")
        return Prompt(self._read(f"{version}/{filename}"), filename, version)

    def render(self, filename: str, /, version: str | None = None, **fields: Any) -> Prompt:
        """``filename`` (of ``version``) with its ``{field}`` placeholders filled.

        Raises:
            PromptError: a placeholder has no value (the error names it and the file),
                or the template is malformed.
        """
        template = self.load_versioned(version, filename) if version else self.load(filename)
        return Prompt(fill(template, fields, where=str(self.dir / filename)), filename, version)

    def _read(self, rel: str) -> str:
        parts = _components(rel)
        path = self.dir.joinpath(*parts)
        try:
            fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise PromptNotFound(str(path), "the prompt directory does not exist") from None
        try:
            for i, name in enumerate(parts):
                last = i == len(parts) - 1
                flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
                if not last:
                    flags |= os.O_DIRECTORY
                try:
                    nxt = os.open(name, flags, dir_fd=fd)
                except FileNotFoundError:
                    raise PromptNotFound(str(path)) from None
                except OSError as exc:
                    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                        raise PromptError(
                            f"{path}: {'/'.join(parts[: i + 1])} is a symlink or not a "
                            "directory; prompt paths may not contain symlinks"
                        ) from None
                    raise PromptError(f"{path}: {exc.strerror}") from None
                os.close(fd)
                fd = nxt
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise PromptError(f"{path}: not a regular file")
            with os.fdopen(fd, "rb") as fh:
                fd = -1
                data = fh.read(_MAX_BYTES + 1)
        finally:
            if fd >= 0:
                os.close(fd)
        if len(data) > _MAX_BYTES:
            raise PromptError(f"{path}: larger than {_MAX_BYTES} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PromptError(f"{path}: not UTF-8 text ({exc})") from None


def fill(template: str, fields: dict[str, Any], *, where: str = "prompt") -> str:
    """``template`` with ``{name}`` placeholders replaced from ``fields``."""
    formatter = string.Formatter()
    try:
        needed = {name for _, name, _, _ in formatter.parse(template) if name is not None}
    except ValueError as exc:
        raise PromptError(
            f"{where}: malformed template ({exc}); write {{{{ }}}} for braces"
        ) from None
    bare = {n.split(".")[0].split("[")[0] for n in needed}
    if "" in bare:
        raise PromptError(f"{where}: positional placeholder '{{}}'; name every field")
    missing = sorted(bare - set(fields))
    if missing:
        given = ", ".join(sorted(fields)) or "none"
        raise PromptError(f"{where}: no value for field(s) {', '.join(missing)} (given: {given})")
    try:
        return formatter.vformat(template, (), fields)
    except (KeyError, AttributeError, IndexError, ValueError) as exc:
        raise PromptError(f"{where}: cannot fill the template: {exc!r}") from None


def _components(rel: str) -> list[str]:
    if not rel or "\0" in rel:
        raise PromptError(f"invalid prompt path {rel!r}")
    if rel.startswith("/") or os.path.isabs(rel):
        raise PromptError(f"{rel!r}: prompt paths are relative to the prompt directory")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise PromptError(f"{rel!r}: '..' is not allowed in prompt paths")
    return parts
