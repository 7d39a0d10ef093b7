"""Near-duplicates through every front door on a store that holds copies: the small Fashion-MNIST
store plus exact copies of three of its images, added later (so the originals are the older files)
and indexed incrementally. At the calibrated threshold the CLI, the Python API and the server's
/api/duplicates give the same groups, and each copy is grouped with its original as the anchor."""

from __future__ import annotations

import json
import shutil

import httpx
import pytest
from serving import Server, cli, copy_store, small_store

from hashae.index.api import Store

COPIED = 3


@pytest.fixture(scope="module")
def store_with_copies(tmp_path_factory):
    """(store folder, {original path: copy path}) relative to the indexed folder."""
    images, store = copy_store(*small_store(tmp_path_factory), tmp_path_factory.mktemp("front"))
    originals = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.png"))[:: 200 // COPIED][:COPIED]
    (images / "copies").mkdir()
    pairs = {}
    for number, original in enumerate(originals):
        pairs[original] = f"copies/copy_{number}.png"
        shutil.copyfile(images / original, images / pairs[original])  # a newer file time than the original's
    cli("index", images, "--store", store, "-q")
    return store, pairs


def test_cli_api_and_server_give_the_same_groups(store_with_copies):
    store, pairs = store_with_copies
    document = json.loads(cli("duplicates", "--store", store, "--json", "-q"))
    assert set(pairs.values()) <= {member["path"] for group in document["groups"] for member in group["members"]}
    with Store.open(store) as opened:
        assert [group.as_dict() for group in opened.duplicates()] == document["groups"]
    with Server(store) as running, httpx.Client(base_url=running.url, timeout=60) as http:
        answer = http.get("/api/duplicates").json()
    assert answer["threshold"] == document["threshold"] and answer["total_groups"] == len(document["groups"])
    assert answer["threshold_source"] == document["threshold_source"] in ("store", "bench")  # the store's own, measured once
    for group in answer["groups"]:
        for member in group["members"]:
            assert member.pop("label") == member["path"].split("/")[0]  # the first folder: the class, or "copies"
    assert answer["groups"] == document["groups"]


def test_each_copy_is_grouped_with_its_original_as_anchor(store_with_copies):
    store, pairs = store_with_copies
    with Store.open(store) as opened:
        groups = opened.duplicates(radius=0, latent_max=0.0)  # exact copies are grouped at any threshold
        by_path = {member.path: (group.anchor.path, member) for group in groups for member in group.members}
    for original, copy in pairs.items():
        anchor, member = by_path[copy]
        assert anchor == original and member.exact and (member.hamming, member.latent) == (0, 0.0)
