"""Walking an image folder: which files are images, their labels, and what could not be listed.

scan_folder lists every image file under a root, sorted by relative path, with the size and mtime
its listing saw; the first subfolder names an image's label. Whatever looks like an image but cannot
be one is recorded with its reason instead of being dropped in silence: a broken symbolic link, a
link loop, a FIFO or a device named *.png, a folder named *.png (which is still walked). A subfolder
that cannot be listed is recorded too, and named in Listing.unlisted, so that callers never take its
files for deleted. File names that are not valid UTF-8 come as str with surrogate escapes
(os.fsdecode), as Python gives them, and open as they are.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from hashae.decode import has_image_extension, image_channels_of, not_regular_reason
from hashae.errors import DataError

CHANNEL_SAMPLE_SIZE = 64  # images looked at to detect grayscale folders


class ImageFile(NamedTuple):
    """An image in a folder: its posix path relative to the root, and its class label.

    label is the first subfolder under the root (root/cat/x/1.png -> "cat"); None at the top level.
    size and mtime_ns are what the folder's listing saw (None when not listed by scan_folder).
    (A named tuple: folders list millions and shards carry thousands to worker processes.)
    """

    relpath: str
    label: str | None
    size: int | None = None
    mtime_ns: int | None = None


@dataclass(frozen=True)
class Skipped:
    """A file (or folder) that could not be used, and the short reason why; size and mtime_ns
    are what was seen of it (None when nothing could be)."""

    relpath: str
    reason: str
    size: int | None = None
    mtime_ns: int | None = None


@dataclass(frozen=True)
class Listing:
    """What scan_folder found under root.

    files: the image files, sorted by relative path. skipped: entries that look like images (or
    may hold some) but cannot be read as such, with reasons. unlisted: relative paths of subfolders
    that could not be listed: whatever they hold is unknown, not gone.
    """

    root: Path
    files: list[ImageFile] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    unlisted: list[str] = field(default_factory=list)

    def is_known(self, relpath: str) -> bool:
        """False when relpath lies under a folder that could not be listed (its state is unknown)."""
        return not any(relpath.startswith(folder + "/") for folder in self.unlisted)


def scan_folder(root: str | os.PathLike) -> Listing:
    """Every image file under root (recursive), sorted by relative path, and what could not be used.

    Only IMAGE_EXTENSIONS count; hidden files and folders (".name") are skipped. Symbolic links are
    followed; a folder reached twice (a link loop, or two links to one place) is read once and the
    second link recorded. Raises DataError when root itself is not a folder that can be listed.
    """
    root = Path(root)
    try:
        root_info = root.stat()
    except OSError as error:
        raise DataError(f"not a folder: {root} ({error.strerror or error})") from None
    if not stat.S_ISDIR(root_info.st_mode):
        raise DataError(f"not a folder: {root}")
    walk = _Walk(root)
    walk.seen_folders[(root_info.st_dev, root_info.st_ino)] = ""
    walk.walk(os.fspath(root))
    return Listing(
        root=root,
        files=sorted(walk.files, key=lambda image: image.relpath),
        skipped=sorted(walk.skipped, key=lambda item: item.relpath),
        unlisted=sorted(walk.unlisted),
    )


def list_images(root: str | os.PathLike) -> list[ImageFile]:
    """The image files of scan_folder(root), sorted by relative path."""
    return scan_folder(root).files


class _Walk:
    """What scan_folder has found so far."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.files: list[ImageFile] = []
        self.skipped: list[Skipped] = []
        self.unlisted: list[str] = []
        self.seen_folders: dict[tuple[int, int], str] = {}  # (device, inode) -> relative path

    def walk(self, top: str) -> None:
        """Walk every folder under top: real folders first, in path order, then folders reached
        through symbolic links, so that a link to a folder inside the root never claims it first."""
        real: list[tuple[str, tuple[str, ...]]] = [(top, ())]
        linked: list[tuple[str, tuple[str, ...], tuple[int, int]]] = []
        while real or linked:
            if real:
                folder, rel_parts = real.pop()
            else:
                folder, rel_parts, identity = linked.pop(0)
                if not self._claim(identity, rel_parts):
                    continue
            subfolders = []
            for entry in self.list_folder(folder, rel_parts):
                if entry.name.startswith("."):
                    continue
                found = self.visit(entry, (*rel_parts, entry.name))
                if found is None:
                    continue
                if entry.is_symlink():
                    linked.append(found)
                elif self._claim(found[2], found[1]):
                    subfolders.append(found[:2])
            real.extend(reversed(subfolders))  # popped in path order

    def list_folder(self, folder: str, rel_parts: tuple[str, ...]) -> list[os.DirEntry]:
        try:
            with os.scandir(folder) as entries:
                return sorted(entries, key=lambda entry: entry.name)
        except OSError as error:
            relpath = "/".join(rel_parts)
            if not rel_parts:
                raise DataError(f"cannot list the folder {self.root}: {error.strerror or error}") from None
            self.unlisted.append(relpath)
            self.skipped.append(Skipped(relpath, f"cannot list the folder ({error.strerror or error})"))
            return []

    def visit(self, entry: os.DirEntry, parts: tuple[str, ...]) -> tuple[str, tuple[str, ...], tuple[int, int]] | None:
        """Record one entry; returns (path, parts, identity) of a folder to walk, else None."""
        relpath = "/".join(parts)
        try:
            info = entry.stat()  # follows symbolic links
        except OSError as error:
            self.skipped.append(Skipped(relpath, _stat_failure_reason(entry, error)))
            return None
        if stat.S_ISDIR(info.st_mode):
            return entry.path, parts, (info.st_dev, info.st_ino)
        if not has_image_extension(entry.name):
            return None
        reason = not_regular_reason(info.st_mode)
        if reason:
            self.skipped.append(Skipped(relpath, reason))
        else:
            label = parts[0] if len(parts) > 1 else None
            self.files.append(ImageFile(relpath, label, size=info.st_size, mtime_ns=info.st_mtime_ns))
        return None

    def _claim(self, identity: tuple[int, int], parts: tuple[str, ...]) -> bool:
        """True for a folder seen the first time (to walk); a second sight is recorded, not walked."""
        relpath = "/".join(parts)
        if identity in self.seen_folders:
            first = self.seen_folders[identity] or "the indexed folder itself"
            self.skipped.append(Skipped(relpath, f"links to a folder listed already ({first})"))
            return False
        self.seen_folders[identity] = relpath
        if has_image_extension(parts[-1]):
            self.skipped.append(Skipped(relpath, "is a folder, not an image file (its images are indexed)"))
        return True


