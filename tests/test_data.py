"""The data layer: hardened image decoding (Pillow and the plain-PNG fast path), folders, the one
reader of shards, IDX, Fashion-MNIST, .npy vectors, load_source."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import resource
import signal
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from hashae import datasets
from hashae.datasets import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_FOLDERS,
    ArrayDataset,
    export_fashion_mnist,
    idx_labels_path,
    load_fashion_mnist,
    load_idx_dataset,
    load_image_folder,
    load_source,
    read_idx,
    read_npy,
)
from hashae.decode import ImageDecodeError, decode_image, decode_image_with_channels, image_channels_of
from hashae.errors import ConfigError, DataError
from hashae.events import Event
from hashae.fastpng import decode_plain_png, decode_plain_png_into
from hashae.folders import ImageFile as FolderImage
from hashae.folders import detect_channels, list_images, scan_folder
from hashae.reader import Shard, content_hash, decode_into, hash_file, make_shards, read_shard
from permissions import unlistable

FASHION_MNIST_PRESENT = (datasets.FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file()
needs_fashion_mnist = pytest.mark.skipif(not FASHION_MNIST_PRESENT, reason="Fashion-MNIST not installed")

DARK, LIGHT = 40, 210  # the two gray levels of the half-and-half test pattern


def halves(width: int = 32, height: int = 32, mode: str = "L", left=DARK, right=LIGHT) -> Image.Image:
    """An image whose left half is one colour and right half another."""
    img = Image.new(mode, (width, height), left)
    img.paste(Image.new(mode, (width - width // 2, height), right), (width // 2, 0))
    return img


def save(img: Image.Image, path: Path, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **options)
    return path


def left_right_means(pixels: np.ndarray) -> tuple[float, float]:
    """Mean value of the left quarter and of the right quarter of (C, H, W) pixels."""
    width = pixels.shape[-1]
    return float(pixels[..., : width // 4].mean()), float(pixels[..., -(width // 4) :].mean())


def top_bottom_means(pixels: np.ndarray) -> tuple[float, float]:
    height = pixels.shape[-2]
    return float(pixels[..., : height // 4, :].mean()), float(pixels[..., -(height // 4) :, :].mean())


def png_with_header_size(width: int, height: int) -> bytes:
    """A small PNG whose IHDR declares width x height 8-bit grayscale pixels."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1000))
        + chunk(b"IEND", b"")
    )


def reason_of(source) -> str:
    """The short reason decode_image gives for refusing source."""
    with pytest.raises(ImageDecodeError) as caught:
        decode_image(source, size=8, channels=1)
    assert isinstance(caught.value, DataError)
    assert len(caught.value.reason) < 60
    return caught.value.reason


# ---------------------------------------------------------------------------------------------
# decode_image: formats


FORMATS = {
    # name: (file name, image, save options)
    "png-gray": ("a.png", lambda: halves(), {}),
    "png-rgb": ("a.png", lambda: halves(mode="RGB", left=(DARK,) * 3, right=(LIGHT,) * 3), {}),
    "jpeg-rgb": ("a.jpg", lambda: halves(mode="RGB", left=(DARK,) * 3, right=(LIGHT,) * 3), {"quality": 95}),
    "jpeg-gray": ("a.jpeg", lambda: halves(), {"quality": 95}),
    "jpeg-large": ("a.JPG", lambda: halves(1600, 1200, mode="RGB", left=(DARK,) * 3, right=(LIGHT,) * 3), {}),
    "webp": ("a.webp", lambda: halves(mode="RGB", left=(DARK,) * 3, right=(LIGHT,) * 3), {"lossless": True}),
    "bmp": ("a.bmp", lambda: halves(mode="RGB", left=(DARK,) * 3, right=(LIGHT,) * 3), {}),
    "tiff": ("a.tiff", lambda: halves(mode="RGB", left=(DARK,) * 3, right=(LIGHT,) * 3), {}),
    "gif": ("a.gif", lambda: halves().convert("P"), {}),
    "cmyk-jpeg": (
        "a.jpg",
        lambda: halves(mode="CMYK", left=(0, 0, 0, 255 - DARK), right=(0, 0, 0, 255 - LIGHT)),
        {},
    ),
    "png-16bit": (
        "a.png",
        lambda: Image.fromarray(np.asarray(halves(), dtype=np.uint16) * 257),
        {},
    ),
}


@pytest.mark.parametrize("name", sorted(FORMATS))
@pytest.mark.parametrize("channels", [1, 3])
def test_decode_every_format(tmp_path, name, channels):
    filename, make, options = FORMATS[name]
    path = save(make(), tmp_path / filename, **options)
    pixels = decode_image(path, size=16, channels=channels)
    assert pixels.shape == (channels, 16, 16)
    assert pixels.dtype == np.float32 and pixels.flags.c_contiguous
    assert pixels.min() >= 0.0 and pixels.max() <= 1.0
    left, right = left_right_means(pixels)
    assert left == pytest.approx(DARK / 255, abs=0.03)
    assert right == pytest.approx(LIGHT / 255, abs=0.03)


def test_decode_same_from_bytes_and_path(tmp_path):
    path = save(halves(mode="RGB", left=(10, 200, 30), right=(250, 5, 90)), tmp_path / "a.png")
    from_path = decode_image(path, size=12, channels=3)
    from_bytes = decode_image(path.read_bytes(), size=12, channels=3)
    np.testing.assert_array_equal(from_path, from_bytes)


