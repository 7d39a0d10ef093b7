"""Exact Hamming search over packed binary codes: multi-index hashing with a popcount-scan fallback.

Multi-index hashing (Norouzi, Punjani & Fleet, "Fast exact search in Hamming space with multi-index
hashing", TPAMI 2014) cuts each code into m disjoint substrings and keeps one hash table per
substring. The m substring distances add up to the full distance, so probing table t with every key
within floor((R - t) / m) bits of the query's substring finds every item within distance R (see
`_table_radii`). Candidates are verified by a full popcount.

The m tables share one CSR layout, built with numpy: `perm` lists row numbers grouped by (table,
substring key) and a dense `offsets` array (substrings are at most 16 bits) says where each bucket
starts. Probing runs in small numba kernels, one call per query: in numpy, each probing round is a
few dozen array calls, and the whole answer has to fit in a few of them. numba costs a fresh
process about 0.25 s of CPU to import and 0.25 s to load the cached kernels (compiling them the
first time takes a few seconds); see MIN_ITEMS_TO_PROBE.

k-NN grows the covered radius one bit at a time until the k-th best candidate is certain. A cost
model counts what probing has spent on the query; once that exceeds the cost of an exhaustive scan
(FAISS IndexBinaryFlat), it scans instead. Rows are kept sorted by id, so ordering candidates by
(distance, row) breaks ties by the smallest id, exactly like a brute-force sort.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from math import inf
from typing import Literal

import faiss
import numpy as np

from hashae.codes import check_codes, check_nbits
from hashae.errors import HashaeError

Strategy = Literal["auto", "probe", "scan"]
STRATEGIES = ("auto", "probe", "scan")

MAX_SUBSTRING_BITS = 16  # dense bucket offsets: 2**16 entries per table
MAX_ITEMS = 2**31 - 1  # rows are int32 in the tables, and the low 32 bits of a sort key

# Cost model, in nanoseconds of one core, measured with benchmarks/bench_hamming.py (only the ratios
# matter). Probing a query gives way to the exhaustive scan as soon as the probing it has cost, or
# is certain to cost, would exceed the cost of the scan.
COST_PER_ROUND = 300  # one radius step of k-NN: bookkeeping, allocating its bucket list
COST_PER_BUCKET = 10  # computing a bucket key and reading its offsets (a likely cache miss)
COST_PER_CANDIDATE_WORD = 5  # verifying one candidate, per 64-bit word of code
COST_PER_SCANNED_CODE = 0.75  # FAISS flat scan, plus nbits / 256 per code
SCAN_PASSES = 2  # a k-NN scan is a FAISS k-NN, then a range search that orders the ties by id
COST_PER_SCAN = 5_000  # FAISS call overheads
# Below this many codes "auto" always scans (under 40 us a query): the compiled kernels then stay
# unloaded, which spares a fresh process (a CLI query) about 0.25 s of CPU.
MIN_ITEMS_TO_PROBE = 20_000

_HEADER = struct.Struct("<8sHHIQ")  # magic, format version, substrings, nbits, count
_MAGIC = b"HASHAEHI"
_FORMAT_VERSION = 1
_CHECKSUM = struct.Struct("<I")
_NO_KEYS = np.empty(0, dtype=np.int64)


class IndexFileError(HashaeError):
    """A serialised Hamming index is truncated, corrupted, or of an unknown format version."""


class DuplicateIdError(HashaeError, ValueError):
    """Ids given to HammingIndex.add are repeated or already stored."""


class UnknownIdError(HashaeError, KeyError):
    """Ids asked of HammingIndex.codes_of are not stored."""

    __str__ = Exception.__str__  # KeyError would print the message in quotes


class HammingIndex:
    """Exact Hamming-ball and k-NN search over packed uint8 codes (n, nbits // 8), keyed by int64 ids.

    Results are identical to brute force: sorted by (distance, id), ties broken by the smallest id.
    Adding or removing items drops the hash tables; the next search rebuilds them (under a second
    for a million codes), so batch your updates.
    """

    def __init__(self, nbits: int, *, substrings: int | None = None) -> None:
        """Create an empty index for nbits-bit codes (a positive multiple of 8).

        substrings: number of multi-index hash tables m, each over about nbits / m bits (at most 16).
        The default, ceil(nbits / 16), suits collections of roughly 2**16 to 2**24 codes.
        """
        self._nbits = check_nbits(nbits)
        self._layout = _SubstringLayout.split(self._nbits, substrings)
        self._ids = np.empty(0, dtype=np.int64)  # sorted ascending; row i holds id _ids[i]
        self._codes = np.empty((0, self._nbits // 8), dtype=np.uint8)
        self._drop_search_structures()

    @property
    def nbits(self) -> int:
        """Bits per code."""
        return self._nbits

    @property
    def ntotal(self) -> int:
        """Number of stored codes."""
        return len(self._ids)

    @property
    def substrings(self) -> int:
        """Number of multi-index hash tables."""
        return len(self._layout.widths)

    @property
    def nbytes(self) -> int:
        """Memory held: codes, ids, and whichever search structures are built."""
        held = self._codes.nbytes + self._ids.nbytes
        if self._tables_cache is not None:
            held += self._tables_cache.nbytes
        if self._scanner_cache is not None:
            held += self._codes.nbytes  # FAISS keeps its own copy of the codes
        return held

    # ---- mutation -------------------------------------------------------------------------------

    def add(self, codes: np.ndarray, ids: np.ndarray) -> None:
        """Store codes (n, nbits // 8) uint8 under ids (n,) int64, which must be new and unique."""
        codes = check_codes(codes, nbits=self._nbits)
        ids = _as_ids(ids)
        if len(ids) != len(codes):
            raise ValueError(f"got {len(codes)} codes but {len(ids)} ids; give one id per code")
        if len(ids) == 0:
            return
        order = np.argsort(ids, kind="stable")
        ids, codes = ids[order], codes[order]
        repeated = ids[1:][ids[1:] == ids[:-1]]
        if len(repeated):
            raise DuplicateIdError(f"ids repeat within the batch: {_preview(np.unique(repeated))}")
        present = ids[self._contains(ids)]
        if len(present):
            raise DuplicateIdError(
                f"ids already in the index: {_preview(present)}; remove them first to replace their codes"
            )
        if self.ntotal + len(ids) > MAX_ITEMS:
            raise ValueError(f"a HammingIndex holds at most {MAX_ITEMS} codes; shard the collection")
        all_ids = np.concatenate([self._ids, ids])
        order = np.argsort(all_ids, kind="stable")
        self._ids = all_ids[order]
        self._codes = np.concatenate([self._codes, codes])[order]
        self._drop_search_structures()

    def remove(self, ids: np.ndarray) -> int:
        """Remove the given ids; unknown ids are ignored. Returns how many items were removed."""
        ids = np.unique(_as_ids(ids))
        rows = np.searchsorted(self._ids, ids)[self._contains(ids)]
        if len(rows):
            keep = np.ones(self.ntotal, dtype=bool)
            keep[rows] = False
            self._ids, self._codes = self._ids[keep], self._codes[keep]
            self._drop_search_structures()
        return len(rows)

    def ids(self) -> np.ndarray:
        """Every stored id, int64 (n,), ascending (a copy)."""
        return self._ids.copy()

    def codes_of(self, ids: np.ndarray) -> np.ndarray:
        """Packed codes (n, nbits // 8) of stored ids, in the order given; UnknownIdError if any is absent."""
        ids = _as_ids(ids)
        known = self._contains(ids)
        if not known.all():
            raise UnknownIdError(f"ids not in the index: {_preview(ids[~known])}")
        return self._codes[np.searchsorted(self._ids, ids)]

    # ---- search ---------------------------------------------------------------------------------

    def range_search(
        self, queries: np.ndarray, *, radius: int, strategy: Strategy = "auto"
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Every stored item within Hamming distance <= radius of each query.

        Returns one (distances int32, ids int64) pair per query, sorted by (distance, id).
        strategy: "auto" picks hash probing or an exhaustive scan by estimated cost; "probe" or
        "scan" forces one (the results are the same).
        """
        radius = min(_check_nonnegative_int(radius, "radius"), self._nbits)
        queries = self._check_queries(queries, strategy)
        query_words = _code_words(queries)
        budget = self._probe_budget(strategy, passes=1)
        results = []
        for i in range(len(queries)):
            found = None
            if budget is not None:
                found = self._tables.ball(query_words[i : i + 1], radius, budget=budget)
            if found is None:
                found = self._scanner.ball(queries[i : i + 1], radius)
            results.append(self._distances_and_ids(found))
        return results

    def search(
        self, queries: np.ndarray, *, k: int, strategy: Strategy = "auto"
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest neighbours of each query by Hamming distance.

        Returns distances int32 (nq, k) and ids int64 (nq, k), each row sorted by (distance, id) and
        padded with distance -1 / id -1 when the index holds fewer than k items.
        strategy: "auto" picks hash probing or an exhaustive scan by estimated cost; "probe" or
        "scan" forces one (the results are the same).
        """
        if _check_nonnegative_int(k, "k") == 0:
            raise ValueError("k must be at least 1")
        queries = self._check_queries(queries, strategy)
        query_words = _code_words(queries)
        budget = self._probe_budget(strategy, passes=SCAN_PASSES)
        distances = np.full((len(queries), k), -1, dtype=np.int32)
        rows = np.full((len(queries), k), -1, dtype=np.int64)
        for i in range(len(queries)):
            probed = False
            if budget is not None:
                probed = self._tables.knn(
                    query_words[i : i + 1], budget=budget, distances=distances[i], rows=rows[i]
                )
            if not probed:
                best = self._scanner.knn(queries[i : i + 1], k)
                distances[i, : len(best)], rows[i, : len(best)] = best >> 32, best & 0xFFFFFFFF
        if self.ntotal == 0:
            return distances, rows
        return distances, np.where(rows >= 0, self._ids[rows], -1)

    # ---- serialisation --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialise ids and codes into a versioned, checksummed buffer (hash tables are rebuilt)."""
        header = _HEADER.pack(_MAGIC, _FORMAT_VERSION, self.substrings, self._nbits, self.ntotal)
        body = header + self._ids.astype("<i8").tobytes() + self._codes.tobytes()
        return body + _CHECKSUM.pack(zlib.crc32(body))

    @classmethod
    def from_bytes(cls, data: bytes) -> HammingIndex:
        """Rebuild an index written by to_bytes; IndexFileError if the buffer is damaged or unknown."""
        data = memoryview(data).cast("B")
        if len(data) < _HEADER.size + _CHECKSUM.size:
            raise IndexFileError(f"Hamming index data is truncated ({len(data)} bytes); rebuild the index")
        magic, version, substrings, nbits, count = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise IndexFileError("data is not a hashae Hamming index (bad magic bytes)")
        if version != _FORMAT_VERSION:
            raise IndexFileError(
                f"Hamming index format version {version} is not supported (this hashae reads "
                f"version {_FORMAT_VERSION}); rebuild the index"
            )
        expected = _HEADER.size + count * (8 + nbits // 8) + _CHECKSUM.size
        if len(data) != expected:
            raise IndexFileError(
                f"Hamming index data has {len(data)} bytes where its header announces {expected}: "
                "it is truncated or corrupted; rebuild the index"
            )
        (checksum,) = _CHECKSUM.unpack_from(data, expected - _CHECKSUM.size)
        if zlib.crc32(data[: expected - _CHECKSUM.size]) != checksum:
            raise IndexFileError("Hamming index data fails its checksum (corrupted); rebuild the index")
        try:
            index = cls(nbits, substrings=substrings)
        except (HashaeError, ValueError) as error:
            raise IndexFileError(f"Hamming index header is invalid ({error}); rebuild the index") from error
        ids = np.frombuffer(data, dtype="<i8", count=count, offset=_HEADER.size).astype(np.int64)
        if not (ids[1:] > ids[:-1]).all():
            raise IndexFileError("Hamming index ids are not strictly increasing (corrupted); rebuild the index")
        codes = np.frombuffer(data, dtype=np.uint8, count=count * (nbits // 8), offset=_HEADER.size + count * 8)
        index._ids, index._codes = ids, codes.reshape(count, nbits // 8).copy()
        return index

    # ---- internals ------------------------------------------------------------------------------

    def _drop_search_structures(self) -> None:
        self._tables_cache: _MultiIndexTables | None = None
        self._scanner_cache: _FlatScanner | None = None

    @property
    def _tables(self) -> _MultiIndexTables:
        if self._tables_cache is None:
            self._tables_cache = _MultiIndexTables.build(self._codes, self._layout)
        return self._tables_cache

    @property
    def _scanner(self) -> _FlatScanner:
        if self._scanner_cache is None:
            self._scanner_cache = _FlatScanner(self._codes)
        return self._scanner_cache

    def _probe_budget(self, strategy: str, *, passes: int) -> float | None:
        """What probing a query may spend: what the exhaustive scan would cost. None: just scan."""
        if self.ntotal == 0 or strategy == "scan":
            return None
        if strategy == "probe":
            return inf
        if self.ntotal < MIN_ITEMS_TO_PROBE:
            return None
        per_code = COST_PER_SCANNED_CODE + self._nbits / 256
        return passes * self.ntotal * per_code + COST_PER_SCAN

    def _check_queries(self, queries: np.ndarray, strategy: str) -> np.ndarray:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        return check_codes(queries, nbits=self._nbits)

    def _contains(self, ids: np.ndarray) -> np.ndarray:
        rows = np.searchsorted(self._ids, ids)
        inside = rows < self.ntotal
        found = np.zeros(len(ids), dtype=bool)
        found[inside] = self._ids[rows[inside]] == ids[inside]
        return found

    def _distances_and_ids(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keys (distance << 32 | row) -> (distances int32, ids int64)."""
        return (keys >> 32).astype(np.int32), self._ids[keys & 0xFFFFFFFF]


# ---- multi-index hash tables --------------------------------------------------------------------


@dataclass(frozen=True)
class _SubstringLayout:
    """How a code is cut into m substrings: table t holds bits [starts[t], starts[t] + widths[t])."""

    nbits: int
    starts: tuple[int, ...]
    widths: tuple[int, ...]

    @classmethod
    def split(cls, nbits: int, substrings: int | None) -> _SubstringLayout:
        fewest = -(-nbits // MAX_SUBSTRING_BITS)
        m = fewest if substrings is None else substrings
        if not isinstance(m, (int, np.integer)) or not fewest <= m <= nbits:
            raise ValueError(
                f"substrings must be an integer from {fewest} to {nbits} for {nbits}-bit codes "
                f"(each holds at most {MAX_SUBSTRING_BITS} bits), got {substrings!r}"
            )
        widths = tuple(nbits // m + (t < nbits % m) for t in range(m))
        starts = tuple(sum(widths[:t]) for t in range(m))
        return cls(nbits, starts, widths)

    @property
    def key_space(self) -> int:
        """Keys of table t are offset by t * key_space, so all tables share one offsets array."""
        return 1 << max(self.widths)

    def substring_keys(self, codes: np.ndarray, table: int) -> np.ndarray:
        """Keys (n,) uint16 of one table's substring of packed codes."""
        start, width = self.starts[table], self.widths[table]
        first = start // 8  # a substring of at most 16 bits spans at most 3 bytes
        window = np.zeros(len(codes), dtype=np.uint32)
        for byte in range(first, min(first + 3, codes.shape[1])):
            window |= codes[:, byte].astype(np.uint32) << (8 * (first + 2 - byte))
        return ((window >> (24 - start % 8 - width)) & ((1 << width) - 1)).astype(np.uint16)


@dataclass(frozen=True)
class _MultiIndexTables:
    """All m hash tables in one CSR layout, probed by the compiled kernels below.

    perm[offsets[b]:offsets[b + 1]] are the rows (ascending) of bucket b = t * key_space + key.
    Codes up to 64 bits are also stored in perm order (`candidate_words`, `by_position`), so that
    verifying a bucket reads contiguous memory; longer codes are read by row to save memory.
    """

    perm: np.ndarray  # (m * n,) int32
    offsets: np.ndarray  # (m * key_space + 1,) int64
    candidate_words: np.ndarray  # (m * n, 1) or (n, nwords) uint64
    by_position: bool
    bit_starts: np.ndarray  # (m,) int64, first bit of each substring within the padded words
    widths: np.ndarray  # (m,) int64
    key_space: int
    nbits: int

    @classmethod
    def build(cls, codes: np.ndarray, layout: _SubstringLayout) -> _MultiIndexTables:
        n, space = len(codes), layout.key_space
        perm = np.empty(n * len(layout.widths), dtype=np.int32)
        counts = np.zeros(space * len(layout.widths), dtype=np.int64)
        for t in range(len(layout.widths)):
            keys = layout.substring_keys(codes, t)
            perm[t * n : (t + 1) * n] = np.argsort(keys, kind="stable")  # a radix sort for uint16
            counts[t * space : (t + 1) * space] = np.bincount(keys, minlength=space)
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(counts, out=offsets[1:])
        words = _code_words(codes)
        by_position = words.shape[1] == 1
        padding_bits = words.shape[1] * 64 - layout.nbits
        return cls(
            perm=perm,
            offsets=offsets,
            candidate_words=words[perm] if by_position else words,
            by_position=by_position,
            bit_starts=np.array(layout.starts, dtype=np.int64) + padding_bits,
            widths=np.array(layout.widths, dtype=np.int64),
            key_space=layout.key_space,
            nbits=layout.nbits,
        )

    def knn(self, query_words: np.ndarray, *, budget: float, distances: np.ndarray, rows: np.ndarray) -> bool:
        """Write the len(rows) nearest items, sorted, into distances and rows (left as they are past
        the last item found); False, writing nothing, once probing has cost more than budget."""
        from hashae.index.backends.local._mih_kernels import _knn_kernel

        return _knn_kernel(*self._kernel_arguments(), query_words, float(budget), distances, rows)

    def ball(self, query_words: np.ndarray, radius: int, *, budget: float) -> np.ndarray | None:
        """Sort keys of every item within radius, or None when probing would cost more than budget."""
        from hashae.index.backends.local._mih_kernels import _ball_kernel

        keys, complete = _ball_kernel(*self._kernel_arguments(), query_words, radius, float(budget))
        return np.sort(keys) if complete else None

    @property
    def nbytes(self) -> int:
        return self.perm.nbytes + self.offsets.nbytes + self.candidate_words.nbytes

    def _kernel_arguments(self) -> tuple:
        return (
            self.perm, self.offsets, self.candidate_words, self.by_position,
            self.bit_starts, self.widths, self.key_space, self.nbits,
        )


# ---- exhaustive scan ----------------------------------------------------------------------------


class _FlatScanner:
    """Exhaustive popcount scan by FAISS IndexBinaryFlat, answering in the same sort keys."""

    def __init__(self, codes: np.ndarray) -> None:
        self.flat = faiss.IndexBinaryFlat(codes.shape[1] * 8)
        self.flat.add(codes)

    def ball(self, query: np.ndarray, radius: int) -> np.ndarray:
        # FAISS range search keeps distances strictly below its radius, and returns them as floats
        _, distances, rows = self.flat.range_search(query, radius + 1)
        keys = np.left_shift(distances.astype(np.int64), 32)
        keys |= rows
        return np.sort(keys)

    def knn(self, query: np.ndarray, k: int) -> np.ndarray:
        """FAISS finds the k-th distance; a range search then gathers all its ties to order them by id."""
        if self.flat.ntotal == 0:
            return _NO_KEYS
        distances, _ = self.flat.search(query, min(k, self.flat.ntotal))
        return self.ball(query, int(distances[0, -1]))[:k]


# ---- small helpers ------------------------------------------------------------------------------


def _code_words(codes: np.ndarray) -> np.ndarray:
    """Packed codes (n, nbytes) as (n, ceil(nbytes / 8)) uint64 words: one big-endian integer,
    zero-padded in front to a whole number of words."""
    n, nbytes = codes.shape
    padded = np.zeros((n, nbytes + -nbytes % 8), dtype=np.uint8)
    padded[:, -nbytes:] = codes
    return padded.view(">u8").astype(np.uint64)


def _as_ids(ids) -> np.ndarray:
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {ids.shape}")
    if len(ids) == 0:
        return ids.astype(np.int64)
    if ids.dtype.kind not in "iu":
        raise ValueError(f"ids must be integers (SQLite row ids), got dtype {ids.dtype}")
    if ids.dtype == np.uint64 and ids.max() > np.iinfo(np.int64).max:
        raise ValueError("ids must fit in int64")
    return ids.astype(np.int64, copy=False)


def _check_nonnegative_int(value: int, name: str) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _preview(values: np.ndarray, limit: int = 5) -> str:
    shown = ", ".join(str(v) for v in values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")
