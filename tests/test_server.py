"""`hashae serve` over real HTTP on 127.0.0.1: every endpoint (near-duplicate groups included), bad
and oversized uploads, the Host check, the token, unknown ids, and queries that keep succeeding
while `hashae index` updates the store in another process."""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from serving import Server, cli, copy_store, small_store, wait_for
from typer.testing import CliRunner

from hashae.cli.main import app
from hashae.index.backends import open_store
from hashae.index.duplicates import Threshold, duplicates_document
from hashae.index.server.engines import DUPLICATE_THRESHOLDS_KEPT, EngineHolder

CLI_RESULT_KEYS = {"rank", "id", "path", "label", "distance"}
UPLOAD_LIMIT_MB = 0.05  # the guarded server's body cap: 52,428 bytes


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return small_store(tmp_path_factory)


@pytest.fixture(scope="module")
def server(store):
    _, store_dir = store
    with Server(store_dir, "--max-upload-mb", str(UPLOAD_LIMIT_MB)) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


@pytest.fixture(scope="module")
def an_image(store) -> bytes:
    images, _ = store
    return sorted(images.rglob("*.png"))[0].read_bytes()


def ids_of(client) -> list[int]:
    return [item["id"] for item in client.get("/api/items", params={"limit": 200, "seed": 0}).json()["items"]]


# -------------------------------------------------------------------------------- endpoints
def test_health_and_stats(client):
    health = client.get("/api/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    stats = client.get("/api/stats").json()
    assert stats["items"] == 200 and stats["generation"] == health.json()["generation"] >= 1
    assert stats["bits"] % 8 == 0 and stats["image_size"] == 28 and stats["channels"] == 1
    assert sum(stats["labels"].values()) == 200
    assert stats["models"]["hashing"]["kind"] == "hashing"
    assert stats["modes"] == ["hamming", "latent", "hybrid"] and stats["ties"] == ["latent", "id"]


def test_items_sample_and_metadata(client):
    sample = client.get("/api/items", params={"limit": 7, "seed": 3}).json()
    assert sample["total"] == 200 and len(sample["items"]) == 7
    assert sample == client.get("/api/items", params={"limit": 7, "seed": 3}).json()  # seeded
    label = sample["items"][0]["label"]
    only = client.get("/api/items", params={"limit": 50, "label": label}).json()
    assert only["items"] and {item["label"] for item in only["items"]} == {label}
    item_id = sample["items"][0]["id"]
    item = client.get(f"/api/items/{item_id}").json()
    assert item["id"] == item_id and item["path"].endswith(".png") and set(item["code"]) <= {"0", "1"}


def test_thumbnail_is_the_catalogued_picture(client, store):
    images, _ = store
    item = client.get("/api/items", params={"limit": 1, "seed": 1}).json()["items"][0]
    response = client.get(f"/api/items/{item['id']}/thumbnail")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(response.content))
    assert picture.size == (28, 28)
    original = Image.open(images / item["path"]).convert("L")
    assert (np.asarray(picture.convert("L")) == np.asarray(original)).all()
    never_enlarged = client.get(f"/api/items/{item['id']}/thumbnail", params={"size": 64})
    assert Image.open(io.BytesIO(never_enlarged.content)).size == (28, 28)
    smaller = client.get(f"/api/items/{item['id']}/thumbnail", params={"size": 16})
    assert Image.open(io.BytesIO(smaller.content)).size == (16, 16)
    assert client.get(f"/api/items/{item['id']}/thumbnail", params={"size": 100000}).status_code == 400
    head = client.head(f"/api/items/{item['id']}/thumbnail")
    assert head.status_code == 200 and head.content == b"" and head.headers["content-type"] == "image/png"
    original = client.get(f"/api/items/{item['id']}/original")
    assert original.status_code == 200 and original.content == (images / item["path"]).read_bytes()
    assert original.headers["content-type"] == "image/png" and original.headers["content-disposition"].startswith("inline")
    assert client.head(f"/api/items/{item['id']}/original").status_code == 200


