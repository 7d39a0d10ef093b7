"""The `hashae` command line through typer's CliRunner: exit codes, --json shapes, query modes and
radius against brute force on the stored codes, one-line errors, help texts, and a cold start
that never imports torch."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from conftest import index_quietly
from typer.testing import CliRunner

from hashae.cli.main import app
from hashae.index.backends import open_store
from hashae.index.search import HYBRID_SHORTLIST
from hashae.index.settings import StoreSettings

REPO = Path(__file__).resolve().parents[1]
RESULT_KEYS = {"rank", "id", "path", "label", "distance"}


def invoke(*args: object, env: dict | None = None):
    return CliRunner().invoke(app, [str(a) for a in args], env=env, catch_exceptions=False)


def ok(*args: object, env: dict | None = None):
    result = invoke(*args, env=env)
    assert result.exit_code == 0, result.output
    return result


def json_lines(result) -> list[dict]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def assert_one_line_error(result, *words: str) -> None:
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def catalogue(indexed_library):
    """(folder, store, ids int64 (n,), codes uint8 (n, B), latents float32 (n, d), {id: path})."""
    folder, store = indexed_library
    return (folder, store, *stored_vectors(store))


def stored_vectors(store: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, str]]:
    """The newest generation's ids int64 (n,), codes uint8 (n, B), latents float32 (n, d), {id: path}."""
    opened = open_store(store)
    try:
        view = opened.snapshot()
        ids = view.item_ids()
        items = view.items(ids.tolist())
        return ids, view.codes_of(ids), view.latents_of(ids), {i: items[i].path for i in ids.tolist()}
    finally:
        opened.close()


def query_vectors(store: Path, image: Path) -> tuple[np.ndarray, np.ndarray]:
    """The code (1, B) and latent (1, d) `hashae query IMAGE` searches with: the store's encoders."""
    from hashae.index.query import QueryEngine

    opened = open_store(store)
    try:
        engine = QueryEngine.open(opened)
        return engine.encode(engine.decode(image)[None])
    finally:
        opened.close()


def hamming_to_all(codes: np.ndarray, code: np.ndarray) -> np.ndarray:
    return np.unpackbits(codes ^ code, axis=1).sum(axis=1)


def code_of(answer: dict) -> np.ndarray:
    return np.packbits(np.array([int(b) for b in answer["code"]], dtype=np.uint8))


def pairs(results: list[dict]) -> list[tuple[int, object]]:
    return [(hit["id"], hit["distance"]) for hit in results]


def latent_to_all(latents: np.ndarray, latent: np.ndarray) -> np.ndarray:
    """Squared L2 float32, computed as the search module computes it."""
    return ((latents - latent) ** 2).sum(axis=1, dtype=np.float32)


def brute_knn(ids, distances, k, *, itself=None, then=None):
    """The k nearest by (distance, then, id) (`then`: per-item tie keys, e.g. latent distances);
    with `itself` (an id query) that item first."""
    keys = (ids,) if then is None else (ids, then)
    order = np.lexsort((*keys, ids != itself, distances))[:k]
    return ids[order], distances[order]


# ------------------------------------------------------------------------------------------ query
def check_answer_shape(answer: dict, *, query, mode: str) -> None:
    assert {"query", "mode", "results"} <= set(answer)
    assert answer["query"] == query and answer["mode"] == mode
    for rank, hit in enumerate(answer["results"], start=1):
        assert set(hit) == RESULT_KEYS
        assert hit["rank"] == rank


def test_query_by_image_json_finds_itself_and_matches_brute_force(catalogue):
    folder, store, ids, codes, latents, paths = catalogue
    # an item whose code is shared by at most 5 items, so it must be among the 10 nearest
    for item_id, code in zip(ids, codes):
        if (hamming_to_all(codes, code) == 0).sum() <= 5:
            break
    image = folder / paths[int(item_id)]
    answer = json_lines(ok("query", image, "--store", store, "--json"))[0]
    check_answer_shape(answer, query=str(image), mode="hamming")
    results = answer["results"]
    assert len(results) == 10
    assert {"id": int(item_id), "path": paths[int(item_id)], "distance": 0} in [
        {key: hit[key] for key in ("id", "path", "distance")} for hit in results
    ]
    assert all(hit["label"] == hit["path"].split("/")[0] for hit in results)
    q_code, q_latent = query_vectors(store, image)
    assert (q_code[0] == code_of(answer)).all()
    distances = hamming_to_all(codes, q_code[0])
    # ties within a Hamming distance go by latent distance, over the whole tied group at the 10th
    want_ids, want_distances = brute_knn(ids, distances, 10, then=latent_to_all(latents, q_latent[0]))
    assert pairs(results) == list(zip(want_ids.tolist(), want_distances.tolist()))
    assert all(isinstance(hit["distance"], int) for hit in results)
    by_id = json_lines(ok("query", image, "--store", store, "--json", "--ties", "id"))[0]
    assert by_id["ties"] == "id" and answer["ties"] == "latent"
    want_ids, want_distances = brute_knn(ids, distances, 10)
    assert pairs(by_id["results"]) == list(zip(want_ids.tolist(), want_distances.tolist()))


