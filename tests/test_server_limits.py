"""What a client can make the server spend, and what it tells a client without the token (issue 14,
points 2, 9 and 14), over real HTTP: uploads capped by pixels (413 before decoding) and by
concurrent decodes (429), bad sample seeds (400), a chunked multipart body over the cap (413 with
its reason), ?token= kept out of the access log, /api/health minimal without the token."""

from __future__ import annotations

import io
import threading
import time

import httpx
import pytest
from fastapi import HTTPException
from PIL import Image
from serving import Server, small_store, wait_for

from conftest import png_declaring_size
from hashae.index.server.settings import DEFAULT_MAX_UPLOAD_PIXELS
from hashae.index.server.uploads import UploadDecoder

TOKEN = "s3cret-token"
UPLOAD_LIMIT_MB = 1.0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    _, store_dir = small_store(tmp_path_factory)
    with Server(store_dir, "--max-upload-mb", str(UPLOAD_LIMIT_MB), "--token", TOKEN, "--access-log") as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        yield http


def png_of(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 90).save(buffer, "PNG")
    return buffer.getvalue()


def test_an_image_declaring_too_many_pixels_gets_413_before_decoding(client):
    """The issue's 9400 x 9400 PNG (88 Mpx, under Pillow's 89.5 Mpx) is refused from its header."""
    started = time.perf_counter()
    answer = client.post("/api/query", files={"image": ("big.png", png_declaring_size(9400, 9400), "image/png")})
    assert answer.status_code == 413, answer.text
    assert "9400x9400" in answer.json()["detail"] and f"{DEFAULT_MAX_UPLOAD_PIXELS:,}" in answer.json()["detail"]
    assert time.perf_counter() - started < 2.0
    real = png_of(5000, 5000)  # a real 25 Mpx image, 60 KB: refused as well
    assert client.post("/api/query", content=real).status_code == 413
    fine = client.post("/api/query", content=png_of(4000, 3000), params={"k": 3})  # a 12 Mpx photo is decoded
    assert fine.status_code == 200 and len(fine.json()["results"]) == 3, fine.text


def test_decodes_beyond_the_limit_wait_then_get_429() -> None:
    decoder = UploadDecoder(max_pixels=10_000, max_concurrent=2)
    image = png_of(20, 20)
    assert decoder.decode(image, size=28, channels=1).shape == (1, 28, 28)
    decoder._slots.acquire(), decoder._slots.acquire()  # two decodes in flight
    import hashae.index.server.uploads as uploads

    wait, uploads.DECODE_WAIT_SECONDS = uploads.DECODE_WAIT_SECONDS, 0.1
    try:
        with pytest.raises(HTTPException) as caught:
            decoder.decode(image, size=28, channels=1)
        assert caught.value.status_code == 429 and "try again" in caught.value.detail
        decoder._slots.release()
        assert decoder.decode(image, size=28, channels=1).shape == (1, 28, 28)  # a slot freed: decoded
    finally:
        uploads.DECODE_WAIT_SECONDS = wait
    with pytest.raises(HTTPException) as caught:
        decoder.decode(png_of(101, 100), size=28, channels=1)
    assert caught.value.status_code == 413


def test_concurrent_big_uploads_stay_bounded(client):
    """Eight clients at once with 12 Mpx images: every answer a 200 or a 429 with a reason."""
    answers: list[httpx.Response] = []

    def one() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=60, headers=dict(client.headers)) as http:
            answers.append(http.post("/api/query", content=png_of(4000, 3000)))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 8
    assert all(a.status_code == 200 or (a.status_code == 429 and a.json()["detail"]) for a in answers), [a.text for a in answers]


def test_a_negative_seed_is_a_400_with_a_reason(client):
    answer = client.get("/api/items", params={"seed": -1})
    assert answer.status_code == 400 and "seed" in answer.json()["detail"], answer.text
    assert client.get("/api/items", params={"seed": 2**40}).status_code == 200


def test_a_chunked_multipart_upload_over_the_cap_gets_413_with_its_reason(client):
    boundary = "hashaeboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode()  # fmt: skip

    def chunks():  # no Content-Length: the cap applies while the form is parsed
        yield head
        for _ in range(40):
            yield b"\0" * 65536
        yield f"\r\n--{boundary}--\r\n".encode()

    answer = client.post("/api/query", content=chunks(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert answer.status_code == 413, answer.text
    assert "too large" in answer.json()["detail"]


def test_health_without_the_token_says_only_ok(server, client):
    bare = httpx.get(f"{server.url}/api/health", timeout=30)
    assert bare.status_code == 200 and bare.json() == {"status": "ok"}
    full = client.get("/api/health").json()
    assert full["status"] == "ok" and full["items"] > 0 and "generation" in full


def test_the_access_log_never_holds_the_token(server):
    answer = httpx.get(f"{server.url}/api/stats", params={"token": TOKEN, "x": "1"}, timeout=30)
    assert answer.status_code == 200
    assert wait_for(lambda: "/api/stats?token=***" in server.log(), timeout=10), server.log()[-2000:]
    assert TOKEN not in server.log()


def test_a_fifo_in_place_of_an_indexed_file_never_pins_a_thread(tmp_path_factory, tmp_path):
    """Point 10 on the server side: the thumbnail and original of an item whose file became a FIFO
    answer at once (the file is not a regular file any more), and the server keeps answering."""
    import os

    from serving import cli, copy_store

    images, store = copy_store(*small_store(tmp_path_factory), tmp_path)
    cli("index", images, "--store", store, "--repoint", "-q")  # serve files from the copy
    with Server(store) as running, httpx.Client(base_url=running.url, timeout=20) as http:
        item = http.get("/api/items", params={"limit": 1, "seed": 0}).json()["items"][0]
        source = images / item["path"]
        source.unlink()
        os.mkfifo(source)
        for endpoint in ("thumbnail", "original"):
            started = time.perf_counter()
            answer = http.get(f"/api/items/{item['id']}/{endpoint}")
            if endpoint == "original":  # nothing to send: a reason
                assert 400 <= answer.status_code < 500 and answer.json()["detail"], answer.text
            else:  # a picture (the server may keep one made before) or a reason, at once
                assert answer.status_code == 200 or (400 <= answer.status_code < 500 and answer.json()["detail"]), answer.text
            assert time.perf_counter() - started < 5
        assert http.get("/api/health").status_code == 200
