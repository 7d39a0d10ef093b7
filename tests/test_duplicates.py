"""Near-duplicate groups (index/duplicates.py, `hashae duplicates`) against brute force, and the
near-duplicate bench's pieces (index/copies.py, index/bench_duplicates.py).

The store is real: a folder the test draws (base images, their exact copies, JPEG re-encodes and
1-2 px shifts, unrelated images), indexed once with 1 training epoch. The groups must equal what
all pairs within the threshold, plus content-hash groups, give under the same anchored rule.
"""

from __future__ import annotations

import io
import json
import os
import shutil

import conftest
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from hashae.cli.main import app
from hashae.errors import HashaeError
from hashae.index.backends import open_store
from hashae.index.bench_duplicates import (
    IMPOSTORS_KEPT,
    DuplicatesBenchOptions,
    Scorer,
    bench_task,
    calibrate,
    hamming_matrix,
)
from hashae.index.copies import TRANSFORMS, make_copies
from hashae.index.duplicates import (
    DuplicatesError,
    Threshold,
    default_threshold,
    duplicates_document,
    find_duplicate_groups,
)

N_BASES, N_OTHERS = 6, 30
EPOCH = 1_700_000_000  # file times: bases oldest, unrelated images next, copies newest


def shifted(img: Image.Image, dx: int, dy: int) -> Image.Image:
    moved = Image.new(img.mode, img.size, 0)
    moved.paste(img, (dx, dy))
    return moved


def make_folder(folder) -> dict[str, list[str]]:
    """Bases, unrelated drawings and altered copies of the bases; returns {base: its copies}."""
    bases = conftest.draw_images(folder / "bases", N_BASES, seed=7, classes=False, prefix="base")
    others = conftest.draw_images(folder / "others", N_OTHERS, seed=8, classes=False, prefix="other")
    (folder / "copies").mkdir()
    copies = {}
    for i, base in enumerate(bases):
        img = Image.open(folder / "bases" / base)
        names = [f"copies/{i}_exact.png", f"copies/{i}_q85.jpg", f"copies/{i}_shift1.png", f"copies/{i}_shift2.png"]
        shutil.copyfile(folder / "bases" / base, folder / names[0])
        img.save(folder / names[1], "JPEG", quality=85)
        shifted(img, 1, 0).save(folder / names[2])
        shifted(img, 0, 2).save(folder / names[3])
        copies[f"bases/{base}"] = names
    for age, names in ((0, [f"bases/{b}" for b in bases]), (100, [f"others/{o}" for o in others]), (200, [n for c in copies.values() for n in c])):
        for j, name in enumerate(names):
            os.utime(folder / name, (EPOCH + age + j, EPOCH + age + j))
    return copies


@pytest.fixture(scope="module")
def duplicates_store(tmp_path_factory):
    """(folder, store, {base path: copy paths}), indexed once with 1 training epoch."""
    base = tmp_path_factory.mktemp("duplicates")
    folder, store = base / "images", base / "store"
    copies = make_folder(folder)
    conftest.index_quietly(store, folder)
    return folder, store, copies


@pytest.fixture
def view(duplicates_store):
    with open_store(duplicates_store[1]) as opened:
        yield opened.snapshot()


# ----------------------------------------------------------------------------------- brute force
def brute_force_groups(view, threshold: Threshold) -> list[tuple[int, dict[int, tuple[int, float]]]]:
    """The anchored rule on all pairs: [(anchor id, {member id: (hamming, latent) to the anchor})].
    The anchor's exact copies are at (0, 0.0): their stored vectors can differ in the last float
    bits (the encoder's matrix products depend on an item's place in its batch)."""
    ids = view.item_ids()
    infos = view.items(ids.tolist())
    bits = np.unpackbits(view.codes_of(ids), axis=1)
    hamming = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    latents = view.latents_of(ids)
    latent = ((latents[:, None, :] - latents[None, :, :]) ** 2).sum(-1, dtype=np.float32)
    near = hamming <= threshold.radius
    if threshold.latent_max is not None:
        near &= latent <= threshold.latent_max
    digests = np.array([infos[i].content_hash for i in ids.tolist()])
    same = digests[:, None] == digests[None, :]
    grouped, groups = np.zeros(len(ids), bool), []
    for a in sorted(range(len(ids)), key=lambda i: (infos[int(ids[i])].mtime_ns, ids[i])):
        if grouped[a]:
            continue
        members = np.flatnonzero(~grouped & (near[a] | same[a]))
        members = np.flatnonzero(~grouped & same[members].any(axis=0))  # whole content-hash units
        grouped[members] = True
        if len(members) > 1:
            distances = {int(ids[m]): (0, 0.0) if same[a, m] else (int(hamming[a, m]), float(latent[a, m])) for m in members}
            groups.append((int(ids[a]), distances))
    return groups