def test_query_by_id_is_the_cli_answer_plus_codes(client, store):
    _, store_dir = store
    item_id = ids_of(client)[5]
    cases = ({"k": 7}, {"k": 7, "ties": "id"}, {"k": 5, "mode": "latent"}, {"k": 5, "mode": "hybrid"}, {"radius": 2, "k": 50}, {"radius": 3, "ties": "id"})
    for params in cases:
        answer = client.get("/api/query", params={"id": item_id, **params}).json()
        args = ["query", "--id", item_id, "--store", store_dir, "--json"]
        for key, value in params.items():
            args += ["-k" if key == "k" else f"--{key}", value]
        line = json.loads(CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False).stdout)
        assert set(line) <= set(answer) and answer["generation"] >= 1
        assert {k: answer[k] for k in line if k != "results"} == {k: v for k, v in line.items() if k != "results"}
        assert [{k: r[k] for k in CLI_RESULT_KEYS} for r in answer["results"]] == line["results"]
        for result in answer["results"]:
            assert len(result["code"]) == len(answer["code"])
            if answer["mode"] == "hamming":  # the distance is the number of differing bits
                assert sum(a != b for a, b in zip(result["code"], answer["code"])) == result["distance"]
    assert client.get("/api/query", params={"id": item_id}).json()["results"][0]["id"] == item_id
    assert client.get("/api/query", params={"id": item_id}).json()["ties"] == "latent"  # the default


def test_query_by_upload(client, store, an_image):
    images, _ = store
    multipart = client.post("/api/query", params={"k": 4}, files={"image": ("shoe.png", an_image, "image/png")})
    assert multipart.status_code == 200, multipart.text
    answer = multipart.json()
    assert answer["query"] == "shoe.png" and len(answer["results"]) == 4 and answer["results"][0]["distance"] == 0
    own = sorted(images.rglob("*.png"))[0].relative_to(images).as_posix()
    assert answer["results"][0]["path"] == own  # its own item leads the items that share its code
    raw = client.post("/api/query", params={"k": 4, "mode": "hybrid"}, content=an_image)
    assert raw.status_code == 200 and raw.json()["mode"] == "hybrid"


@pytest.mark.parametrize(
    ("params", "cli_args"),
    [
        ({}, []),  # the calibrated threshold
        ({"radius": 4, "codes_only": "true"}, ["--codes-only", "--threshold", "4"]),
        ({"radius": 3, "latent_max": 0.05}, ["--threshold", "3", "--latent-max", "0.05"]),
    ],
)
def test_duplicates_are_the_cli_groups_plus_labels(client, store, params, cli_args):
    _, store_dir = store
    answer = client.get("/api/duplicates", params=params).json()
    line = json.loads(cli("duplicates", "--store", store_dir, "--json", "-q", *cli_args))
    line.pop("seconds")
    labels = {item["id"]: item["label"] for item in client.get("/api/items", params={"limit": 200}).json()["items"]}
    assert answer.pop("total_groups") == len(line["groups"]) and answer["generation"] >= 1
    for member in (m for group in answer["groups"] for m in group["members"]):
        assert member.pop("label") == labels[member["id"]]
    assert answer == line


def test_duplicates_limit_keeps_the_first_groups(client):
    everything = client.get("/api/duplicates", params={"radius": 4, "codes_only": "true"}).json()
    assert everything["total_groups"] >= 3  # these 200 distinct images share codes within 4 bits
    first = client.get("/api/duplicates", params={"radius": 4, "codes_only": "true", "limit": 2}).json()
    assert first["groups"] == everything["groups"][:2] and first["total_groups"] == everything["total_groups"]
    assert first["grouped_items"] == everything["grouped_items"]  # the whole answer's count, not the page's


def test_duplicates_members_keeps_the_anchor_and_the_nearest(client):
    (whole,) = client.get("/api/duplicates", params={"radius": 32, "codes_only": "true", "members": 1000}).json()["groups"]
    assert whole["size"] == len(whole["members"]) == 200  # the whole code length: one group of every item
    (capped,) = client.get("/api/duplicates", params={"radius": 32, "codes_only": "true", "members": 5}).json()["groups"]
    assert capped["size"] == 200 and capped["members"] == whole["members"][:5]
    assert capped["members"][0]["id"] == capped["anchor"]
    assert len(client.get("/api/duplicates", params={"radius": 32, "codes_only": "true"}).json()["groups"][0]["members"]) == 50  # the default


def test_duplicate_documents_are_kept_per_generation_and_threshold(store):
    _, store_dir = store
    with open_store(store_dir) as opened:
        served = EngineHolder(opened).served
        loose = Threshold(4, None)
        first = served.duplicates(loose)
        assert first == duplicates_document(served.engine.view, threshold=loose)
        assert served.duplicates(loose) is first  # computed once
        for radius in range(DUPLICATE_THRESHOLDS_KEPT):  # newer thresholds push the oldest out
            served.duplicates(Threshold(radius, None))
        again = served.duplicates(loose)
        assert again is not first and again == first


