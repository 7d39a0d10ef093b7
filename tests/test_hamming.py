"""HammingIndex against brute force (codes.hamming_distances), ties included, on seeded clustered data."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

import hashae.index.backends.local.hamming as hamming
from hashae.codes import hamming_distances, pack_bits
from hashae.errors import CodeError, HashaeError
from hashae.index.backends.local.hamming import DuplicateIdError, HammingIndex, IndexFileError, UnknownIdError

BITS = (16, 32, 64, 128)
STRATEGIES = ("auto", "probe", "scan")


def clustered_codes(rng: np.random.Generator, n: int, nbits: int, *, clusters: int = 8, flip: float = 0.04):
    """Codes near a few centres, a tenth of them exact copies of others: many distance ties."""
    centres = rng.random((clusters, nbits)) < 0.5
    bits = centres[rng.integers(0, clusters, n)] ^ (rng.random((n, nbits)) < flip)
    copies = rng.choice(n, n // 10, replace=False)
    bits[copies] = bits[rng.integers(0, n, len(copies))]
    return pack_bits(bits)


pytestmark = pytest.mark.usefixtures("one_faiss_thread")


@pytest.fixture(scope="module", params=BITS)
def data(request):
    """(nbits, codes, ids, queries): 1,200 codes under scattered int64 ids, 12 queries."""
    nbits = request.param
    rng = np.random.default_rng(nbits)
    codes = clustered_codes(rng, 1212, nbits)
    ids = rng.choice(2**40, 1200, replace=False).astype(np.int64)
    return nbits, codes[:1200], ids, codes[1200:]


@pytest.fixture(scope="module")
def index(data):
    nbits, codes, ids, _ = data
    built = HammingIndex(nbits)
    built.add(codes, ids)
    return built


def brute_force(queries, codes, ids):
    """Per query: all (distances, ids) sorted by (distance, id)."""
    distances = hamming_distances(queries, codes)
    results = []
    for row in distances:
        order = np.lexsort((ids, row))
        results.append((row[order], ids[order]))
    return results


# ---- exactness against brute force -----------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_knn_equals_brute_force_with_id_tie_break(data, index, strategy):
    nbits, codes, ids, queries = data
    truth = brute_force(queries, codes, ids)
    for k in (1, 10, 60):
        distances, found = index.search(queries, k=k, strategy=strategy)
        assert distances.dtype == np.int32 and found.dtype == np.int64
        assert distances.shape == found.shape == (len(queries), k)
        for (true_distances, true_ids), d, i in zip(truth, distances, found):
            np.testing.assert_array_equal(d, true_distances[:k])
            np.testing.assert_array_equal(i, true_ids[:k])


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_ball_equals_brute_force(data, index, strategy):
    nbits, codes, ids, queries = data
    truth = brute_force(queries, codes, ids)
    for radius in (0, 1, 2, 3, nbits // 8, nbits):
        balls = index.range_search(queries, radius=radius, strategy=strategy)
        assert len(balls) == len(queries)
        for (true_distances, true_ids), (d, i) in zip(truth, balls):
            inside = true_distances <= radius
            assert d.dtype == np.int32 and i.dtype == np.int64
            np.testing.assert_array_equal(d, true_distances[inside])
            np.testing.assert_array_equal(i, true_ids[inside])
            assert len(np.unique(i)) == len(i)


def test_scan_past_the_counting_limit_takes_two_exact_passes(data, index, monkeypatch):
    nbits, codes, ids, queries = data
    monkeypatch.setattr(hamming, "SCAN_COUNTING_MAX_K", 5)
    assert hamming._FlatScanner.passes(6) == 2
    truth = brute_force(queries, codes, ids)
    distances, found = index.search(queries, k=40, strategy="scan")
    for (true_distances, true_ids), d, i in zip(truth, distances, found):
        np.testing.assert_array_equal(d, true_distances[:40])
        np.testing.assert_array_equal(i, true_ids[:40])


def test_ball_never_shrinks_as_radius_grows_and_ends_with_everything(data, index):
    nbits, codes, _, queries = data
    for query in queries[:3]:
        previous = set()
        for radius in [*range(min(nbits, 24) + 1), nbits]:
            (_, found), = index.range_search(query[None], radius=radius, strategy="probe")
            assert previous <= set(found.tolist())
            previous = set(found.tolist())
        assert len(previous) == len(codes)


def assert_probing_is_exact(index, db_codes, ids, query_codes, *, k: int, radius: int) -> None:
    """index (empty) filled with db_codes under ids: its probing k-NN and radius search equal brute force."""
    index.add(db_codes, ids)
    truth = brute_force(query_codes, db_codes, ids)
    distances, found = index.search(query_codes, k=k, strategy="probe")
    balls = index.range_search(query_codes, radius=radius, strategy="probe")
    for (true_distances, true_ids), d, i, ball in zip(truth, distances, found, balls):
        np.testing.assert_array_equal(d, true_distances[:k])
        np.testing.assert_array_equal(i, true_ids[:k])
        np.testing.assert_array_equal(ball[1], true_ids[true_distances <= radius])


@pytest.mark.parametrize("nbits", [8, 24, 72])
def test_code_lengths_that_pad_their_words(nbits):
    rng = np.random.default_rng(nbits)
    codes = clustered_codes(rng, 610, nbits)
    ids = np.arange(600, dtype=np.int64)
    assert_probing_is_exact(HammingIndex(nbits), codes[:600], ids, codes[600:], k=15, radius=3)


def test_uneven_substrings_that_straddle_bytes():
    rng = np.random.default_rng(5)
    codes = clustered_codes(rng, 810, 64)
    ids = np.arange(800, dtype=np.int64) * 3
    index = HammingIndex(64, substrings=5)  # widths 13, 13, 13, 13, 12
    assert_probing_is_exact(index, codes[:800], ids, codes[800:], k=25, radius=6)


def test_identical_codes_are_ordered_by_smallest_id():
    codes = np.full((50, 4), 0xA5, dtype=np.uint8)
    ids = np.arange(1000, 950, -1, dtype=np.int64)
    index = HammingIndex(32)
    index.add(codes, ids)
    for strategy in STRATEGIES:
        distances, found = index.search(codes[:1], k=5, strategy=strategy)
        np.testing.assert_array_equal(distances[0], [0] * 5)
        np.testing.assert_array_equal(found[0], [951, 952, 953, 954, 955])


# ---- probing versus scanning ------------------------------------------------------------------


def count_calls(monkeypatch, owner, name):
    calls = []
    original = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def test_auto_probes_a_large_clustered_index_and_scans_a_small_one(monkeypatch):
    rng = np.random.default_rng(11)
    big = clustered_codes(rng, 60_000, 32, clusters=200, flip=0.03)
    large = HammingIndex(32)
    large.add(big, np.arange(len(big)))
    large.search(big[:1], k=10)  # the first "auto" search times probing and scanning on this index
    probes = count_calls(monkeypatch, hamming._MultiIndexTables, "knn")
    scans = count_calls(monkeypatch, hamming._FlatScanner, "knn")

    large.search(big[:5], k=10)
    assert (len(probes), len(scans)) == (5, 0)

    small = HammingIndex(32)  # below MIN_ITEMS_TO_PROBE: scanned without loading the kernels
    small.add(big[:5000], np.arange(5000))
    small.search(big[:5], k=10)
    assert (len(probes), len(scans)) == (5, 5)


def test_probing_gives_way_to_the_scan_when_it_would_cost_more(monkeypatch):
    rng = np.random.default_rng(12)
    uniform = rng.integers(0, 256, (30_000, 16), dtype=np.uint8)  # 10-NN ~45 bits away: probing is hopeless
    index = HammingIndex(128)
    index.add(uniform, np.arange(len(uniform)))
    index.search(uniform[:1], k=10)  # the first "auto" search times probing and scanning on this index
    probes = count_calls(monkeypatch, hamming._MultiIndexTables, "knn")
    scans = count_calls(monkeypatch, hamming._FlatScanner, "knn")
    distances, found = index.search(uniform[:3], k=10)
    assert len(probes) == len(scans) == 3  # tried, then gave up
    forced_distances, forced_found = index.search(uniform[:3], k=10, strategy="probe")
    np.testing.assert_array_equal(distances, forced_distances)
    np.testing.assert_array_equal(found, forced_found)


def test_measured_costs_are_positive_and_price_the_scan_by_size():
    rng = np.random.default_rng(13)
    index = HammingIndex(32)
    index.add(clustered_codes(rng, 40_000, 32, clusters=100), np.arange(40_000))
    index.search(clustered_codes(rng, 1, 32), k=5)
    costs = index._costs_cache  # measured once, on this index, by the first "auto" search
    assert costs is not None and np.isfinite(costs.probe).all() and (costs.probe[1:] > 0).all()
    assert costs.scan_per_code > 0 and np.isfinite(costs.scan_per_call)
    assert index._scan_cost(costs, 2) == pytest.approx(2 * index._scan_cost(costs, 1))


@pytest.mark.parametrize("scan_is_cheap", [True, False])
def test_auto_chooses_by_the_measured_costs(monkeypatch, scan_is_cheap):
    """The same index and queries: auto scans when the measurements say scanning is cheap, probes
    when they say it is dear, and answers exactly like both forced strategies either way."""
    rng = np.random.default_rng(14)
    codes = clustered_codes(rng, 30_010, 32, clusters=50)
    dear, cheap = 1e6, 1e-6
    measured = hamming._ProbeCosts(
        probe=np.array([1.0, 1.0, 1.0]) * (dear if scan_is_cheap else cheap),
        scan_per_call=1.0, scan_per_code=cheap if scan_is_cheap else dear,
    )
    monkeypatch.setattr(hamming._ProbeCosts, "measure", classmethod(lambda cls, tables, codes: measured))
    index = HammingIndex(32)
    index.add(codes[:30_000], np.arange(30_000) * 7)
    probes = count_calls(monkeypatch, hamming._MultiIndexTables, "knn")
    scans = count_calls(monkeypatch, hamming._FlatScanner, "knn")
    auto = index.search(codes[30_000:], k=25)
    assert (len(probes), len(scans)) == ((10, 10) if scan_is_cheap else (10, 0))
    for strategy in ("probe", "scan"):
        for a, b in zip(auto, index.search(codes[30_000:], k=25, strategy=strategy)):
            np.testing.assert_array_equal(a, b)
    ball_scans = count_calls(monkeypatch, hamming._FlatScanner, "ball")
    balls = index.range_search(codes[30_000:], radius=2)
    assert len(ball_scans) == (10 if scan_is_cheap else 0)
    for (d, i), (fd, fi) in zip(balls, index.range_search(codes[30_000:], radius=2, strategy="probe")):
        np.testing.assert_array_equal(d, fd)
        np.testing.assert_array_equal(i, fi)


# ---- edges ------------------------------------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_empty_index(strategy):
    index = HammingIndex(32)
    queries = np.zeros((2, 4), dtype=np.uint8)
    distances, ids = index.search(queries, k=3, strategy=strategy)
    np.testing.assert_array_equal(distances, np.full((2, 3), -1))
    np.testing.assert_array_equal(ids, np.full((2, 3), -1))
    for d, i in index.range_search(queries, radius=32, strategy=strategy):
        assert len(d) == len(i) == 0 and d.dtype == np.int32 and i.dtype == np.int64
    assert index.ntotal == 0


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_k_larger_than_ntotal_pads_with_minus_one(strategy):
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (4, 2), dtype=np.uint8)
    index = HammingIndex(16)
    index.add(codes, np.array([7, 3, 9, 1]))
    distances, ids = index.search(codes[:1], k=6, strategy=strategy)
    assert sorted(ids[0, :4].tolist()) == [1, 3, 7, 9]
    np.testing.assert_array_equal(ids[0, 4:], [-1, -1])
    np.testing.assert_array_equal(distances[0, 4:], [-1, -1])
    assert (np.diff(distances[0, :4]) >= 0).all()


def test_remove_then_search(data):
    nbits, codes, ids, queries = data
    index = HammingIndex(nbits)
    index.add(codes, ids)
    index.search(queries[:1], k=1)  # build the tables, so that removing must drop them
    gone = ids[::3]
    assert index.remove(np.concatenate([gone, [-5, -6]])) == len(gone)
    assert index.remove(gone[:4]) == 0
    keep = np.ones(len(ids), dtype=bool)
    keep[::3] = False
    truth = brute_force(queries, codes[keep], ids[keep])
    for strategy in STRATEGIES:
        distances, found = index.search(queries, k=15, strategy=strategy)
        for (true_distances, true_ids), d, i in zip(truth, distances, found):
            np.testing.assert_array_equal(d, true_distances[:15])
            np.testing.assert_array_equal(i, true_ids[:15])
    assert index.ntotal == keep.sum()


def test_add_in_batches_equals_add_at_once(data, index):
    nbits, codes, ids, queries = data
    batched = HammingIndex(nbits)
    for part in np.array_split(np.arange(len(ids)), 3):
        batched.add(codes[part], ids[part])
        batched.search(queries[:1], k=1)
    for a, b in zip(batched.search(queries, k=20), index.search(queries, k=20)):
        np.testing.assert_array_equal(a, b)


def test_codes_of_returns_the_stored_codes(data, index):
    _, codes, ids, _ = data
    np.testing.assert_array_equal(index.codes_of(ids[[5, 0, 9]]), codes[[5, 0, 9]])
    with pytest.raises(UnknownIdError, match="123") as raised:
        index.codes_of(np.array([ids[0], 123]))
    assert isinstance(raised.value, KeyError) and isinstance(raised.value, HashaeError)


# ---- serialisation ----------------------------------------------------------------------------


def test_bytes_round_trip(data, index):
    nbits, codes, ids, queries = data
    restored = HammingIndex.from_bytes(index.to_bytes())
    assert (restored.nbits, restored.ntotal, restored.substrings) == (nbits, len(ids), index.substrings)
    np.testing.assert_array_equal(restored.codes_of(ids), codes)
    for a, b in zip(restored.search(queries, k=12), index.search(queries, k=12)):
        np.testing.assert_array_equal(a, b)


def test_empty_index_round_trip_keeps_substrings():
    restored = HammingIndex.from_bytes(HammingIndex(64, substrings=5).to_bytes())
    assert (restored.nbits, restored.ntotal, restored.substrings) == (64, 0, 5)


def test_damaged_bytes_raise_index_file_error(data, index):
    blob = index.to_bytes()
    for cut in (0, 10, 24, len(blob) // 2, len(blob) - 1):
        with pytest.raises(IndexFileError, match="truncated"):
            HammingIndex.from_bytes(blob[:cut])
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x10
    with pytest.raises(IndexFileError, match="checksum"):
        HammingIndex.from_bytes(bytes(flipped))
    with pytest.raises(IndexFileError, match="not a hashae"):
        HammingIndex.from_bytes(b"NOTANIDX" + blob[8:])
    newer = bytearray(blob)
    newer[8] = 99  # format version
    with pytest.raises(IndexFileError, match="version 99"):
        HammingIndex.from_bytes(bytes(newer))
    assert issubclass(IndexFileError, HashaeError)


# ---- compact layout ---------------------------------------------------------------------------

ID_KINDS = {
    "consecutive": lambda n: np.arange(n, dtype=np.int64) + 1_000,  # stored as nothing
    "span under 2**32": lambda n: np.arange(n, dtype=np.int64) * 3 - 2**40,  # uint32 offsets
    "span over 2**32": lambda n: np.arange(n, dtype=np.int64) * 2**30 - 2**50,  # int64
}
ID_BYTES = {"consecutive": 0, "span under 2**32": 4, "span over 2**32": 8}


@pytest.mark.parametrize("kind", ID_KINDS)
def test_ids_are_stored_compactly_and_answer_alike(kind):
    rng = np.random.default_rng(21)
    codes = clustered_codes(rng, 3_012, 32)
    ids = ID_KINDS[kind](3_000)
    index = HammingIndex(32)
    index.add(codes[:3_000], ids)
    assert index.nbytes == 3_000 * (4 + ID_BYTES[kind])
    np.testing.assert_array_equal(index.ids(), ids)
    asked = np.array([ids[7], ids[7] + 1, ids[7] - 1, ids[-1], ids[-1] + 1, ids[0] - 1, -(2**63), 2**63 - 1])
    np.testing.assert_array_equal(index.contains(asked), np.isin(asked, ids))
    restored = HammingIndex.from_bytes(index.to_bytes())
    assert restored.nbytes == index.nbytes
    assert len(index.to_bytes()) == hamming._HEADER.size + 3_000 * (4 + ID_BYTES[kind]) + hamming._CHECKSUM.size
    assert_probing_is_exact(HammingIndex(32), codes[:3_000], ids, codes[3_000:], k=20, radius=3)
    for a, b in zip(restored.search(codes[3_000:], k=20), index.search(codes[3_000:], k=20, strategy="scan")):
        np.testing.assert_array_equal(a, b)


def test_tables_hold_rows_and_residuals_in_the_fewest_bytes():
    """32 bits, 2 tables: per code 4 bytes of code, 2 x 4 of uint32 rows, 2 x 2 of 16-bit residuals."""
    rng = np.random.default_rng(22)
    n = 5_000
    index = HammingIndex(32)
    index.add(clustered_codes(rng, n, 32), np.arange(n))
    index.search(index.codes_of(np.array([0])), k=1, strategy="probe")
    offsets = (2 * 2**16 + 1) * 4  # uint32, one per bucket of each table
    assert index.nbytes == n * (4 + 2 * 4 + 2 * 2) + offsets
    tables = index._tables_cache
    assert tables.rows.dtype == np.uint32 and tables.words.dtype == np.uint16 and tables.words.shape == (2 * n, 1)


def test_insertions_between_stored_ids_keep_rows_in_id_order():
    rng = np.random.default_rng(23)
    codes = clustered_codes(rng, 2_010, 32)
    ids = np.arange(2_000, dtype=np.int64) * 5
    index = HammingIndex(32)
    for part in (slice(1, None, 2), slice(0, None, 4), slice(2, None, 4)):  # odd rows, then between them
        index.search(codes[2_000:2_001], k=3, strategy="probe")  # tables built, then dropped by the add
        index.add(codes[:2_000][part], ids[part])
    np.testing.assert_array_equal(index.ids(), ids)
    np.testing.assert_array_equal(index.codes_of(ids), codes[:2_000])
    assert index.nbytes == 2_000 * (4 + 4)
    with pytest.raises(DuplicateIdError, match="already in the index: 5"):
        index.add(codes[:2], np.array([5, 6]))
    truth = brute_force(codes[2_000:], codes[:2_000], ids)
    for strategy in STRATEGIES:
        distances, found = index.search(codes[2_000:], k=30, strategy=strategy)
        for (true_distances, true_ids), d, i in zip(truth, distances, found):
            np.testing.assert_array_equal(d, true_distances[:30])
            np.testing.assert_array_equal(i, true_ids[:30])


def test_negative_ids():
    rng = np.random.default_rng(24)
    codes = clustered_codes(rng, 510, 16)
    ids = rng.choice(np.arange(-1_000, 1_000), 500, replace=False)
    assert_probing_is_exact(HammingIndex(16), codes[:500], ids, codes[500:], k=12, radius=2)


def test_format_version_1_still_loads(data, index):
    nbits, codes, ids, queries = data
    body = hamming._HEADER_V1.pack(hamming._MAGIC, 1, index.substrings, nbits, len(ids))
    body += np.sort(ids).astype("<i8").tobytes() + index.codes_of(np.sort(ids)).tobytes()
    old = HammingIndex.from_bytes(body + hamming._CHECKSUM.pack(zlib.crc32(body)))
    assert (old.nbits, old.ntotal, old.substrings) == (nbits, len(ids), index.substrings)
    for a, b in zip(old.search(queries, k=12), index.search(queries, k=12)):
        np.testing.assert_array_equal(a, b)


def test_loading_bytes_keeps_views_and_a_bytearray_is_copied(data, index):
    nbits, codes, ids, queries = data
    blob = index.to_bytes()
    viewed = HammingIndex.from_bytes(blob)
    assert not viewed._codes.flags.writeable  # a view into blob, never written in place
    mutable = bytearray(blob)
    copied = HammingIndex.from_bytes(mutable)
    mutable[hamming._HEADER.size :] = bytes(len(mutable) - hamming._HEADER.size)
    np.testing.assert_array_equal(copied.codes_of(ids), codes)
    viewed.remove(ids[:10])  # updates make new arrays
    viewed.add(codes[:10], ids[:10])
    np.testing.assert_array_equal(viewed.codes_of(ids), codes)
    for a, b in zip(viewed.search(queries, k=7, strategy="probe"), index.search(queries, k=7, strategy="scan")):
        np.testing.assert_array_equal(a, b)


# ---- refusals ---------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.int64, np.float32, np.int8, bool])
def test_wrong_dtype_is_refused(dtype):
    index = HammingIndex(32)
    with pytest.raises(CodeError, match="uint8"):
        index.add(np.zeros((3, 4), dtype=dtype), np.arange(3))
    index.add(np.zeros((3, 4), dtype=np.uint8), np.arange(3))
    with pytest.raises(CodeError, match="uint8"):
        index.search(np.zeros((1, 4), dtype=dtype), k=1)
    with pytest.raises(CodeError, match="uint8"):
        index.range_search(np.zeros((1, 4), dtype=dtype), radius=1)


def test_wrong_bit_count_is_refused():
    index = HammingIndex(32)
    with pytest.raises(CodeError, match="expected 32"):
        index.add(np.zeros((3, 8), dtype=np.uint8), np.arange(3))
    with pytest.raises(CodeError, match="expected 32"):
        index.search(np.zeros((1, 2), dtype=np.uint8), k=1)
    with pytest.raises(CodeError, match="2-D"):
        index.search(np.zeros(4, dtype=np.uint8), k=1)
    for nbits in (0, 12, -8, 8.0):
        with pytest.raises(CodeError, match="multiple of 8"):
            HammingIndex(nbits)


def test_duplicate_ids_are_refused():
    index = HammingIndex(16)
    codes = np.zeros((3, 2), dtype=np.uint8)
    with pytest.raises(DuplicateIdError, match="repeat within the batch: 4"):
        index.add(codes, np.array([4, 5, 4]))
    index.add(codes, np.array([1, 2, 3]))
    with pytest.raises(DuplicateIdError, match="already in the index: 2"):
        index.add(codes, np.array([2, 8, 9]))
    assert index.ntotal == 3


def test_bad_arguments_are_refused():
    index = HammingIndex(16)
    codes = np.zeros((2, 2), dtype=np.uint8)
    with pytest.raises(ValueError, match="one id per code"):
        index.add(codes, np.array([1]))
    with pytest.raises(ValueError, match="integers"):
        index.add(codes, np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="k must be at least 1"):
        index.search(codes, k=0)
    with pytest.raises(ValueError, match="radius"):
        index.range_search(codes, radius=-1)
    with pytest.raises(ValueError, match="strategy"):
        index.search(codes, k=1, strategy="fast")
    with pytest.raises(ValueError, match="substrings"):
        HammingIndex(64, substrings=3)  # 22-bit substrings: over the 16-bit limit


def test_nbytes_counts_the_built_structures(data):
    nbits, codes, ids, queries = data
    index = HammingIndex(nbits)
    index.add(codes, ids)
    stored = index.nbytes
    assert stored == codes.nbytes + ids.nbytes
    index.search(queries[:1], k=1, strategy="probe")
    assert index.nbytes > stored