def test_decode_keeps_colour_channels_apart(tmp_path):
    path = save(Image.new("RGB", (8, 8), (255, 0, 128)), tmp_path / "a.png")
    pixels = decode_image(path, size=8, channels=3)
    np.testing.assert_allclose(pixels.mean(axis=(1, 2)), [1.0, 0.0, 128 / 255], atol=1e-6)
    gray = decode_image(path, size=8, channels=1)
    assert gray.mean() == pytest.approx((0.299 * 255 + 0.114 * 128) / 255, abs=0.01)


def test_decode_exact_pixels_without_resize(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    path = save(Image.fromarray(pixels), tmp_path / "a.png")
    np.testing.assert_array_equal(decode_image(path, size=28, channels=1)[0], pixels.astype(np.float32) / 255)


def test_cmyk_colour(tmp_path):
    path = save(Image.new("CMYK", (8, 8), (255, 0, 0, 0)), tmp_path / "cyan.jpg")
    np.testing.assert_allclose(decode_image(path, size=8, channels=3).mean(axis=(1, 2)), [0, 1, 1], atol=0.02)


def test_palette_transparency_composited_on_white(tmp_path):
    img = Image.new("P", (16, 16), 0)
    img.putpalette([0, 0, 0] + [255, 0, 0] * 255)
    img.paste(1, (8, 0, 16, 16))  # left: transparent black index 0, right: opaque red
    path = save(img, tmp_path / "a.png", transparency=0)
    pixels = decode_image(path, size=16, channels=3)
    np.testing.assert_allclose(pixels[:, :, :6].mean(axis=(1, 2)), [1, 1, 1], atol=1e-6)  # white, not black
    np.testing.assert_allclose(pixels[:, :, -6:].mean(axis=(1, 2)), [1, 0, 0], atol=1e-6)


@pytest.mark.parametrize(
    "mode, transparent, opaque", [("LA", (0, 0), (DARK, 255)), ("RGBA", (0, 0, 0, 0), (DARK,) * 3 + (255,))]
)
def test_alpha_composited_on_white(tmp_path, mode, transparent, opaque):
    path = save(halves(mode=mode, left=transparent, right=opaque), tmp_path / "a.png")
    for channels in (1, 3):
        left, right = left_right_means(decode_image(path, size=16, channels=channels))
        assert left == pytest.approx(1.0, abs=1e-6)
        assert right == pytest.approx(DARK / 255, abs=1e-2)


def test_animated_gif_gives_first_frame(tmp_path):
    frames = [Image.new("L", (16, 16), 0), Image.new("L", (16, 16), 255)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with Image.open(path) as written:
        assert written.n_frames == 2
    assert decode_image(path, size=8, channels=1).max() == 0.0


def test_16bit_png_uses_full_range(tmp_path):
    values = np.array([[0, 16384, 32768, 65535]] * 4, dtype=np.uint16)
    path = save(Image.fromarray(values), tmp_path / "deep.png")
    with Image.open(path) as written:
        assert written.mode.startswith("I")
    pixels = decode_image(path, size=4, channels=1)
    np.testing.assert_allclose(pixels[0, 0], values[0] / 65535, atol=1e-6)


@pytest.mark.parametrize("orientation, dark_side", [(None, "left"), (6, "top"), (8, "bottom"), (3, "right")])
def test_exif_orientation_applied(tmp_path, orientation, dark_side):
    # stored 40 wide x 20 high, dark left half; orientation 6 = rotate 90 degrees clockwise to view
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    path = save(halves(40, 20), tmp_path / "photo.jpg", exif=exif, quality=95)
    with Image.open(path) as written:
        assert written.size == (40, 20)
    pixels = decode_image(path, size=16, channels=1)
    left, right = left_right_means(pixels)
    top, bottom = top_bottom_means(pixels)
    means = {"left": left, "right": right, "top": top, "bottom": bottom}
    opposite = {"left": "right", "right": "left", "top": "bottom", "bottom": "top"}[dark_side]
    assert means[dark_side] < 0.25 and means[opposite] > 0.75


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: Image.new("L", (4, 4)), 1),
        (lambda: Image.new("LA", (4, 4)), 1),
        (lambda: Image.fromarray(np.zeros((4, 4), np.uint16)), 1),
        (lambda: Image.new("RGB", (4, 4)), 3),
        (lambda: Image.new("RGBA", (4, 4)), 3),
        (lambda: Image.new("P", (4, 4)), 3),
    ],
)
def test_image_channels_of(tmp_path, make, expected):
    assert image_channels_of(save(make(), tmp_path / "a.png")) == expected


def test_image_channels_of_gray_jpeg(tmp_path):
    assert image_channels_of(save(Image.new("L", (8, 8)), tmp_path / "a.jpg")) == 1
    assert image_channels_of(save(Image.new("RGB", (8, 8)), tmp_path / "b.jpg")) == 3


# ---------------------------------------------------------------------------------------------
# decode_image: bad input


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert reason_of(path) == "empty file"
    assert reason_of(b"") == "empty file"