def as_comparable(groups) -> list[tuple[int, dict[int, tuple[int, float]]]]:
    return [(g.anchor.id, {m.id: (m.hamming, m.latent) for m in g.members}) for g in groups]


def between_distances(view, quantile: float) -> float:
    """A latent limit halfway between two distinct pairwise distances (no pair sits on it)."""
    latents = view.latents_of(view.item_ids())
    distances = np.unique(((latents[:, None, :] - latents[None, :, :]) ** 2).sum(-1, dtype=np.float32))
    i = int(quantile * (len(distances) - 2))
    return float((distances[i] + distances[i + 1]) / 2)


def assert_same_groups(found, expected) -> None:
    found = as_comparable(found)
    assert [(anchor, set(members)) for anchor, members in found] == [(anchor, set(members)) for anchor, members in expected]
    for (_, got), (_, want) in zip(found, expected):
        for item, (hamming, latent) in want.items():
            assert got[item][0] == hamming
            assert got[item][1] == pytest.approx(latent, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("radius, latent_quantile", [(0, None), (2, 0.02), (4, None), (6, 0.1), (12, 0.3), (32, None)])
def test_groups_equal_the_anchored_rule_on_all_pairs(view, radius, latent_quantile):
    threshold = Threshold(radius, None if latent_quantile is None else between_distances(view, latent_quantile))
    expected = brute_force_groups(view, threshold)
    assert_same_groups(find_duplicate_groups(view, threshold=threshold), expected)


def test_default_threshold_equals_brute_force_and_finds_the_exact_copies(view, duplicates_store):
    _, _, copies = duplicates_store
    found = find_duplicate_groups(view)
    assert_same_groups(found, brute_force_groups(view, default_threshold(view.settings.bits)))
    by_path = {m.path: (g.anchor.path, m) for g in found for m in g.members}
    for base, names in copies.items():
        anchor, member = by_path[names[0]]
        assert anchor == base and member.exact and (member.hamming, member.latent) == (0, 0.0)


def test_exact_copies_are_grouped_even_at_a_zero_threshold(view, duplicates_store):
    _, _, copies = duplicates_store
    groups = find_duplicate_groups(view, threshold=Threshold(0, 0.0))
    assert {(g.anchor.path, frozenset(m.path for m in g.members)) for g in groups} == {
        (base, frozenset({base, names[0]})) for base, names in copies.items()
    }


def test_every_member_is_within_the_threshold_of_its_anchor_and_in_one_group(view):
    threshold = Threshold(8, None)
    groups = find_duplicate_groups(view, threshold=threshold)
    ids = [m.id for g in groups for m in g.members]
    assert len(ids) == len(set(ids))
    assert all(m.hamming <= 8 for g in groups for m in g.members)
    # a whole-code threshold puts everything in one group, anchored on the oldest file
    (everything,) = find_duplicate_groups(view, threshold=Threshold(view.settings.bits, None))
    assert len(everything) == view.n_items and everything.anchor.path.startswith("bases/base_0000")


def test_bad_thresholds_are_refused(view):
    for threshold in (Threshold(-1, None), Threshold(view.settings.bits + 1, None), Threshold(2, -0.5), Threshold(True, None)):
        with pytest.raises(DuplicatesError):
            find_duplicate_groups(view, threshold=threshold)


# ------------------------------------------------------------------------------------------ CLI
def invoke(*args: str):
    return CliRunner().invoke(app, ["duplicates", *args], catch_exceptions=False)


def test_cli_json_is_the_document_of_the_python_api(view, duplicates_store):
    store = duplicates_store[1]
    result = invoke("--store", str(store), "--json", "--threshold", "4", "--latent-max", "0.5")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document.pop("seconds") >= 0 and document.pop("threshold_source") == "asked"
    assert document == duplicates_document(view, threshold=Threshold(4, 0.5))
    assert document["threshold"] == {"radius": 4, "latent_max": 0.5}
    assert all({"id", "path", "hamming", "latent", "exact"} == set(m) for g in document["groups"] for m in g["members"])


def test_cli_table_lists_each_grouped_item(view, duplicates_store):
    _, store, copies = duplicates_store
    result = invoke("--store", str(store))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    default = default_threshold(view.settings.bits)
    assert lines[0].startswith(f"{len(find_duplicate_groups(view))} groups of near-duplicates")
    assert f"Hamming <= {default.radius}, latent <= {default.latent_max:g}" in lines[0]
    for base, names in copies.items():
        assert any(line.split()[-2:] == ["anchor", base] for line in lines), base
        assert any(line.split()[-2:] == ["exact", names[0]] for line in lines), names[0]
    codes_only = invoke("--store", str(store), "--codes-only", "-t", "0")
    assert "Hamming <= 0, codes only" in codes_only.stdout.splitlines()[0]
    assert invoke("--store", str(store), "--quiet").stderr == ""


def test_the_best_limit_is_the_largest_that_holds_the_precision():
    from hashae.index.calibration import CalibrationError, _best_limit

    right, wrong = np.array([0.1, 0.2, 0.3, np.inf]), np.array([0.25, 5.0])  # one copy's original is outside its ball
    strict = _best_limit(right, wrong, radius=1, target=0.999, originals=4)
    assert strict.threshold == Threshold(1, 0.2) and strict.precision == 1.0 and strict.recall == 0.5
    loose = _best_limit(right, wrong, radius=1, target=0.7, originals=4)
    assert loose.threshold == Threshold(1, 0.3) and loose.precision == 0.75 and loose.recall == 0.75
    with pytest.raises(CalibrationError, match="no latent limit at Hamming radius 1 reaches precision 0.999"):
        _best_limit(np.array([0.5]), np.array([0.1]), radius=1, target=0.999, originals=1)


def test_a_store_calibrates_its_threshold_on_copies_of_its_own_files(tmp_path, duplicates_store):
    from hashae.index.calibration import CalibrationError, calibrate_threshold
    from hashae.index.copies import TRANSFORMS
    from hashae.index.query import QueryEngine

    folder, store, _ = duplicates_store
    with open_store(store) as opened:
        engine = QueryEngine.open(opened)
        calibration = calibrate_threshold(engine, target=0.9, radius=2)
        assert calibration.threshold.radius == 2 and calibration.threshold.latent_max > 0
        assert calibration.precision >= 0.9 and 0 < calibration.recall <= 1
        assert calibration.originals == engine.view.n_items and calibration.copies == calibration.originals * (len(TRANSFORMS) - 1)
        assert calibrate_threshold(engine, target=0.9, radius=2) == calibration  # seeded: the same copies
        engine.file_of = lambda path: tmp_path / "moved" / path  # the indexed folder is gone
        with pytest.raises(CalibrationError, match="only 0 of the .* sampled files could be read"):
            calibrate_threshold(engine)


def test_cli_calibrate_groups_by_the_measured_threshold(duplicates_store):
    store = duplicates_store[1]
    result = invoke("--store", str(store), "--json", "--calibrate", "--precision", "0.9", "--threshold", "2")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["calibration"]["threshold"] == document["threshold"] and document["threshold"]["radius"] == 2
    assert document["calibration"]["precision"] >= 0.9
    table = invoke("--store", str(store), "--calibrate", "--precision", "0.9", "--threshold", "2", "--quiet")
    assert "threshold calibrated on" in table.stdout and "of the store's files: precision" in table.stdout
    refused = invoke("--store", str(store), "--calibrate", "--latent-max", "0.1")
    assert refused.exit_code == 2 and "--calibrate" in refused.output


def test_a_store_measures_its_own_threshold_once_and_keeps_it_with_its_models(duplicates_store, monkeypatch):
    from hashae.index import calibration as module
    from hashae.index.query import QueryEngine

    store = duplicates_store[1]
    measured = []
    real = module.calibrate_threshold

    def measure(engine, **kw):  # at precision 0.9: this store's 1-epoch models reach no 0.999 limit
        measured.append(kw)
        return real(engine, **{**kw, "target": 0.9})

    monkeypatch.setattr(module, "calibrate_threshold", measure)
    with open_store(store) as opened:
        engine = QueryEngine.open(opened)
        kept = engine.view.model_dir(engine.view.models().latent) / module.SAVED_FILE
        # the training index run measured it already (these 1-epoch models reach no 0.999 limit: the reason is kept)
        assert json.loads(kept.read_text())["items"] == engine.view.n_items and measured == []
        kept.unlink()
        info = lambda: CliRunner().invoke(app, ["info", "--store", str(store)]).stdout  # noqa: E731
        assert "duplicates  threshold not measured for these models" in info()
        chosen = module.store_threshold(engine)
        assert f"latent <= {chosen.threshold.latent_max:.4g} (measured on" in info()
        assert chosen.source == "store" and chosen.calibration.threshold == chosen.threshold
        assert chosen.threshold.radius == default_threshold(engine.settings.bits).radius and chosen.calibration.precision >= 0.9
        assert module.store_threshold(engine) == chosen and len(measured) == 1  # kept: not measured again
        record = json.loads(kept.read_text())
        assert (record["latent_model"], record["items"]) == (engine.view.models().latent.id, engine.view.n_items)

        # what the CLI, the API and the page use by default
        document = json.loads(invoke("--store", str(store), "--json", "-q").stdout)
        assert document["threshold"] == chosen.threshold.as_dict() and document["threshold_source"] == "store"
        assert document["calibration"] == chosen.calibration.as_dict() and len(measured) == 1
        assert "threshold calibrated on" in invoke("--store", str(store), "-q").stdout
        assert invoke("--store", str(store), "--json", "-q", "-t", "3").stdout.count('"threshold_source": "bench"') == 1

        # another pair of models, or a store twice the size, is measured again
        kept.write_text(json.dumps({**record, "latent_model": record["latent_model"] + 1}))
        assert module.store_threshold(engine) == chosen and len(measured) == 2
        kept.write_text(json.dumps({**record, "items": 2 * record["items"]}))
        assert module.store_threshold(engine) == chosen and len(measured) == 3
        kept.write_text("{not json")
        assert module.store_threshold(engine) == chosen and len(measured) == 4

        # a store that cannot be calibrated falls back to the bench's threshold, and keeps the reason
        def refuse(engine, **kw):
            measured.append(kw)
            raise module.CalibrationError("no latent limit at Hamming radius 4 reaches precision 0.999")

        monkeypatch.setattr(module, "calibrate_threshold", refuse)
        kept.unlink()
        fallback = module.store_threshold(engine)
        assert fallback.source == "bench" and fallback.threshold == default_threshold(engine.settings.bits)
        assert "no latent limit" in fallback.note and module.store_threshold(engine) == fallback and len(measured) == 5
        # ... but not unreadable files: the folder may be back next time
        engine.file_of = lambda path: store / "moved" / path
        monkeypatch.setattr(module, "calibrate_threshold", real)
        kept.unlink()
        gone = module.store_threshold(engine)
        assert gone.source == "bench" and "could be read" in gone.note and not kept.exists()
        # too small a store is a reason that is kept
        monkeypatch.setattr(module, "MIN_ORIGINALS", engine.view.n_items + 1)
        small = module.store_threshold(engine)
        assert small.source == "bench" and f"holds {engine.view.n_items} items" in small.note and kept.exists()
        kept.unlink(missing_ok=True)


def test_calibration_alters_large_photos_scaled_down_and_upright(tmp_path):
    from types import SimpleNamespace

    from hashae.index.calibration import ORIGINAL_SIDE_FACTOR, _readable

    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: shown rotated by 90 degrees
    Image.new("RGB", (1200, 900), (200, 30, 30)).save(tmp_path / "photo.jpg", "JPEG", exif=exif.tobytes())
    (tmp_path / "broken.jpg").write_bytes(b"not a picture")
    engine = SimpleNamespace(settings=SimpleNamespace(image_size=32, channels=3), file_of=lambda path: tmp_path / path)
    infos = {1: SimpleNamespace(path="photo.jpg"), 2: SimpleNamespace(path="broken.jpg"), 3: SimpleNamespace(path="gone.png")}
    originals, images = _readable(engine, np.array([1, 2, 3]), infos)
    side = ORIGINAL_SIDE_FACTOR * 32
    assert originals == [1] and images[0].mode == "RGB" and images[0].size == (side * 3 // 4, side)  # upright: taller than wide


def test_cli_refuses_bad_arguments_in_one_line(tmp_path, duplicates_store):
    store = duplicates_store[1]
    assert invoke("--store", str(store), "--codes-only", "--latent-max", "0.1").exit_code == 2
    too_far = invoke("--store", str(store), "--threshold", "99")
    assert too_far.exit_code == 1 and too_far.output.strip().count("\n") == 0 and "between 0 and 32" in too_far.output
    missing = invoke("--store", str(tmp_path / "nowhere"))
    assert missing.exit_code == 1 and missing.output.startswith("error:")


# --------------------------------------------------------------------------------- bench pieces
def test_transforms_give_decodable_files_of_the_expected_sizes():
    img = Image.fromarray((np.arange(28 * 28).reshape(28, 28) % 251).astype(np.uint8), "L")
    sizes = {}
    for name in TRANSFORMS:
        (data,) = make_copies([img], name, seed=0)
        assert make_copies([img], name, seed=0) == [data]  # seeded
        sizes[name] = Image.open(io.BytesIO(data)).size
    assert sizes["resize x0.5"] == (14, 14) and sizes["crop 10%"] == (25, 25) and sizes["pad 10%"] == (31, 31)
    assert all(size == (28, 28) for name, size in sizes.items() if name not in ("resize x0.5", "crop 10%", "pad 10%"))


@pytest.mark.parametrize("mode, size", [("L", 28), ("RGB", 32)])
def test_altered_images_decode_to_the_pixels_of_their_files(mode, size):
    from types import SimpleNamespace

    from hashae.decode import decode_image
    from hashae.index.copies import alter
    from hashae.index.query import QueryEngine

    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (40, 36) + ((3,) if mode == "RGB" else ())).astype(np.uint8), mode) for _ in range(3)]
    engine = QueryEngine(SimpleNamespace(settings=SimpleNamespace(image_size=size, channels=len(mode))), encoder=None)
    for name in TRANSFORMS:  # the calibration skips writing and reading the lossless copies: same pixels
        for altered, data in zip(alter(images, name, seed=3), make_copies(images, name, seed=3)):
            np.testing.assert_array_equal(engine.decode_altered(altered), decode_image(data, size=size, channels=len(mode)))