def test_concurrent_asks_for_one_threshold_compute_it_once_and_a_failure_is_not_kept(store, monkeypatch):
    import threading
    import time

    from hashae.index.server import engines

    calls, real = [], engines.duplicates_document

    def slow_document(view, *, threshold):
        calls.append(threshold)
        time.sleep(1.0)  # the others ask while the first computes
        if len(calls) == 1 and threshold.radius == 1:
            raise RuntimeError("a failed computation")
        return real(view, threshold=threshold)

    monkeypatch.setattr(engines, "duplicates_document", slow_document)
    _, store_dir = store
    with open_store(store_dir) as opened:
        served = EngineHolder(opened).served
        answers, errors = [], []
        together = threading.Barrier(4)

        def ask(threshold):
            together.wait()  # the four ask at once
            try:
                answers.append(served.duplicates(threshold))
            except RuntimeError as err:
                errors.append(str(err))

        for threshold, expected_errors in ((Threshold(1, None), 4), (Threshold(2, None), 0)):
            threads = [threading.Thread(target=ask, args=(threshold,)) for _ in range(4)]
            [t.start() for t in threads]
            [t.join() for t in threads]
            assert len(errors) == expected_errors and calls.count(threshold) == 1
            errors.clear()
        assert len(answers) == 4 and all(a is answers[0] for a in answers)
        assert served.duplicates(Threshold(1, None)) == real(served.engine.view, threshold=Threshold(1, None))  # tried again
        assert calls.count(Threshold(1, None)) == 2


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"radius": 99}, "between 0 and"),
        ({"radius": -1}, "radius"),
        ({"radius": "near"}, "radius"),
        ({"latent_max": -0.5}, "latent_max"),
        ({"codes_only": "true", "latent_max": 0.1}, "either codes_only or latent_max"),
        ({"limit": 0}, "limit"),
        ({"limit": 100000}, "limit"),
        ({"members": 0}, "members"),
    ],
)
def test_bad_duplicates_parameters_get_400(client, params, words):
    response = client.get("/api/duplicates", params=params)
    assert response.status_code == 400 and words in response.json()["detail"], response.text
    assert "\n" not in response.json()["detail"]


def test_openapi_describes_the_api(client):
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/api/health", "/api/stats", "/api/items", "/api/items/{item_id}", "/api/items/{item_id}/thumbnail", "/api/items/{item_id}/original", "/api/query", "/api/duplicates"):
        assert path in paths
    assert set(paths["/api/query"]) == {"get", "post"}


def test_docs_page_lists_the_api_without_a_cdn(client):
    page = client.get("/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    for path in client.get("/openapi.json").json()["paths"]:
        assert f"<code>{path}</code>" in page.text
    assert "<script" not in page.text and "http" not in page.text  # self-contained: nothing fetched
    assert "Longest side in pixels." in page.text  # parameter descriptions shown
    assert "Group by Hamming distance alone" in page.text  # the near-duplicates route's parameters too


def test_page_is_served(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "hashae" in page.text and "http://" not in page.text.replace("http://www.w3.org", "")  # no CDN


# ------------------------------------------------------------------------------ bad requests
@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("notes.txt", b"these are not pixels\n", "not an image"),
        ("cut.png", None, "truncated"),
        ("empty.png", b"", "empty"),
    ],
)
def test_bad_uploads_get_400_with_the_reason(client, an_image, name, data, reason):
    data = an_image[: len(an_image) // 2] if data is None else data
    response = client.post("/api/query", files={"image": (name, data, "application/octet-stream")})
    assert response.status_code == 400 and reason in response.json()["detail"], response.text


def test_upload_without_the_image_field(client):
    response = client.post("/api/query", files={"picture": ("a.png", b"x", "image/png")})
    assert response.status_code == 400 and "'image'" in response.json()["detail"]


def test_oversized_bodies_get_413(client):
    big = b"\0" * int(UPLOAD_LIMIT_MB * 1024 * 1024 + 1000)
    declared = client.post("/api/query", files={"image": ("big.png", big, "image/png")})
    assert declared.status_code == 413 and "too large" in declared.json()["detail"]

    def chunks():  # no Content-Length: the cap applies to the streamed body
        for _ in range(100):
            yield b"\0" * 4096

    streamed = client.post("/api/query", content=chunks())
    assert streamed.status_code == 413 and "too large" in streamed.json()["detail"]


@pytest.mark.parametrize("host", ["evil.example.com", "attacker.test:80", "127.0.0.2"])
def test_foreign_host_headers_are_refused(client, host):
    response = client.get("/api/health", headers={"Host": host})
    assert response.status_code == 421 and "--allow-host" in response.json()["detail"]


def test_loopback_host_names_are_accepted(client, server):
    port = server.url.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "LOCALHOST", f"[::1]:{port}"):
        assert client.get("/api/health", headers={"Host": host}).status_code == 200