def test_text_file_named_png(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("these are not pixels\n" * 10)
    assert reason_of(path) == "not an image"


def test_other_formats_are_not_decoded(tmp_path):
    """Only the decoders of IMAGE_EXTENSIONS run: a valid PPM named .png is refused, not parsed."""
    path = save(Image.new("RGB", (8, 8)), tmp_path / "a.ppm")
    assert reason_of(path) == "not an image"
    (tmp_path / "eps.png").write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n")
    assert reason_of(tmp_path / "eps.png") == "not an image"


@pytest.mark.parametrize("filename", ["a.png", "a.jpg"])
def test_truncated_files(tmp_path, filename):
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = save(Image.fromarray(noise), tmp_path / filename).read_bytes()
    path = tmp_path / f"cut-{filename}"
    path.write_bytes(whole[: len(whole) // 2])
    assert reason_of(path) == "truncated file"


def test_damaged_header(tmp_path):
    path = tmp_path / "stub.png"
    path.write_bytes(png_with_header_size(8, 8)[:8])
    assert reason_of(path) == "truncated or corrupt PNG file"
    path.write_bytes(png_with_header_size(8, 8)[:20])
    assert reason_of(path).startswith("truncated")


@pytest.mark.parametrize("side", [100_000, 10_000])  # past Pillow's error limit; past its warning limit
def test_decompression_bomb_refused_without_allocating(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_with_header_size(side, side))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning may leak out
        reason = reason_of(path)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert reason == f"image too large: {side * side} pixels"
    assert after - before < 100_000  # kilobytes: far below the gigabytes the pixels would need


def test_pixel_limit_is_local(tmp_path):
    path = save(Image.new("L", (64, 64)), tmp_path / "a.png")
    limit_before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageDecodeError, match="image too large: 64x64 pixels"):
        decode_image(path, size=8, channels=1, max_pixels=64 * 63)
    assert decode_image(path, size=8, channels=1, max_pixels=64 * 64).shape == (1, 8, 8)
    assert limit_before == Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"])
def test_damaged_files_fail_cleanly(fmt):
    """Randomly damaged images either decode to valid pixels or raise ImageDecodeError, nothing else."""
    rng = np.random.default_rng(5)
    buffer = io.BytesIO()
    halves(24, 24, mode="P" if fmt == "GIF" else "RGB", left=(DARK,) * 3, right=(LIGHT,) * 3).save(
        buffer, fmt
    )
    original = buffer.getvalue()
    for _ in range(40):
        damaged = bytearray(original[: rng.integers(1, len(original) + 1)])
        for position in rng.integers(0, len(damaged), size=rng.integers(0, 6)):
            damaged[position] = rng.integers(0, 256)
        try:
            pixels = decode_image(bytes(damaged), size=8, channels=3)
        except ImageDecodeError as exc:
            assert exc.reason
            continue
        assert pixels.shape == (3, 8, 8) and np.isfinite(pixels).all()
        assert pixels.min() >= 0.0 and pixels.max() <= 1.0


def test_missing_file_and_directory(tmp_path):
    assert reason_of(tmp_path / "absent.png") == "file not found"
    (tmp_path / "folder.png").mkdir()
    assert reason_of(tmp_path / "folder.png") == "is a directory"


def test_error_names_the_file(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("hello")
    with pytest.raises(DataError, match=r"notes\.png: not an image"):
        decode_image(path, size=8, channels=1)


def test_keyboard_interrupt_is_not_swallowed(tmp_path, monkeypatch):
    path = save(Image.new("L", (4, 4)), tmp_path / "a.png")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ImageFile.ImageFile, "load", interrupted)
    with pytest.raises(KeyboardInterrupt):
        decode_image(path, size=4, channels=1)


@pytest.mark.parametrize("size, channels", [(0, 1), (8, 2), (8, 4), (100_000, 1)])
def test_bad_arguments(tmp_path, size, channels):
    with pytest.raises(ConfigError):
        decode_image(b"x", size=size, channels=channels)


# ---------------------------------------------------------------------------------------------
# Folders


def make_folder(root: Path) -> None:
    """cat/ and dog/ with good images, plus bad ones, hidden ones and non-images."""
    save(halves(), root / "cat" / "1.png")
    save(halves(mode="RGB", left=(0, 0, 0), right=(255, 255, 255)), root / "cat" / "sub" / "2.JPG")
    save(Image.new("L", (20, 10), 255), root / "dog" / "3.webp", lossless=True)
    save(Image.new("L", (8, 8), 0), root / "top.bmp")
    (root / "dog" / "empty.png").write_bytes(b"")
    (root / "dog" / "text.gif").write_text("not a gif")
    (root / "cat" / "readme.txt").write_text("ignored: not an image extension")
    save(Image.new("L", (8, 8)), root / ".hidden" / "4.png")
    save(Image.new("L", (8, 8)), root / "cat" / ".5.png")


def test_list_images(tmp_path):
    make_folder(tmp_path)
    files = list_images(tmp_path)
    assert [f.relpath for f in files] == [
        "cat/1.png",
        "cat/sub/2.JPG",
        "dog/3.webp",
        "dog/empty.png",
        "dog/text.gif",
        "top.bmp",
    ]
    assert [f.label for f in files] == ["cat", "cat", "dog", "dog", "dog", None]


def test_list_images_survives_symlink_loops(tmp_path):
    save(Image.new("L", (4, 4)), tmp_path / "a" / "1.png")
    os.symlink(tmp_path, tmp_path / "a" / "loop")
    os.symlink(tmp_path / "a", tmp_path / "b")
    files = list_images(tmp_path)
    assert [f.relpath for f in files] == ["a/1.png"]


def test_list_images_not_a_folder(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        list_images(tmp_path / "absent")


def test_load_image_folder_good_and_bad(tmp_path):
    make_folder(tmp_path)
    events: list[Event] = []
    loaded = load_image_folder(tmp_path, size=8, channels=3, report=events.append)
    dataset, skipped = loaded.dataset, loaded.skipped
    assert dataset.x.shape == (4, 3, 8, 8) and dataset.input_shape == (3, 8, 8)
    assert dataset.paths == ("cat/1.png", "cat/sub/2.JPG", "dog/3.webp", "top.bmp")
    assert dataset.class_names == ("cat", "dog")
    assert dataset.labels.tolist() == [0, 0, 1, -1]
    assert {s.relpath: s.reason for s in skipped} == {
        "dog/empty.png": "empty file",
        "dog/text.gif": "not an image",
    }
    assert [(e.kind, e.done) for e in events if e.kind in ("start", "end")] == [("start", 0), ("end", 6)]
    assert dataset.x[2].min() == pytest.approx(1.0)  # the white webp


def test_load_image_folder_subset_and_no_labels(tmp_path):
    for i in range(3):
        save(Image.new("L", (8, 8), 80 * i), tmp_path / f"{i}.png")
    loaded = load_image_folder(tmp_path, size=4, channels=1, files=list_images(tmp_path)[1:])
    dataset = loaded.dataset
    assert loaded.skipped == []
    assert dataset.paths == ("1.png", "2.png")
    assert dataset.class_names == () and dataset.labels.tolist() == [-1, -1]
    np.testing.assert_allclose(dataset.x.mean(axis=(1, 2, 3)), [80 / 255, 160 / 255], atol=1e-6)


def test_load_image_folder_detects_channels_reading_each_file_once(tmp_path):
    for i in range(5):
        save(Image.new("L", (10, 10), 40 * i), tmp_path / "gray" / f"{i}.png")
    loaded = load_image_folder(tmp_path / "gray", size=6)
    assert loaded.channels == 1 and loaded.dataset.x.shape == (5, 1, 6, 6)
    np.testing.assert_array_equal(loaded.dataset.x[3], decode_image(tmp_path / "gray" / "3.png", size=6, channels=1))
    save(Image.new("RGB", (10, 10), (200, 0, 0)), tmp_path / "gray" / "red.png")
    assert load_image_folder(tmp_path / "gray", size=6).channels == 3


def test_read_shard_in_batches(tmp_path):
    make_folder(tmp_path)
    files = list_images(tmp_path)
    (shard,) = make_shards(tmp_path, files, shard_size=100)
    batches = list(read_shard(shard, size=8, channels=1, batch_size=4))
    assert len(batches) == 2
    first, second = batches
    assert [f.relpath for f in first.files] == ["cat/1.png", "cat/sub/2.JPG", "dog/3.webp"]
    assert first.pixels.shape == (3, 1, 8, 8) and [s.relpath for s in first.skipped] == ["dog/empty.png"]
    assert [f.relpath for f in second.files] == ["top.bmp"] and second.pixels.shape == (1, 1, 8, 8)
    assert [s.reason for s in second.skipped] == ["not an image"]
    assert [f.label for f in first.files] == ["cat", "cat", "dog"]
    for batch in batches:
        for record, pixels in zip(batch.files, batch.pixels):
            path = tmp_path / record.relpath
            assert (record.size, record.mtime_ns) == (path.stat().st_size, path.stat().st_mtime_ns)
            assert record.content_hash == hashlib.blake2b(path.read_bytes(), digest_size=16).hexdigest()
            np.testing.assert_array_equal(pixels, decode_image(path, size=8, channels=1))


def test_detect_channels(tmp_path):
    save(Image.new("L", (4, 4)), tmp_path / "gray" / "a.png")
    (tmp_path / "gray" / "broken.png").write_bytes(b"junk")
    assert detect_channels(tmp_path / "gray") == 1
    save(Image.new("RGB", (4, 4)), tmp_path / "mixed" / "a.png")
    save(Image.new("L", (4, 4)), tmp_path / "mixed" / "b.png")
    assert detect_channels(tmp_path / "mixed") == 3


# ---------------------------------------------------------------------------------------------
# IDX


def idx_bytes(array: np.ndarray) -> bytes:
    codes = {np.dtype("uint8"): 0x08, np.dtype("int16"): 0x0B, np.dtype("float32"): 0x0D}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


@pytest.mark.parametrize("gzipped", [False, True])
@pytest.mark.parametrize("dtype", ["uint8", "int16", "float32"])
def test_idx_round_trip(tmp_path, gzipped, dtype):
    array = (np.random.default_rng(2).normal(size=(5, 4, 3)) * 100).astype(dtype)
    raw = idx_bytes(array)
    path = tmp_path / "x.idx"  # gzip told by content, not by name
    path.write_bytes(gzip.compress(raw) if gzipped else raw)
    loaded = read_idx(path)
    assert loaded.dtype == np.dtype(dtype) and loaded.dtype.isnative
    np.testing.assert_array_equal(loaded, array)


@pytest.mark.parametrize(
    "mangle, message",
    [
        (lambda raw: raw[:-1], "truncated"),
        (lambda raw: raw[:10], "truncated IDX header"),
        (lambda raw: raw + b"\x00", "past the"),
        (lambda raw: b"\x01" + raw[1:], "bad magic"),
        (lambda raw: raw[:2] + b"\x07" + raw[3:], "element type"),
        (lambda raw: b"", "bad magic"),
    ],
)
def test_idx_malformed(tmp_path, mangle, message):
    raw = idx_bytes(np.zeros((2, 3, 3), np.uint8))
    path = tmp_path / "bad-images-idx3-ubyte"
    path.write_bytes(mangle(raw))
    with pytest.raises(DataError, match=message):
        read_idx(path)


def test_idx_truncated_gzip(tmp_path):
    packed = gzip.compress(idx_bytes(np.arange(600, dtype=np.uint8).reshape(6, 10, 10)))
    path = tmp_path / "cut.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match=r"cut\.gz"):
        read_idx(path)


def test_idx_huge_header_claim(tmp_path):
    path = tmp_path / "liar.gz"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 3]) + struct.pack(">3I", 2**31, 2**31, 2**31)))
    with pytest.raises(DataError, match="too large"):
        read_idx(path)