def test_scorer_counts_ties_against_and_calibrate_matches_brute_force():
    rng = np.random.default_rng(0)
    n_queries, n_db = 40, 300
    distances = rng.integers(0, 12, (n_queries, n_db)).astype(np.float64)
    truth = [np.array([q]) for q in range(n_queries)]
    distances[np.arange(n_queries), np.arange(n_queries)] = rng.integers(0, 4, n_queries)
    scorer = Scorer(n_queries)
    scorer.add(slice(0, n_queries), distances.copy(), truth)
    queries = np.arange(n_queries)
    own = distances[queries, queries]
    wrong = distances.copy()
    wrong[queries, queries] = np.inf
    assert scorer.recall_at(1, queries) == np.mean([(wrong[q] <= own[q]).sum() == 0 for q in queries])
    assert scorer.recall_at(10, queries) == np.mean([(wrong[q] <= own[q]).sum() < 10 for q in queries])
    for target in (0.5, 0.2, 0.01):
        threshold = calibrate(scorer, queries, target=target)
        best = None
        for value in np.unique(distances):
            true_pairs, false_pairs = (own <= value).sum(), (wrong <= value).sum()
            exact = (np.sort(wrong, axis=1)[:, IMPOSTORS_KEPT - 1] > value).all()
            if true_pairs and exact and true_pairs / (true_pairs + false_pairs) >= target:
                best = value
        assert threshold.value == best
        if best is not None:
            assert threshold.recall == pytest.approx((own <= best).mean())


