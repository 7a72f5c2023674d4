"""``http:fetch``: turning a response body into what the caller gets.

The server names the charset, so the server chooses which of Python's codecs runs on
its bytes — and not all of them are text encodings. ``rot13`` and ``idna`` work on
``str``, ``zlib``/``base64``/``hex``/``bz2``/``uu`` on ``bytes`` (both crash the decode
with ``TypeError``/``AssertionError``), ``unicode_escape`` interprets backslash escapes
(turning ``\\x1b`` in the text into a real ESC), ``utf-7`` and ``hz`` are 7-bit stateful
tricks known from XSS, and ``punycode`` is quadratic: a 1 MiB body froze the event loop
for many seconds, past the fetch's deadline.

So a charset is looked up (``codecs.lookup`` resolves aliases: ``latin1``, ``UTF8``,
``sjis``) and used only if its canonical name is in :data:`TEXT_CHARSETS`, real text
encodings with linear-time C decoders. Anything else — refused or unknown — is decoded
as UTF-8 with replacement characters, and the result carries ``charset_ignored`` with
the name the server sent. Large bodies are decoded in a worker thread, so even a linear
decode of the whole cap never holds the event loop.
"""

from __future__ import annotations

import asyncio
import base64
import codecs

TEXTUAL_TYPES = ("application/json", "application/xml", "application/javascript")
TEXTUAL_SUFFIXES = ("+json", "+xml")

#: Canonical ``codecs`` names of the charsets a body may be decoded with.
TEXT_CHARSETS = frozenset(
    {
        "utf-8",
        "utf-8-sig",
        "utf-16",
        "utf-16-le",
        "utf-16-be",
        "utf-32",
        "utf-32-le",
        "utf-32-be",
        "ascii",
        *(f"iso8859-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16)),
        *(f"cp{n}" for n in (874, 1250, 1251, 1252, 1253, 1254, 1255, 1256, 1257, 1258)),
        "cp437",
        "cp850",
        "cp852",
        "cp866",
        "koi8-r",
        "koi8-u",
        "mac-roman",
        "mac-cyrillic",
        "tis-620",
        "shift_jis",
        "cp932",
        "euc_jp",
        "iso2022_jp",
        "euc_kr",
        "cp949",
        "gb2312",
        "gbk",
        "gb18030",
        "big5",
        "big5hkscs",
        "cp950",
    }
)

#: Web labels Python does not know under that name.
_ALIASES = {"windows-874": "cp874", "x-mac-cyrillic": "mac-cyrillic", "x-sjis": "shift_jis"}

#: Bodies larger than this are decoded in a worker thread.
THREAD_DECODE_BYTES = 64 * 1024


def text_codec(charset: str) -> str | None:
    """The canonical codec for a ``charset=`` value, or None when it is not allowed."""
    name = charset.strip().strip("\"'").lower()
    name = _ALIASES.get(name, name)
    if not name or len(name) > 40:
        return None
    try:
        canonical = codecs.lookup(name).name
    except (LookupError, ValueError):
        return None
    return canonical if canonical in TEXT_CHARSETS else None


def _parse(content_type: str) -> tuple[str, str | None]:
    ctype, _, params = content_type.partition(";")
    charset = None
    for param in params.split(";"):
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset":
            charset = value.strip().strip('"') or None
    return ctype.strip().lower(), charset


def decode_body(data: bytes, content_type: str, truncated: bool) -> dict[str, str]:
    """``body`` and ``body_encoding`` (``text`` or ``base64``) for a response, plus
    ``charset_ignored`` when the server's charset was not used.

    Text when the content type is textual (in its charset when that is allowed; a
    multi-byte character cut by truncation is dropped), else base64.
    """
    ctype, charset = _parse(content_type)
    textual = (
        ctype.startswith("text/")
        or ctype in TEXTUAL_TYPES
        or ctype.endswith(TEXTUAL_SUFFIXES)
        or (not ctype and charset is not None)
    )
    if not ctype and charset is None:
        try:  # no content type: text if it is valid UTF-8
            strict = codecs.getincrementaldecoder("utf-8")("strict")
            return {"body": strict.decode(data, final=not truncated), "body_encoding": "text"}
        except UnicodeDecodeError:
            textual = False
    if not textual:
        return {"body": base64.b64encode(data).decode("ascii"), "body_encoding": "base64"}
    codec = text_codec(charset) if charset is not None else "utf-8"
    decoder = codecs.getincrementaldecoder(codec or "utf-8")("replace")
    out = {"body": decoder.decode(data, final=not truncated), "body_encoding": "text"}
    if codec is None and charset is not None:
        out["charset_ignored"] = charset[:40]
    return out


async def decode_body_off_loop(data: bytes, content_type: str, truncated: bool) -> dict[str, str]:
    """:func:`decode_body`, in a worker thread when the body is large."""
    if len(data) <= THREAD_DECODE_BYTES:
        return decode_body(data, content_type, truncated)
    return await asyncio.to_thread(decode_body, data, content_type, truncated)


__all__ = ["TEXT_CHARSETS", "decode_body", "decode_body_off_loop", "text_codec"]