def test_load_idx_dataset_with_sibling_labels(tmp_path):
    images = np.random.default_rng(3).integers(0, 256, (6, 5, 4), dtype=np.uint8)
    labels = np.array([0, 2, 1, 2, 0, 1], dtype=np.uint8)
    (tmp_path / "toy-images-idx3-ubyte").write_bytes(idx_bytes(images))
    (tmp_path / "toy-labels-idx1-ubyte").write_bytes(idx_bytes(labels))
    labels_path = idx_labels_path(tmp_path / "toy-images-idx3-ubyte")
    assert labels_path == tmp_path / "toy-labels-idx1-ubyte"
    dataset = load_idx_dataset(tmp_path / "toy-images-idx3-ubyte", labels_path)
    assert dataset.x.shape == (6, 1, 5, 4)
    np.testing.assert_array_equal(dataset.x[:, 0], images.astype(np.float32) / 255)
    assert dataset.labels.tolist() == labels.tolist() and dataset.class_names == ("0", "1", "2")
    via_source = load_source(tmp_path / "toy-images-idx3-ubyte", size=5)
    assert via_source.x.shape == (6, 1, 5, 5) and via_source.labels.tolist() == labels.tolist()
    with pytest.raises(DataError, match="class names"):
        load_idx_dataset(tmp_path / "toy-images-idx3-ubyte", labels_path, class_names=("a", "b"))