def test_hamming_matrix_counts_differing_bits():
    rng = np.random.default_rng(1)
    for nbytes in (4, 8, 32):
        a, b = rng.integers(0, 256, (5, nbytes), dtype=np.uint8), rng.integers(0, 256, (7, nbytes), dtype=np.uint8)
        expected = (np.unpackbits(a, axis=1)[:, None, :] != np.unpackbits(b, axis=1)[None, :, :]).sum(-1)
        assert (hamming_matrix(a, b) == expected).all()


def test_bench_runs_on_a_small_database_with_the_stores_models(duplicates_store, tmp_path):
    if not conftest.FASHION_TRAIN_IMAGES.is_file():
        pytest.skip("Fashion-MNIST not installed; run `make data`")
    methods = ("pixels", "codes", "hamming", "latent", "hybrid")
    options = DuplicatesBenchOptions(originals=4, db_limit=150, store=duplicates_store[1], methods=methods, transforms=("identity", "jpeg q50", "shift 2px"))
    text = bench_task(options, markdown_path=tmp_path / "dup.md", json_path=tmp_path / "dup.json", command="the command")
    result = json.loads((tmp_path / "dup.json").read_text())
    assert len(result["rows"]) == len(methods) * 3 and set(result["methods"]) == set(methods)
    identity = {r["method"]: r for r in result["rows"] if r["transform"] == "identity"}
    for method in ("pixels", "hamming", "latent", "hybrid"):  # a copy's own file: found first
        assert identity[method]["recall_at_1"] == 1.0, method
    assert all(0 <= r[m] <= 1 for r in result["rows"] for m in ("recall_at_1", "recall_at_10", "recall_at_threshold"))
    assert (tmp_path / "dup.md").read_text() == text
    assert "Command: `the command`" in text and "### recall@1" in text and "| shift 2px |" in text and "issue 13 goals" in text