def test_query_several_images_and_ids_one_line_each(catalogue):
    folder, store, ids, _, _, paths = catalogue
    first, second = (folder / paths[int(i)] for i in ids[:2])
    result = ok("query", first, second, "--id", ids[3], "--id", ids[4], "--store", store, "--json", "-k", 3)
    answers = json_lines(result)
    assert [a["query"] for a in answers] == [str(first), str(second), int(ids[3]), int(ids[4])]
    assert all(len(a["results"]) == 3 for a in answers)
    for answer in answers[2:]:
        assert answer["results"][0]["id"] == answer["query"] and answer["results"][0]["distance"] == 0


@pytest.mark.parametrize("ties", ["latent", "id"])
@pytest.mark.parametrize("radius", [0, 2, 5])
def test_radius_returns_every_item_within_it(catalogue, radius, ties):
    _, store, ids, codes, latents, paths = catalogue
    row = 7
    answer = json_lines(ok("query", "--id", ids[row], "--radius", radius, "--ties", ties, "--store", store, "--json"))[0]
    check_answer_shape(answer, query=int(ids[row]), mode="hamming")
    distances = hamming_to_all(codes, codes[row])
    inside = distances <= radius
    then = latent_to_all(latents[inside], latents[row]) if ties == "latent" else None
    want_ids, want_distances = brute_knn(ids[inside], distances[inside], len(ids), itself=ids[row], then=then)
    assert pairs(answer["results"]) == list(zip(want_ids.tolist(), want_distances.tolist()))
    assert pairs(answer["results"])[0] == (int(ids[row]), 0)
    assert all(hit["path"] == paths[hit["id"]] for hit in answer["results"])


def test_radius_with_an_image_and_a_cap(catalogue):
    folder, store, ids, codes, latents, paths = catalogue
    image = folder / paths[int(ids[0])]
    answer = json_lines(ok("query", image, "--radius", 6, "--top", 4, "--store", store, "--json"))[0]
    q_code, q_latent = query_vectors(store, image)
    distances = hamming_to_all(codes, q_code[0])
    inside = distances <= 6
    want_ids, want_distances = brute_knn(ids[inside], distances[inside], 4, then=latent_to_all(latents[inside], q_latent[0]))
    assert pairs(answer["results"]) == list(zip(want_ids.tolist(), want_distances.tolist()))