@needs_fashion_mnist
def test_load_fashion_mnist():
    train = load_fashion_mnist("train")
    assert train.x.shape == (60000, 1, 28, 28) and train.x.dtype == np.float32
    assert train.labels.dtype == np.int64 and set(np.unique(train.labels)) == set(range(10))
    assert train.x.min() >= 0.0 and train.x.max() <= 1.0
    assert train.class_names == FASHION_MNIST_CLASSES and train.paths is None
    assert load_fashion_mnist("test").x.shape == (10000, 1, 28, 28)


def test_fashion_mnist_missing_or_bad_split(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist("train", root=tmp_path)
    with pytest.raises(DataError, match="unknown Fashion-MNIST split"):
        load_fashion_mnist("validation")


@needs_fashion_mnist
def test_export_fashion_mnist(tmp_path):
    out = tmp_path / "images"
    assert export_fashion_mnist(out, split="test", limit=25) == 25
    files = list_images(out)
    assert len(files) == 25
    assert {f.label for f in files} <= set(FASHION_MNIST_FOLDERS)
    test = load_fashion_mnist("test").subset(np.arange(25))
    for image in files:
        index = int(image.relpath.split("_")[-1].removesuffix(".png"))
        assert image.relpath.startswith(f"{FASHION_MNIST_FOLDERS[test.labels[index]]}/test_")
        np.testing.assert_array_equal(decode_image(out / image.relpath, size=28, channels=1), test.x[index])
    before = {
        f.relpath: ((out / f.relpath).read_bytes(), (out / f.relpath).stat().st_mtime_ns) for f in files
    }
    assert export_fashion_mnist(out, split="test", limit=25) == 25
    after = {
        f.relpath: ((out / f.relpath).read_bytes(), (out / f.relpath).stat().st_mtime_ns)
        for f in list_images(out)
    }
    assert after == before
    assert not [p for p in out.rglob("*") if p.name.startswith(".")]  # no temporary files left


def test_export_rewrites_a_damaged_file(tmp_path):
    if not FASHION_MNIST_PRESENT:
        pytest.skip("Fashion-MNIST not installed")
    out = tmp_path / "images"
    export_fashion_mnist(out, split="test", limit=3)
    victim = next(out.rglob("test_00001.png"))
    good = victim.read_bytes()
    victim.write_bytes(b"garbage")
    export_fashion_mnist(out, split="test", limit=3)
    assert victim.read_bytes() == good


# ---------------------------------------------------------------------------------------------
# .npy vectors


def test_read_npy(tmp_path):
    vectors = np.random.default_rng(4).normal(size=(7, 5))
    np.save(tmp_path / "v.npy", vectors)
    dataset = read_npy(tmp_path / "v.npy")
    assert dataset.x.dtype == np.float32 and dataset.x.shape == (7, 5) and dataset.input_shape == (5,)
    assert dataset.labels.tolist() == [-1] * 7 and dataset.class_names == ()
    np.testing.assert_allclose(dataset.x, vectors, rtol=1e-6)
    np.save(tmp_path / "ints.npy", np.arange(6).reshape(3, 2))
    assert read_npy(tmp_path / "ints.npy").x.dtype == np.float32


@pytest.mark.parametrize(
    "write, message",
    [
        (
            lambda p: np.save(p, np.array([[object(), 1]], dtype=object), allow_pickle=True),
            "pickled or object",
        ),
        (lambda p: p.write_bytes(pickle.dumps(np.zeros((2, 2)))), "pickled or object"),
        (
            lambda p: np.save(p, np.array([[1.0, np.nan], [0.0, 1.0]])),
            "NaN or infinite values \\(first in row 0\\)",
        ),
        (lambda p: np.save(p, np.array([[1.0, 2.0], [np.inf, 1.0]])), "NaN or infinite"),
        (lambda p: np.save(p, np.array([[1e39, 0.0]])), "NaN or infinite"),  # overflows float32
        (lambda p: np.save(p, np.zeros(5)), "2-D numeric"),
        (lambda p: np.save(p, np.array([["a", "b"]])), "2-D numeric"),
        (lambda p: np.save(p, np.zeros((0, 3))), "empty"),
        (lambda p: p.write_bytes(b"\x93NUMPY garbage"), "not a valid .npy"),
    ],
)
def test_read_npy_refuses(tmp_path, write, message):
    path = tmp_path / "bad.npy"
    write(path)
    with pytest.raises(DataError, match=message):
        read_npy(path)


def test_read_npy_refuses_npz(tmp_path):
    with open(tmp_path / "a.npy", "wb") as file:
        np.savez(file, a=np.zeros((2, 2)))
    with pytest.raises(DataError, match="npz"):
        read_npy(tmp_path / "a.npy")


# ---------------------------------------------------------------------------------------------
# load_source and ArrayDataset


def test_load_source_folder_detects_channels(tmp_path):
    for i in range(3):
        save(Image.new("L", (10, 10), i * 50), tmp_path / "gray" / f"{i}.png")
        save(Image.new("RGB", (10, 10), (i * 50, 0, 0)), tmp_path / "colour" / f"{i}.png")
    assert load_source(tmp_path / "gray", size=6).x.shape == (3, 1, 6, 6)
    assert load_source(tmp_path / "colour", size=6).x.shape == (3, 3, 6, 6)
    assert load_source(tmp_path / "gray", size=6, channels=3).x.shape == (3, 3, 6, 6)


def test_load_source_drops_bad_files_and_fails_when_all_bad(tmp_path):
    save(Image.new("L", (8, 8)), tmp_path / "good" / "a.png")
    (tmp_path / "good" / "b.png").write_bytes(b"junk")
    assert load_source(tmp_path / "good").paths == ("a.png",)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "b.png").write_bytes(b"junk")
    with pytest.raises(DataError, match="none of the 1 images"):
        load_source(tmp_path / "bad")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_source(tmp_path / "empty")