def test_bench_refuses_a_missing_store_before_running_any_baseline(tmp_path, monkeypatch):
    import hashae.index.bench_duplicates as bench

    monkeypatch.setattr(bench, "load_data", lambda options: pytest.fail("the data was loaded before the store was checked"))
    with pytest.raises(HashaeError, match="hashae index"):
        bench.run_duplicates_bench(DuplicatesBenchOptions(store=tmp_path / "nowhere", methods=("phash", "hybrid")))


# ----------------------------------------------------------------------------------------------
# training for copies (issue 13): the augmentation a model's encoder sees, per-image standardisation


def _images(n=6, size=12, seed=0):
    import torch

    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, size, size), np.float32)
    x[:, :, 3:9, 4:8] = rng.uniform(0.3, 1.0, (n, 1, 6, 4))  # a bright block away from the edges
    return torch.from_numpy(x)


def test_an_augmentation_of_nothing_returns_the_batch_itself():
    from hashae.variants.config import Augmentation

    x = _images()
    assert not Augmentation().active
    assert Augmentation().apply(x) is x


def test_a_shift_only_augmentation_moves_each_image_by_whole_pixels_within_its_range():
    import torch

    from hashae.variants.config import Augmentation

    torch.manual_seed(0)
    x = _images(n=40)
    before = x.clone()
    moved = Augmentation(shift=2).apply(x)
    assert torch.equal(x, before), "the input was altered in place"
    seen = set()
    for original, copy in zip(x, moved):
        padded = torch.nn.functional.pad(original, (2, 2, 2, 2))
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                   if torch.allclose(copy, padded[:, 2 - dy : 14 - dy, 2 - dx : 14 - dx], atol=1e-5)]
        assert matches, "a copy is not a whole-pixel shift of at most 2 px"
        seen.add(matches[0])
    assert len(seen) > 5, "the shifts are not drawn per image"


