"""File and folder names in the catalogue, stored losslessly.

POSIX names are bytes. Python hands names that are not valid UTF-8 over as str with surrogate
escapes (os.fsdecode: b"bad\\xff.png" -> "bad\\udcff.png"), which SQLite cannot store as TEXT. Such a
name is stored as the BLOB of its bytes (os.fsencode) and read back as the very same str; every
other name stays plain TEXT, as in stores written before, so one name has one stored form and
lookups by name match it exactly.
"""

from __future__ import annotations

from hashae.index.backends.base import StoreError

ENCODING = "utf-8"  # the bytes of a stored name; what os.fsencode uses on Linux and macOS


def name_to_db(name: str | None) -> str | bytes | None:
    """The stored form of a name: itself when it is valid UTF-8, else the BLOB of its bytes."""
    if name is None:
        return None
    try:
        name.encode(ENCODING)
        return name
    except UnicodeEncodeError:
        pass
    try:
        return name.encode(ENCODING, "surrogateescape")
    except UnicodeEncodeError:
        raise StoreError(f"{name!r} is not a file name the filesystem could have given (lone surrogates)") from None


def name_from_db(value: str | bytes | None) -> str | None:
    """The name as Python sees it on disk (surrogate escapes for bytes that are not UTF-8)."""
    if isinstance(value, bytes):
        return value.decode(ENCODING, "surrogateescape")
    return value