def test_load_source_missing_and_odd_paths(tmp_path):
    with pytest.raises(DataError, match=r"no such file or folder: .*nowhere"):
        load_source(tmp_path / "nowhere")
    save(Image.new("L", (8, 8)), tmp_path / "one.png")
    with pytest.raises(DataError, match="single image"):
        load_source(tmp_path / "one.png")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="not an IDX file"):
        load_source(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="unknown Fashion-MNIST split"):
        load_source("fashion-mnist:validation")


def test_load_source_npy(tmp_path):
    np.save(tmp_path / "v.npy", np.ones((3, 4)))
    assert load_source(tmp_path / "v.npy").x.shape == (3, 4)


@needs_fashion_mnist
def test_load_source_fashion_mnist():
    test = load_source("fashion-mnist:test")
    assert test.x.shape == (10000, 1, 28, 28) and test.class_names == FASHION_MNIST_CLASSES
    small = load_source("fashion-mnist:test", size=14, channels=3)
    assert small.x.shape == (10000, 3, 14, 14) and small.x.min() >= 0.0 and small.x.max() <= 1.0


def test_array_dataset_subset_and_validation():
    dataset = ArrayDataset(
        x=np.arange(12, dtype=np.float32).reshape(4, 3),
        labels=np.array([0, 1, -1, 1]),
        class_names=("a", "b"),
        paths=("p0", "p1", "p2", "p3"),
    )
    assert len(dataset) == 4
    part = dataset.subset(np.array([3, 1]))
    assert part.paths == ("p3", "p1") and part.labels.tolist() == [1, 1] and part.x[0, 0] == 9
    assert dataset.subset(dataset.labels == 1).paths == ("p1", "p3")
    assert dataset.subset(slice(0, 2)).paths == ("p0", "p1")
    assert dataset.subset(2).paths == ("p2",)
    with pytest.raises(DataError, match="float32"):
        ArrayDataset(x=np.zeros((2, 3)), labels=np.zeros(2, np.int64))
    with pytest.raises(DataError, match="labels"):
        ArrayDataset(x=np.zeros((2, 3), np.float32), labels=np.zeros(3, np.int64))
    with pytest.raises(DataError, match="class name"):
        ArrayDataset(x=np.zeros((2, 3), np.float32), labels=np.array([0, 1]), class_names=("a",))


def test_image_file_is_a_value():
    assert FolderImage("a/b.png", "a") == FolderImage("a/b.png", "a")


# ---------------------------------------------------------------------------------------------
# The plain-PNG fast path: exactly Pillow's pixels, or None