def test_a_full_augmentation_keeps_shape_and_range_and_alters_every_image():
    import torch

    from hashae.variants.config import Augmentation

    torch.manual_seed(0)
    x = _images(n=32)
    copies = Augmentation(shift=2, rotate=10, scale=0.1, brightness=0.3, contrast=0.3, half_resolution=0.5, blur=0.5, noise=0.05).apply(x)
    assert copies.shape == x.shape and copies.min() >= 0 and copies.max() <= 1
    assert ((copies - x).abs().flatten(1).max(1).values > 1e-3).float().mean() > 0.9


def test_standardisation_and_augmentation_need_images_and_bad_values_are_one_line():
    from hashae.errors import ConfigError
    from hashae.variants import make_config

    with pytest.raises(ConfigError, match="need image input"):
        make_config("vae", input_shape=(20,), code_size=4, standardise_images=True, recon_loss="mse")
    with pytest.raises(ConfigError, match="augmentation: rotate must be <= 180"):
        make_config("vae", input_shape=(1, 12, 12), code_size=4, augmentation={"rotate": 200})
    with pytest.raises(ConfigError, match="augmentation with the fields"):
        make_config("vae", input_shape=(1, 12, 12), code_size=4, augmentation={"tilt": 3})


def test_a_vae_trained_on_altered_views_reconstructs_the_clean_image_and_pulls_the_means_together(build_model):
    """Training: the encoder sees the altered copy, the loss compares with the clean image, and the
    invariance and contrast terms (the latter on by default with an augmentation) appear only in
    training with an augmentation."""
    import torch

    from hashae.variants.config import Augmentation

    x = _images(n=8)
    model = build_model("vae", input_shape=(1, 12, 12), code_size=4, hidden=(16,), invariance=2.0, centre_images=False,
                        standardise_images=False, augmentation=Augmentation(shift=2, brightness=0.3))
    seen = []
    model.encoder.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    model.train()
    torch.manual_seed(1)
    out = model(x)
    assert model.config.contrast == model.config.CONTRAST_WEIGHT
    assert set(out.terms) == {"reconstruction", "kl", "invariance", "contrast"}
    assert out.terms["invariance"] > 0 and out.terms["contrast"] > 0
    # one encoder pass in training: the altered copies, then the clean images the terms tie them to
    view, clean = seen[0].reshape(2, *x.shape)
    assert not torch.allclose(view, x), "the encoder saw the clean images where the copies belong"
    assert torch.allclose(clean, x), "the clean half is not the clean images"
    logits = out.reconstruction
    clean_loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1).mean()
    assert torch.allclose(out.terms["reconstruction"], clean_loss), "the target is not the clean image"
    model.eval()
    assert set(model(x).terms) == {"reconstruction", "kl"}


