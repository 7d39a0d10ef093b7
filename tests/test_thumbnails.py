"""Real thumbnails over real HTTP, on a folder of colour photos of mixed sizes and formats: made from
the original file (colours and proportions kept, never enlarged, bounded), HEAD without a body, the
original itself, and the guards (a link out of the indexed folder, a file gone since indexing)."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image
from serving import Server, cli

# name -> (width, height, colour); every picture a flat colour with a darker square, so a
# thumbnail's mean colour says whether it came from this file
PHOTOS = {f"photo{i:02d}.{ext}": (w, h, colour) for i, (ext, w, h, colour) in enumerate(
    [("jpg", 640, 400, (200, 40, 40)), ("png", 300, 500, (40, 160, 60)), ("jpeg", 1200, 900, (30, 60, 210)), ("webp", 90, 60, (220, 200, 30))] * 6
)}


def photo(width: int, height: int, colour: tuple[int, int, int], seed: int) -> Image.Image:
    picture = Image.new("RGB", (width, height), colour)
    rng = np.random.default_rng(seed)
    x, y = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
    picture.paste(tuple(c // 3 for c in colour), (x, y, x + width // 3, y + height // 3))
    return picture


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    images, store = root / "images", root / "store"
    images.mkdir()
    for seed, (name, (width, height, colour)) in enumerate(PHOTOS.items()):
        photo(width, height, colour, seed).save(images / name)
    photo(50, 50, (0, 0, 0), 99).save(root / "outside.png")
    (images / "leaves.png").symlink_to(root / "outside.png")  # a link out of the indexed folder
    cli("index", images, "--store", store, "--epochs", 1, "--bits", 16, "-q")
    with Server(store) as running, httpx.Client(base_url=running.url, timeout=30) as client:
        items = {item["path"]: item["id"] for item in client.get("/api/items", params={"limit": 200}).json()["items"]}
        yield images, client, items


def thumbnail(client, item_id: int, **params) -> tuple[httpx.Response, Image.Image]:
    response = client.get(f"/api/items/{item_id}/thumbnail", params=params)
    assert response.status_code == 200, response.text
    return response, Image.open(io.BytesIO(response.content))


def test_thumbnails_are_the_originals_shrunk(photos):
    _, client, items = photos
    for name, (width, height, colour) in PHOTOS.items():
        response, picture = thumbnail(client, items[name])
        scale = min(1.0, 256 / max(width, height))
        assert abs(picture.size[0] - width * scale) <= 1 and abs(picture.size[1] - height * scale) <= 1, name
        assert picture.mode == "RGB"  # the file's colours, not the store's grey model input
        expected = np.asarray(photo(width, height, colour, list(PHOTOS).index(name)), dtype=np.float32).mean(axis=(0, 1))
        assert np.abs(np.asarray(picture, dtype=np.float32).mean(axis=(0, 1)) - expected).max() < 8, name
        kind = "image/jpeg" if name.endswith(("jpg", "jpeg")) else "image/png"
        assert response.headers["content-type"] == kind
    _, small = thumbnail(client, items["photo00.jpg"], size=64)
    assert small.size == (64, 40)
    _, large = thumbnail(client, items["photo02.jpeg"], size=1024)
    assert large.size == (1024, 768)  # bounded by the asked side
    assert client.get(f"/api/items/{items['photo02.jpeg']}/thumbnail", params={"size": 4096}).status_code == 400


def test_head_answers_without_a_body(photos):
    _, client, items = photos
    for route in ("thumbnail", "original"):
        head = client.head(f"/api/items/{items['photo00.jpg']}/{route}")
        assert head.status_code == 200 and head.content == b"" and head.headers["content-type"] == "image/jpeg"


def test_the_original_is_the_file(photos):
    images, client, items = photos
    response = client.get(f"/api/items/{items['photo01.png']}/original")
    assert response.status_code == 200 and response.content == (images / "photo01.png").read_bytes()


def test_a_link_out_of_the_folder_is_never_served(photos):
    _, client, items = photos
    if "leaves.png" not in items:
        pytest.skip("the indexer did not catalogue the link")
    for route in ("thumbnail", "original"):
        response = client.get(f"/api/items/{items['leaves.png']}/{route}")
        assert response.status_code == 404 and "outside the indexed folder" in response.json()["detail"]


def test_a_file_gone_since_indexing_is_410(photos):
    images, client, items = photos
    (images / "photo23.webp").unlink()
    for route in ("thumbnail?size=100", "original"):  # a size not asked before: not in the cache
        response = client.get(f"/api/items/{items['photo23.webp']}/{route}")
        assert response.status_code == 410 and "hashae index" in response.json()["detail"]