def png_file(pixels: np.ndarray, filters, *, chunks: list[tuple[bytes, bytes]] = (), idat_parts: int = 1,
             interlace: int = 0, depth: int = 8, trailing: bytes = b"", stream_tail: bytes = b"", height: int | None = None) -> bytes:
    """A PNG of uint8 pixels (h, w) gray or (h, w, 3) RGB, each row filtered with filters[row % len]
    (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth), the zlib stream cut into idat_parts IDAT chunks."""
    bpp = 1 if pixels.ndim == 2 else 3
    rows = pixels.reshape(pixels.shape[0], -1).astype(np.int32)
    raw = bytearray()
    for y, row in enumerate(rows):
        kind = filters[y % len(filters)]
        up = rows[y - 1] if y else np.zeros_like(row)
        left = np.concatenate([np.zeros(bpp, np.int32), row[:-bpp]])
        corner = np.concatenate([np.zeros(bpp, np.int32), up[:-bpp]])
        if kind == 0:
            predicted = np.zeros_like(row)
        elif kind == 1:
            predicted = left
        elif kind == 2:
            predicted = up
        elif kind == 3:
            predicted = (left + up) // 2
        else:
            estimate = left + up - corner
            to_left, to_up, to_corner = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
            predicted = np.where((to_left <= to_up) & (to_left <= to_corner), left, np.where(to_up <= to_corner, up, corner))
        raw += bytes([kind]) + ((row - predicted) % 256).astype(np.uint8).tobytes()
    stream = zlib.compress(bytes(raw)) + stream_tail
    step = -(-len(stream) // idat_parts)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", pixels.shape[1], height or pixels.shape[0], depth, 0 if bpp == 1 else 2, 0, 0, interlace)
    body = b"".join(chunk(tag, data) for tag, data in chunks)
    idat = b"".join(chunk(b"IDAT", stream[i : i + step]) for i in range(0, len(stream), step))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + body + idat + chunk(b"IEND", b"") + trailing


@pytest.mark.parametrize("colour", [False, True])
@pytest.mark.parametrize("filters", [(0,), (1,), (2,), (3,), (4,), (4, 3, 2, 1, 0)])
def test_fast_png_path_gives_exactly_pillows_pixels(colour, filters):
    rng = np.random.default_rng(len(filters) + 10 * colour)
    pixels = rng.integers(0, 256, (12, 12, 3) if colour else (12, 12), dtype=np.uint8)
    pixels[:, :6] //= 7  # smooth areas too, where the predictors matter
    data = png_file(pixels, filters, idat_parts=1 + colour * 2, chunks=[(b"gAMA", struct.pack(">I", 45455))])
    for channels in (1, 3):
        fast = decode_plain_png(data, size=12, channels=channels)
        assert fast is not None
        np.testing.assert_array_equal(fast, decode_image(data, size=12, channels=channels))
    expected = pixels.transpose(2, 0, 1) if colour else pixels[None]
    np.testing.assert_array_equal(decode_plain_png(data, size=12, channels=3 if colour else 1), expected / np.float32(255))


def test_fast_png_path_on_real_files(tmp_path):
    """PNGs as Pillow (and the Fashion-MNIST export) write them take the fast path, same pixels."""
    rng = np.random.default_rng(3)
    for i, mode in enumerate(["L", "RGB", "L", "RGB"]):
        shape = (28, 28) if mode == "L" else (28, 28, 3)
        path = save(Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8) // (1 + i), mode), tmp_path / f"{i}.png")
        data = path.read_bytes()
        for channels in (1, 3):
            out = np.empty((channels, 28, 28), np.float32)
            assert decode_plain_png_into(data, out) == (1 if mode == "L" else 3)
            np.testing.assert_array_equal(out, decode_image(path, size=28, channels=channels))


def test_fast_png_path_leaves_everything_unusual_to_pillow():
    pixels = np.random.default_rng(4).integers(0, 256, (8, 8), dtype=np.uint8)
    plain = png_file(pixels, (4,))
    assert decode_plain_png(plain, size=8, channels=1) is not None
    unusual = {
        "other size": (plain, 16),
        "interlaced": (png_file(pixels, (0,), interlace=1), 8),
        "transparency": (png_file(pixels, (0,), chunks=[(b"tRNS", b"\x00\x00")]), 8),
        "text (may hold an orientation)": (png_file(pixels, (0,), chunks=[(b"tEXt", b"Comment\x00hi")]), 8),
        "bytes after IEND": (png_file(pixels, (0,), trailing=b"junk"), 8),
        "damaged CRC": (plain[:-5] + bytes([plain[-5] ^ 1]) + plain[-4:], 8),
        "cut short": (plain[: len(plain) - 20], 8),
        "not a PNG": (b"GIF89a" + plain, 8),
        "bytes after the zlib stream": (png_file(pixels, (0,), stream_tail=b"more"), 8),
        "rows beyond the header's height": (png_file(np.vstack([pixels, pixels[:1]]), (0,), height=8)[:], 8),
        "16-bit": (png_file(pixels, (0,), depth=16), 8),
    }
    for name, (data, size) in unusual.items():
        assert decode_plain_png(data, size=size, channels=1) is None, name


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_damaged_files_decode_the_same_through_the_reader(fmt):
    """decode_into (fast path first) and decode_image agree on every damaged file: same pixels or
    the same refusal."""
    rng = np.random.default_rng(6)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(buffer, fmt)
    original = buffer.getvalue()
    for _ in range(60):
        damaged = bytearray(original[: rng.integers(1, len(original) + 1)])
        for position in rng.integers(0, len(damaged), size=rng.integers(0, 4)):
            damaged[position] = rng.integers(0, 256)
        out = np.empty((1, 16, 16), np.float32)
        try:
            expected = decode_image(bytes(damaged), size=16, channels=1)
        except ImageDecodeError as error:
            with pytest.raises(ImageDecodeError) as caught:
                decode_into(bytes(damaged), out)
            assert caught.value.reason == error.reason
            continue
        decode_into(bytes(damaged), out)
        np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize(
    "name, make, options",
    [
        ("gray.png", lambda: halves(20, 20), {}),
        ("gray-resized.png", lambda: halves(40, 30), {}),
        ("gray-alpha.png", lambda: halves(20, 20, mode="LA", left=(0, 0), right=(DARK, 200)), {}),
        ("deep.png", lambda: Image.fromarray(np.asarray(halves(20, 20), dtype=np.uint16) * 257), {}),
        ("bits.png", lambda: halves(20, 20).convert("1"), {}),
        ("gray.jpg", lambda: halves(64, 48), {"quality": 90}),
    ],
)
def test_grayscale_files_decoded_with_three_channels_hold_the_one_channel_pixels(tmp_path, name, make, options):
    """What probe_channels relies on: a grayscale file decoded as RGB has its gray pixels in every channel."""
    path = save(make(), tmp_path / name, **options)
    colour, found = decode_image_with_channels(path, size=16, channels=3)
    assert found == 1
    gray = decode_image(path, size=16, channels=1)
    for channel in range(3):
        np.testing.assert_array_equal(colour[channel], gray[0])


# ---------------------------------------------------------------------------------------------
# What a folder can hold (issue 14): recorded with a reason, never a hang


@pytest.fixture
def alarm():
    """Fail a test that blocks (a FIFO opened for reading waits for a writer) instead of hanging."""
    signal.signal(signal.SIGALRM, lambda *_: pytest.fail("blocked"))
    signal.alarm(30)
    yield
    signal.alarm(0)


def test_scan_folder_records_what_is_not_an_image_file(tmp_path, alarm):
    root = tmp_path / "root"
    save(halves(), root / "b_real" / "1.png")
    save(halves(), root / "album.png" / "2.png")
    os.mkfifo(root / "pipe.png")
    os.symlink(root / "missing.png", root / "dangling.png")
    os.symlink("loop.png", root / "loop.png")
    os.symlink(root / "b_real", root / "a_link")  # sorts first, yet the real folder keeps its name
    os.symlink(root, root / "b_real" / "up")
    os.mkfifo(root / "not_an_image.fifo")  # not named like an image: not looked at
    bad_name = os.fsdecode(b"bad\xff.png")
    save(halves(), root / os.fsdecode(b"x\xff") / bad_name)
    listing = scan_folder(root)
    assert [f.relpath for f in listing.files] == [
        "album.png/2.png",
        "b_real/1.png",
        os.fsdecode(b"x\xff") + "/" + bad_name,
    ]
    assert listing.files[2].label == os.fsdecode(b"x\xff")
    assert all(f.size == (root / f.relpath).stat().st_size for f in listing.files)
    assert {s.relpath: s.reason for s in listing.skipped} == {
        "a_link": "links to a folder listed already (b_real)",
        "album.png": "is a folder, not an image file (its images are indexed)",
        "b_real/up": "links to a folder listed already (the indexed folder itself)",
        "dangling.png": "broken symbolic link (its target is missing)",
        "loop.png": "symbolic link loop",
        "pipe.png": "not a regular file (a FIFO)",
    }
    assert listing.unlisted == []


def test_reader_refuses_what_is_not_a_regular_file_at_once(tmp_path, alarm):
    """A FIFO put in an image's place after the listing: refused on open, never waited on."""
    save(halves(), tmp_path / "a.png")
    listed = list_images(tmp_path)
    (tmp_path / "a.png").unlink()
    os.mkfifo(tmp_path / "a.png")
    (tmp_path / "b.png").mkdir()
    shard = Shard(os.fspath(tmp_path), (listed[0], FolderImage("b.png", None)))
    (batch,) = read_shard(shard, size=8, channels=1)
    assert len(batch) == 0
    assert [(s.relpath, s.reason) for s in batch.skipped] == [("a.png", "not a regular file (a FIFO)"), ("b.png", "is a directory")]
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        decode_image(tmp_path / "a.png", size=8, channels=1)
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        image_channels_of(tmp_path / "a.png")


def test_files_over_the_size_cap_are_refused_unread(tmp_path):
    save(halves(), tmp_path / "small.png")
    with open(tmp_path / "huge.png", "wb") as file:
        file.truncate(6 << 30)  # 6 GiB, sparse: nothing is written, and nothing may be read
    files = list_images(tmp_path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    (batch,) = read_shard(make_shards(tmp_path, files, shard_size=10)[0], size=8, channels=1)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # kilobytes
    assert [f.relpath for f in batch.files] == ["small.png"]
    assert [(s.relpath, s.reason, s.size) for s in batch.skipped] == [
        ("huge.png", "file too large: 6144.0 MiB (the limit is 64.0 MiB; see --max-file-size)", 6 << 30)
    ]
    small = (tmp_path / "small.png").stat().st_size
    (batch,) = read_shard(make_shards(tmp_path, files, shard_size=10)[0], size=8, channels=1, max_file_size=small - 1)
    assert [s.reason for s in batch.skipped] == [
        f"file too large: 6144.0 MiB (the limit is {small - 1} bytes; see --max-file-size)",
        f"file too large: {small} bytes (the limit is {small - 1} bytes; see --max-file-size)",
    ]
    with pytest.raises(ConfigError, match="file size limit"):
        list(read_shard(make_shards(tmp_path, files, shard_size=10)[0], size=8, channels=1, max_file_size=0))


def test_content_hash_of_a_large_file_is_streamed(tmp_path):
    path = tmp_path / "big.png"
    with open(path, "wb") as file:
        file.truncate(300 << 20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    digest = hash_file(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # kilobytes, far below 300 MiB
    expected = hashlib.blake2b(digest_size=16)
    for _ in range(300):
        expected.update(bytes(1 << 20))
    assert digest == expected.hexdigest()
    assert hash_file(tmp_path / "big.png") == digest and content_hash(b"abc") == hashlib.blake2b(b"abc", digest_size=16).hexdigest()


def test_a_folder_that_cannot_be_listed_is_named(tmp_path):
    save(halves(), tmp_path / "open" / "1.png")
    save(halves(), tmp_path / "closed" / "2.png")
    script = (
        "import json, sys\n"
        "from hashae.folders import scan_folder\n"
        "listing = scan_folder(sys.argv[1])\n"
        "print(json.dumps([[f.relpath for f in listing.files], [[s.relpath, s.reason] for s in listing.skipped], listing.unlisted]))\n"
    )
    with unlistable(tmp_path / "closed") as run_as:
        result = subprocess.run(run_as([sys.executable, "-c", script, str(tmp_path)]), capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    files, skipped, unlisted = json.loads(result.stdout)
    assert files == ["open/1.png"]
    assert skipped == [["closed", "cannot list the folder (Permission denied)"]]
    assert unlisted == ["closed"]