def test_the_contrast_term_is_on_only_where_there_is_an_altered_copy():
    from hashae.variants import make_config

    assert make_config("vae", input_shape=(1, 12, 12), code_size=4).contrast > 0
    assert make_config("vae", input_shape=(1, 12, 12), code_size=4, augmentation={}).contrast == 0
    assert make_config("vae", input_shape=(12,), code_size=4).contrast == 0
    assert make_config("vae", input_shape=(1, 12, 12), code_size=4, augmentation={}, contrast=2.0).contrast == 2.0


def test_info_nce_is_low_when_each_row_finds_its_partner_and_high_when_the_pairs_are_shuffled():
    import torch

    from hashae.variants.base import info_nce

    u = torch.nn.functional.normalize(torch.randn(16, 8, generator=torch.Generator().manual_seed(0)), dim=1)
    matched, shuffled = info_nce(u, u, 0.1), info_nce(u, u.roll(1, dims=0), 0.1)
    assert matched < 0.5 < float(torch.log(torch.tensor(16.0))) < shuffled


def test_the_contrast_term_puts_an_altered_copy_nearest_its_own_image(build_model):
    """300 steps on 64 random images, the same seed with and without the term: with it, far more
    shifted, brightened or darkened, noisy copies have their own image's mean as the nearest one
    (0.11 without, 0.94 with, when written)."""
    import torch

    from hashae.variants.config import Augmentation

    x = _images(n=64)
    augmentation = Augmentation(shift=1, brightness=0.3, noise=0.05)
    torch.manual_seed(5)
    copies = augmentation.apply(x)
    found = {}
    for weight in (0.0, 10.0):
        torch.manual_seed(0)
        model = build_model("vae", input_shape=(1, 12, 12), code_size=16, hidden=(128,), standardise_images=False,
                            centre_images=False, augmentation=augmentation, contrast=weight)
        optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
        model.train()
        for _ in range(300):
            optimiser.zero_grad()
            model(x).loss.backward()
            optimiser.step()
        model.eval()
        nearest = torch.cdist(model.embed(copies), model.embed(x)).argmin(1)
        found[weight] = float((nearest == torch.arange(len(x))).float().mean())
    assert found[10.0] > found[0.0] + 0.3, found


def test_a_standardising_model_gives_a_brightness_or_contrast_copy_the_same_code(build_model):
    import torch

    x = _images(n=6)
    model = build_model("vae", input_shape=(1, 12, 12), code_size=4, hidden=(16,), standardise_images=True, centre_images=False).eval()
    plain = build_model("vae", input_shape=(1, 12, 12), code_size=4, hidden=(16,), standardise_images=False, centre_images=False).eval()
    darker, flatter = x * 0.7, x.mean(dim=(1, 2, 3), keepdim=True) + 0.7 * (x - x.mean(dim=(1, 2, 3), keepdim=True))
    for copy in (darker, flatter):
        assert torch.allclose(model.embed(copy), model.embed(x), atol=1e-3)
        assert not torch.allclose(plain.embed(copy), plain.embed(x), atol=1e-3)
    # the reconstruction target stays the image (pixels in [0, 1] for the BCE loss)
    assert torch.equal(model.target(x), x)


