"""Text as a Milvus store keeps it: file names, labels and reasons, stored losslessly as UTF-8.

POSIX names are bytes; Python hands names that are not valid UTF-8 over with surrogate escapes
(os.fsdecode: b"bad\\xff.png" -> "bad\\udcff.png"), which neither Milvus VARCHAR nor SQLite TEXT can
hold. Such a name is stored as MARKER + base64 of its bytes; so is any text that happens to start
with MARKER, so decoding is never ambiguous. A relative path or a folder name never starts with
"/", so every real name but those few is stored as itself. Milvus Lite has no NULL values: None
(an item without a label) is stored as "", which no encoded text is.
"""

from __future__ import annotations

import base64

from hashae.index.backends.base import StoreError

MARKER = "//b64:"
ENCODING = "utf-8"


def text_to_db(text: str | None) -> str:
    """The stored form of a name, label or reason."""
    if text is None:
        return ""
    if text and not text.startswith(MARKER):
        try:
            text.encode(ENCODING)
            return text
        except UnicodeEncodeError:
            pass
    try:
        raw = text.encode(ENCODING, "surrogateescape")
    except UnicodeEncodeError:
        raise StoreError(f"{text!r} is not a file name the filesystem could have given (lone surrogates)") from None
    return MARKER + base64.urlsafe_b64encode(raw).decode("ascii")


def text_from_db(stored: str) -> str | None:
    """The text as Python sees it on disk (surrogate escapes for bytes that are not UTF-8)."""
    if stored == "":
        return None
    if stored.startswith(MARKER):
        return base64.urlsafe_b64decode(stored[len(MARKER):]).decode(ENCODING, "surrogateescape")
    return stored