def test_unknown_ids_get_404(client):
    for path in ("/api/items/987654", "/api/items/987654/thumbnail", "/api/items/987654/original", "/api/query?id=987654"):
        response = client.get(path)
        assert response.status_code == 404 and "987654" in response.json()["detail"], path


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"mode": "cosine"}, "unknown mode"),
        ({"k": 0}, "k"),
        ({"radius": 999}, "radius"),
        ({"radius": 1, "mode": "latent"}, "hamming"),
        ({"k": "many"}, "k"),
        ({"ties": "random"}, "tie order"),
    ],
)
def test_bad_query_parameters_get_400(client, params, words):
    item_id = ids_of(client)[0]
    response = client.get("/api/query", params={"id": item_id, **params})
    assert response.status_code == 400 and words in response.json()["detail"], response.text


# ------------------------------------------------------------------------------------- token
def test_token_is_required_when_configured(store):
    _, store_dir = store
    with Server(store_dir, "--token", "s3cret") as guarded, httpx.Client(base_url=guarded.url, timeout=30) as http:
        assert "token required" in guarded.log()
        assert http.get("/api/health").status_code == 200  # liveness stays open
        for path in ("/api/stats", "/", "/openapi.json", "/api/items"):
            assert http.get(path).status_code == 401, path
        assert http.get("/api/stats", headers={"Authorization": "Bearer nope"}).status_code == 401
        assert http.get("/api/stats", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert http.get("/api/stats", params={"token": "s3cret"}).status_code == 200


def test_refuses_a_public_address_without_a_token(store):
    _, store_dir = store
    result = CliRunner().invoke(app, ["serve", "--store", str(store_dir), "--host", "0.0.0.0"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "--token" in result.stderr and len(result.stderr.splitlines()) == 1


def test_missing_store_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["serve", "--store", str(tmp_path / "none")])
    assert result.exit_code == 1 and "no hashae store" in result.stderr


# -------------------------------------------------------------------- serving while indexing
def test_queries_keep_succeeding_while_the_store_is_reindexed(store, tmp_path):
    images, store_dir = copy_store(*store, tmp_path)
    with Server(store_dir, "--refresh", "0.2") as running, httpx.Client(base_url=running.url, timeout=60) as http:
        before = http.get("/api/health").json()["generation"]
        ids = ids_of(http)
        removed = sorted(images.rglob("*.png"))[:5]
        removed_paths = {p.relative_to(images).as_posix() for p in removed}
        keep = [i for i in ids if http.get(f"/api/items/{i}").json()["path"] not in removed_paths]
        cli("datasets", "export", "fashion-mnist", images, "--limit", 260, "-q")  # 60 new images
        for path in removed:
            path.unlink()

        statuses: list[int] = []
        errors: list[str] = []
        answers: list[tuple[int, set[int]]] = []  # (generation, result ids) in the order answered
        stop = threading.Event()

        def fire() -> None:
            rng = random.Random(0)
            while not stop.is_set():
                mode = rng.choice(["hamming", "latent", "hybrid"])
                response = http.get("/api/query", params={"id": rng.choice(keep), "k": 10, "mode": mode})
                statuses.append(response.status_code)
                if response.status_code != 200:
                    errors.append(response.text)
                else:
                    answer = response.json()
                    answers.append((answer["generation"], {r["id"] for r in answer["results"]}))

        shooter = threading.Thread(target=fire)
        shooter.start()
        try:
            run = subprocess.run(
                [sys.executable, "-m", "hashae.cli.main", "index", str(images), "--store", str(store_dir), "-q"],
                capture_output=True, text=True, timeout=600,
            )
            moved = wait_for(lambda: http.get("/api/health").json()["generation"] > before, timeout=30)
            time.sleep(0.5)  # a few more queries on the new generation
        finally:
            stop.set()
            shooter.join()
        assert run.returncode == 0, run.stderr
        assert moved, running.log()
        assert len(statuses) >= 10 and not errors, errors[:3]
        stats = http.get("/api/stats").json()
        assert stats["items"] == 255 and stats["refreshes"] >= 1
        opened = open_store(store_dir)
        try:
            view = opened.snapshot()
            after, final_ids = view.gen, set(view.item_ids().tolist())
            new_id = max(final_ids)
        finally:
            opened.close()
        # every answer came whole from one generation: the old one's items, or the new one's
        generations = [gen for gen, _ in answers]
        assert generations == sorted(generations) and set(generations) <= {before, after}
        for gen, found in answers:
            assert found <= (set(ids) if gen == before else final_ids)
        assert generations[-1] == after
        assert new_id > max(ids) and http.get("/api/query", params={"id": new_id}).status_code == 200
        gone = sorted(set(ids) - set(keep))[0]
        assert http.get(f"/api/items/{gone}").status_code == 404