def _stat_failure_reason(entry: os.DirEntry, error: OSError) -> str:
    if error.errno == errno.ELOOP:
        return "symbolic link loop"
    if error.errno == errno.ENOENT and entry.is_symlink():
        return "broken symbolic link (its target is missing)"
    return f"cannot read the file ({error.strerror or error})"


def detect_channels(
    root: str | os.PathLike, files: Sequence[ImageFile] | None = None, *, sample: int = CHANNEL_SAMPLE_SIZE
) -> int:
    """1 if every readable image of an evenly spaced sample is grayscale, else 3.

    Only file headers are read. Unreadable files are ignored; 3 if none can be read.
    """
    files = list_images(root) if files is None else files
    found = []
    for image in evenly_spaced(files, sample):
        try:
            found.append(image_channels_of(Path(root) / image.relpath))
        except DataError:
            continue
    return 1 if found and all(channels == 1 for channels in found) else 3


def evenly_spaced(items: Sequence, count: int) -> list:
    """Up to count items spread evenly over the sequence, in order (all of them when fewer)."""
    step = max(1, len(items) // max(1, count))
    return list(items[::step][:count])


def class_names_of(files: Sequence[ImageFile]) -> tuple[str, ...]:
    """Sorted unique labels of `files`; label i of a dataset is class_names[i]."""
    return tuple(sorted({image.label for image in files if image.label is not None}))