def test_latent_mode_matches_brute_force(catalogue):
    _, store, ids, _, latents, _ = catalogue
    row = 11
    answer = json_lines(ok("query", "--id", ids[row], "--mode", "latent", "-k", 5, "--store", store, "--json"))[0]
    check_answer_shape(answer, query=int(ids[row]), mode="latent")
    distances = ((latents - latents[row]) ** 2).sum(axis=1)
    want = brute_knn(ids, distances, 5, itself=ids[row])[0]
    assert [hit["id"] for hit in answer["results"]] == want.tolist()
    assert answer["results"][0]["id"] == int(ids[row]) and answer["results"][0]["distance"] == 0.0
    got = np.array([hit["distance"] for hit in answer["results"]])
    np.testing.assert_allclose(got, np.sort(distances)[:5], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("ties", ["latent", "id"])
def test_hybrid_mode_reranks_the_hamming_shortlist(catalogue, ties):
    _, store, ids, codes, latents, _ = catalogue
    row, k = 13, 5
    args = ["query", "--id", ids[row], "--mode", "hybrid", "-k", k, "--ties", ties, "--store", store, "--json"]
    answer = json_lines(ok(*args))[0]
    check_answer_shape(answer, query=int(ids[row]), mode="hybrid")
    latent = latent_to_all(latents, latents[row])
    # the shortlist: the hamming mode's answer at depth max(k, HYBRID_SHORTLIST)
    shortlist = brute_knn(np.arange(len(ids)), hamming_to_all(codes, codes[row]), max(k, HYBRID_SHORTLIST),
                          itself=row, then=latent if ties == "latent" else ids)[0]
    want_ids, want_distances = brute_knn(ids[shortlist], latent[shortlist], k, itself=ids[row])
    assert [hit["id"] for hit in answer["results"]] == want_ids.tolist()
    np.testing.assert_allclose([hit["distance"] for hit in answer["results"]], want_distances, rtol=1e-6)
    assert answer["results"][0]["distance"] == 0.0


def test_id_query_finds_itself_first_among_many_ties(library_copy):
    folder, store = library_copy
    original = sorted(folder.glob("Bag/*.png"))[0]
    for i in range(4):  # identical files: identical codes, a guaranteed tie at distance 0
        (folder / "Bag" / f"zz_copy_{i}.png").write_bytes(original.read_bytes())
    index_quietly(store, folder)
    ids, codes, latents, paths = stored_vectors(store)
    row = [paths[i] for i in ids.tolist()].index(f"Bag/{original.name}")
    shared = (codes == codes[row]).all(axis=1)
    bucket = sorted(ids[shared].tolist())
    assert len(bucket) >= 5
    last = max(bucket)  # ranks last among its ties by id
    k = len(bucket) - 1
    for mode in ("hamming", "hybrid"):
        for ties in ("latent", "id"):
            answer = json_lines(ok("query", "--id", last, "-k", k, "--mode", mode, "--ties", ties, "--store", store, "--json"))[0]
            assert len(answer["results"]) == k
            assert answer["results"][0]["id"] == last and answer["results"][0]["distance"] == 0
    by_id = json_lines(ok("query", "--id", last, "-k", k, "--radius", 0, "--ties", "id", "--store", store, "--json"))[0]
    assert [hit["id"] for hit in by_id["results"]] == [last, *bucket[: k - 1]]
    by_latent = json_lines(ok("query", "--id", last, "-k", k, "--radius", 0, "--store", store, "--json"))[0]
    then = latent_to_all(latents[shared], latents[ids == last][0])
    assert [hit["id"] for hit in by_latent["results"]] == brute_knn(ids[shared], np.zeros(len(bucket)), k, itself=last, then=then)[0].tolist()


@pytest.fixture(scope="module")
def crowded_store(indexed_library, tmp_path_factory):
    """(folder, store): the library indexed again with 8-bit codes, so most codes are shared."""
    folder, _ = indexed_library
    store = tmp_path_factory.mktemp("crowded") / "store"
    index_quietly(store, folder, bits=8)
    return folder, store


def test_own_file_comes_first_among_many_ties(crowded_store):
    folder, store = crowded_store
    ids, codes, _, paths = stored_vectors(store)
    _, sizes = np.unique(codes, axis=0, return_counts=True)
    assert sizes.max() >= 5  # many items share a code
    crowded = [i for i, code in zip(ids.tolist(), codes) if (codes == code).all(axis=1).sum() >= 3]
    for item_id in crowded[:12]:
        answer = json_lines(ok("query", folder / paths[item_id], "-k", 3, "--store", store, "--json"))[0]
        assert (answer["results"][0]["id"], answer["results"][0]["distance"]) == (item_id, 0), paths[item_id]
    by_id = [json_lines(ok("query", folder / paths[i], "-k", 1, "--ties", "id", "--store", store, "--json"))[0] for i in crowded[:12]]
    assert any(answer["results"][0]["id"] != i for answer, i in zip(by_id, crowded)), "ties by id would lose some"


def test_a_resized_jpeg_copy_finds_its_original_first(crowded_store, tmp_path):
    from PIL import Image

    folder, store = crowded_store
    ids, codes, _, paths = stored_vectors(store)
    found = 0
    for item_id in ids[::5].tolist():
        with Image.open(folder / paths[item_id]) as original:
            copy = tmp_path / f"copy_{item_id}.jpg"
            original.resize((56, 56), Image.BILINEAR).convert("RGB").save(copy, quality=90)
        answer = json_lines(ok("query", copy, "-k", 1, "--store", store, "--json"))[0]
        first = answer["results"][0]
        own_distance = int(hamming_to_all(codes[ids == item_id], code_of(answer))[0])
        if own_distance == first["distance"]:  # the original is in the first tied group: it leads it
            assert first["id"] == item_id, (paths[item_id], first)
            found += 1
    assert found >= 10


def test_bad_files_among_good_ones(catalogue, tmp_path):
    folder, store, ids, _, _, paths = catalogue
    good = [folder / paths[int(i)] for i in ids[:2]]
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    result = invoke("query", good[0], bad, good[1], "--id", 10**9, "--store", store, "--json", "-k", 2)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert [answer["query"] for answer in json_lines(result)] == [str(good[0]), str(good[1])]
    errors = result.stderr.splitlines()
    assert len(errors) == 2 and all(line.startswith("error: ") for line in errors), errors
    assert "bad.png" in errors[0] and "not an image" in errors[0] and str(10**9) in errors[1]


def test_a_closed_pipe_ends_the_output_quietly(catalogue):
    _, store, ids, _, _, _ = catalogue
    args = [sys.executable, "-m", "hashae.cli.main", "query", "--store", str(store), "--json", "-k", "150"]
    for item_id in ids[:60].tolist():  # far more than a pipe buffer holds
        args += ["--id", str(item_id)]
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = process.stdout.readline()
    process.stdout.close()  # what `| head -1` does after its line
    _, stderr = process.communicate(timeout=120)
    assert json.loads(first)["query"] == int(ids[0])
    assert stderr == b"", stderr.decode()
    assert process.returncode == 141  # as a Unix tool killed by SIGPIPE


def test_the_sheet_folder_is_never_created(catalogue, tmp_path):
    _, store, ids, _, _, _ = catalogue
    missing = tmp_path / "nowhere" / "deeper"
    assert_one_line_error(invoke("query", "--id", ids[0], "--store", store, "--sheet", missing / "s.png"), "does not exist")
    assert not (tmp_path / "nowhere").exists()


def test_query_table_output_and_contact_sheet(catalogue, tmp_path):
    folder, store, ids, _, _, paths = catalogue
    image = folder / paths[int(ids[2])]
    sheet = tmp_path / "sheet.png"
    result = ok("query", image, "--id", ids[5], "-k", 3, "--store", store, "--sheet", sheet)
    assert f"query {image} (hamming): 3 results" in result.stdout
    assert f"query {int(ids[5])} (hamming): 3 results" in result.stdout
    assert "contact sheet written to" in result.stdout
    from PIL import Image

    with Image.open(sheet) as drawn:
        assert drawn.width > drawn.height > 0  # two rows of four tiles


def test_labels_are_null_without_class_subfolders(indexed_flat_folder):
    folder, store, _, _ = indexed_flat_folder
    image = folder / "img_0000.png"
    for mode in ("hamming", "latent", "hybrid"):
        answer = json_lines(ok("query", image, "--mode", mode, "-k", 3, "--store", store, "--json"))[0]
        assert len(answer["results"]) == 3
        assert all(hit["label"] is None for hit in answer["results"])
        found = {hit["path"]: hit["distance"] for hit in answer["results"]}
        assert found["img_0000.png"] == pytest.approx(0, abs=1e-5)  # it is indexed: found at 0


def test_store_from_environment(catalogue, tmp_path):
    _, store, ids, _, _, _ = catalogue
    answer = json_lines(ok("query", "--id", ids[0], "--json", env={"HASHAE_STORE": str(store)}))[0]
    assert answer["results"][0]["id"] == int(ids[0])
    assert_one_line_error(invoke("info", env={"HASHAE_STORE": str(tmp_path / "nowhere")}), "no hashae store")


# ------------------------------------------------------------------------------- index and info
def test_index_json_and_summary_line(library_copy):
    folder, store = library_copy
    summary = json_lines(ok("index", folder, "--store", store, "--json", "-q"))[0]
    assert {"indexed", "unchanged", "removed", "skipped", "trained", "generation", "stages"} <= set(summary)
    assert (summary["indexed"], summary["removed"], summary["trained"], summary["generation"]) == (0, 0, False, 2)
    line = ok("index", folder, "--store", store, "-q").stdout.strip()  # nothing to do: no new generation
    assert re.fullmatch(r"indexed 0, unchanged \d+, removed 0, skipped 0 in [\d.]+s \(nothing changed, generation 2\)", line), line
    info = json_lines(ok("info", "--store", store, "--json"))[0]
    assert (info["generation"], info["items"], info["skipped"], info["bits"]) == (2, summary["unchanged"], [], 32)
    text = ok("info", "--store", store).stdout
    assert f"items       {info['items']}" in text and "32 bits" in text


# ------------------------------------------------------------------------------------- errors
def test_one_line_errors(catalogue, tmp_path):
    folder, store, ids, _, _, paths = catalogue
    image = folder / paths[int(ids[0])]
    text = tmp_path / "words.png"
    text.write_text("not an image")
    missing_store = tmp_path / "no-store"
    assert_one_line_error(invoke("query", image, "--store", missing_store), "no hashae store")
    assert_one_line_error(invoke("info", "--store", missing_store), "no hashae store")
    assert not missing_store.exists()  # reading never creates a store
    assert_one_line_error(invoke("query", tmp_path / "nope.png", "--store", store), "nope.png", "not found")
    assert_one_line_error(invoke("query", text, "--store", store), "words.png", "not an image")
    assert_one_line_error(invoke("query", "--id", 10**9, "--store", store), str(10**9))
    assert_one_line_error(invoke("query", "--id", ids[0], "--radius", 2, "--mode", "latent", "--store", store), "--radius")
    assert_one_line_error(invoke("query", "--id", ids[0], "--mode", "cosine", "--store", store), "cosine")
    assert_one_line_error(invoke("query", "--id", ids[0], "--ties", "random", "--store", store), "random", "latent, id")
    assert_one_line_error(invoke("query", "--id", ids[0], "--radius", 99, "--store", store), "radius")
    assert_one_line_error(invoke("index", tmp_path / "no-folder", "--store", tmp_path / "s2", "-q"), "no-folder")
    assert_one_line_error(invoke("generate", "--model", tmp_path / "no-model", "--out", tmp_path / "g.png"))
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    assert_one_line_error(invoke("index", folder, "--store", a_file, "-q"), "a-file")
    assert_one_line_error(invoke("query", "--id", ids[0], "--store", store, "--sheet", a_file / "s.png"), "a-file")


def test_a_store_without_a_generation_is_a_clean_error(tmp_path):
    opened = open_store(tmp_path / "store", create=True)
    with opened.writer() as writer:  # settings recorded, nothing committed
        writer.set_settings(StoreSettings())
    opened.close()
    assert_one_line_error(invoke("query", "--id", 1, "--store", tmp_path / "store"), "hashae index")
    info = json_lines(ok("info", "--store", tmp_path / "store", "--json"))[0]
    assert (info["items"], info["generation"], info["skipped"]) == (0, 0, [])


@pytest.mark.parametrize(
    "args",
    [
        ["query"],  # neither an image nor --id
        ["query", "--id", "x"],
        ["query", "--id", "1", "-k", "0"],
        ["query", "--id", "1", "--k", "3"],  # -k or --top; no odd --k
        ["query", "--id", "1", "--radius", "-1"],
        ["query", "--bogus"],
        ["index"],
        ["index", "somewhere", "--bits", "4"],
        ["info", "extra-argument"],
        ["datasets", "export"],
        ["no-such-command"],
    ],
)
def test_usage_errors_exit_2(args):
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------- help and docs
def all_commands() -> list[tuple[list[str], object]]:
    """(path of names, click command) of every command and subcommand of the app."""
    found = []

    def walk(command, path):
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            found.append((path + [name], sub))
            walk(sub, path + [name])

    walk(typer.main.get_command(app), [])
    return found


def test_every_command_has_help():
    top = ok("--help").stdout
    commands = all_commands()
    assert {"index", "query", "info", "train", "generate", "datasets"} <= {path[0] for path, _ in commands}
    for path, command in commands:
        if len(path) == 1:
            assert path[0] in top
        assert (command.help or command.short_help or "").strip(), f"hashae {' '.join(path)} has no help text"
        result = ok(*path, "--help")
        assert "Usage:" in result.stdout and "--help" in result.stdout


def test_every_command_appears_in_the_readme():
    readme = REPO / "README.md"
    assert readme.is_file(), "README.md is missing"
    text = readme.read_text()
    missing = [" ".join(path) for path, _ in all_commands() if f"hashae {' '.join(path)}" not in text]
    assert not missing, f"commands not documented in README.md: {missing}"


# ---------------------------------------------------------------------------------- cold start
def test_query_path_does_not_import_torch():
    code = (
        "import sys, hashae.cli.main, hashae.cli.query, hashae.cli.serve, hashae.index.query, hashae.index.search, hashae.index.server\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


def test_cold_query_does_not_import_torch(catalogue):
    _, store, ids, _, _, _ = catalogue
    code = (
        "import sys; from hashae.cli.main import app\n"
        "try:\n    app(sys.argv[1:])\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    args = ["query", "--id", str(ids[0]), "--store", str(store), "--json"]
    result = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["id"] == int(ids[0])