def test_centring_gives_a_shifted_copy_the_view_of_its_original():
    """An image moved by whole pixels (nothing lost at the edges) is centred onto the original's view,
    in numpy and in torch alike; an empty image stays empty."""
    import torch

    from hashae.inference import centre_images as centre_numpy
    from hashae.variants.base import centre_images as centre_torch

    x = _images(n=6).numpy()
    shifted = np.zeros_like(x)
    shifted[:, :, 2:, 1:] = x[:, :, :-2, :-1]  # 2 px down, 1 px right: the block stays inside
    np.testing.assert_allclose(centre_numpy(shifted), centre_numpy(x), atol=1e-5)
    np.testing.assert_allclose(centre_torch(torch.from_numpy(x)).numpy(), centre_numpy(x), atol=1e-5)
    assert not np.allclose(centre_numpy(x), x, atol=1e-3), "the block was already centred: the test proves nothing"
    assert not centre_numpy(np.zeros((1, 1, 12, 12), np.float32)).any()
    # a lower-contrast copy (grey background) is centred alike: its standardised view is the original's
    from hashae.inference import standardise_images

    mean = shifted.mean(axis=(1, 2, 3), keepdims=True)
    flatter = mean + 0.7 * (shifted - mean)
    np.testing.assert_allclose(standardise_images(centre_numpy(flatter)), standardise_images(centre_numpy(shifted)), atol=1e-2)


def test_zooming_gives_a_cropped_or_padded_copy_the_view_of_its_original():
    """With scale_images, a copy zoomed about its centre (a crop, a pad) and then moved comes out
    nearly as its original does (resampling apart: the mean gap is 6x smaller than without the
    zoom), in numpy and torch alike; a faint noise floor on the background barely moves the zoom."""
    import torch
    from PIL import Image

    from hashae.inference import centre_images as centre_numpy
    from hashae.inference import spread_zoom
    from hashae.variants.base import centre_images as centre_torch

    size = 60
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    blob = np.exp(-((yy - 29.5) ** 2 / 400 + (xx - 29.5) ** 2 / 260))  # a smooth elliptic blob, inside
    blob[27:32, 18:42] *= 0.4  # with a band, so the view has structure
    original = blob[None, None].astype(np.float32)
    zoomed = np.asarray(Image.fromarray(blob).resize((72, 72), Image.Resampling.BILINEAR))[6:66, 3:63]  # x1.2, cut off-centre
    copy = zoomed[None, None].astype(np.float32)

    def gap(a, b):
        return float(np.abs(a - b).mean())

    assert gap(centre_numpy(copy, scale=True), centre_numpy(original, scale=True)) < 0.025
    assert gap(centre_numpy(copy), centre_numpy(original)) > 0.06, "without the zoom the copy should differ"
    np.testing.assert_allclose(centre_torch(torch.from_numpy(copy), scale=True).numpy(), centre_numpy(copy, scale=True), atol=1e-5)
    noisy = copy + np.random.default_rng(0).uniform(0, 0.04, copy.shape).astype(np.float32)
    centroid = np.array([29.5], np.float32)
    zoom = spread_zoom(copy, centroid, centroid)[0]
    assert 0.75 < zoom < 1.33, "the zoom was clamped: the test proves nothing"
    assert abs(spread_zoom(noisy - noisy.min(), centroid, centroid)[0] / zoom - 1) < 0.03  # it takes intensities above the minimum
    assert spread_zoom(np.zeros((1, 1, 8, 8), np.float32), centroid, centroid)[0] == 1.0  # no ink: no zoom


def test_the_product_vae_on_images_is_trained_for_copies_and_on_vectors_is_not():
    from hashae.errors import ConfigError
    from hashae.variants import make_config

    images = make_config("vae", input_shape=(1, 28, 28), code_size=32)
    assert images.standardise_images and images.centre_images and images.scale_images and images.augmentation.active
    assert not make_config("vae", input_shape=(1, 28, 28), code_size=32, centre_images=False).scale_images
    with pytest.raises(ConfigError, match="needs centre_images"):
        make_config("vae", input_shape=(1, 28, 28), code_size=32, centre_images=False, scale_images=True)
    vectors = make_config("vae", input_shape=(20,), code_size=8)
    assert not vectors.standardise_images and not vectors.centre_images and not vectors.scale_images and not vectors.augmentation.active
