"""Exact Hamming search over packed binary codes: multi-index hashing with a popcount-scan fallback.

Multi-index hashing (Norouzi, Punjani & Fleet, "Fast exact search in Hamming space with multi-index
hashing", TPAMI 2014) cuts each code into m disjoint substrings and keeps one hash table per
substring. The m substring distances add up to the full distance, so probing table t with every key
within floor((R - t) / m) bits of the query's substring finds every item within distance R.
Candidates are verified by a full popcount.

Memory, per code of b bits with n codes (32 bits: 16 bytes per code with consecutive ids, 20 with
ids spanning under 2**32, 24 otherwise):
- the codes, b / 8 bytes, in id order (they answer codes_of and the exhaustive scan);
- the ids, sorted: nothing when they are consecutive, 4 bytes (offsets from the smallest) when they
  span under 2**32, 8 otherwise;
- the m tables (built on first probe), in one CSR layout: per table a uint32 row per code, grouped
  by bucket, and a dense offsets array (substrings are at most 16 bits). For codes up to 64 bits
  each table also keeps, in bucket order, every code's *residual* (the code minus the table's own
  substring, b - b/m bits: 2 bytes at 32 bits), so that verifying a bucket reads contiguous memory;
  longer codes are read by row instead.
The exhaustive scan (FAISS's popcount k-NN and range search, called on the index's own array) reads
the codes in place: no second copy. Its k-NN is FAISS's counting variant, which breaks ties by the
smallest row in a single pass.

k-NN grows the covered radius one bit at a time until the k-th best candidate is certain. Before
each round it prices the round with costs measured in this process on this index (ns per round,
per bucket, per candidate, and the scan's ns per code, see _ProbeCosts); once what probing has spent
plus the next round would exceed the cost of the exhaustive scan, it scans instead. Rows are kept
sorted by id, so ordering candidates by (distance, row) breaks ties by the smallest id, exactly like
a brute-force sort.

The compiled kernels live in _mih_kernels.py (numba), imported on first probe: numba costs a fresh
process about 0.25 s of CPU to import and 0.25 s to load the cached kernels (compiling them the
first time takes several seconds); see MIN_ITEMS_TO_PROBE.
"""

from __future__ import annotations

import struct
import sys
import time
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
MAX_ITEMS = 2**32 - 1  # rows are uint32 in the tables, and the low 32 bits of a sort key
MAX_BITS_BY_POSITION = 64  # longer codes are verified by row, not from residuals in bucket order
# Below this many codes "auto" always scans (under 40 us a query): the compiled kernels then stay
# unloaded, which spares a fresh process (a CLI query) about 0.25 s of CPU.
MIN_ITEMS_TO_PROBE = 20_000
SCAN_COUNTING_MAX_K = 4096  # up to this k a k-NN scan is one pass (see _FlatScanner.knn)

_HEADER_V1 = struct.Struct("<8sHHIQ")  # magic, format version, substrings, nbits, count
_HEADER = struct.Struct("<8sHHIQB7xq")  # ... then how ids are stored, and the smallest id
_MAGIC = b"HASHAEHI"
_FORMAT_VERSION = 2  # 1: ids as int64 then codes; 2: ids compact (see _SortedIds), sections aligned
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
    Adding or removing items drops the hash tables; the next search rebuilds them (about a second
    for ten million codes), so batch your updates.
    """

    def __init__(self, nbits: int, *, substrings: int | None = None) -> None:
        """Create an empty index for nbits-bit codes (a positive multiple of 8).

        substrings: number of multi-index hash tables m, each over about nbits / m bits (at most 16).
        The default, ceil(nbits / 16), suits collections of roughly 2**16 to 2**27 codes.
        """
        self._nbits = check_nbits(nbits)
        self._layout = _SubstringLayout.split(self._nbits, substrings)
        self._ids = _SortedIds.empty()  # row i holds id self._ids.at(i)
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
        """Memory held: codes, ids, and the hash tables once built."""
        held = self._codes.nbytes + self._ids.nbytes
        if self._tables_cache is not None:
            held += self._tables_cache.nbytes
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
        if not (ids[1:] > ids[:-1]).all():
            order = np.argsort(ids, kind="stable")
            ids, codes = ids[order], codes[order]
            repeated = ids[1:][ids[1:] == ids[:-1]]
            if len(repeated):
                raise DuplicateIdError(f"ids repeat within the batch: {_preview(np.unique(repeated))}")
        if self.ntotal + len(ids) > MAX_ITEMS:
            raise ValueError(f"a HammingIndex holds at most {MAX_ITEMS} codes; shard the collection")
        if self.ntotal == 0 or ids[0] > self._ids.last:  # all after the last stored id: append
            self._codes = np.concatenate([self._codes, codes])
            self._ids = self._ids.appended(ids)
        else:
            positions = self._ids.positions(ids)
            present = ids[self._ids.found(ids, positions)]
            if len(present):
                raise DuplicateIdError(
                    f"ids already in the index: {_preview(present)}; remove them first to replace their codes"
                )
            self._codes = np.insert(self._codes, positions, codes, axis=0)
            self._ids = self._ids.inserted(positions, ids)
        self._drop_search_structures()

    def remove(self, ids: np.ndarray) -> int:
        """Remove the given ids; unknown ids are ignored. Returns how many items were removed."""
        ids = np.unique(_as_ids(ids))
        positions = self._ids.positions(ids)
        rows = positions[self._ids.found(ids, positions)]
        if len(rows):
            keep = np.ones(self.ntotal, dtype=bool)
            keep[rows] = False
            self._ids, self._codes = self._ids.kept(keep), self._codes[keep]
            self._drop_search_structures()
        return len(rows)

    def ids(self) -> np.ndarray:
        """Every stored id, int64 (n,), ascending (a copy)."""
        return self._ids.values()

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """Whether each of ids is stored: bool (n,)."""
        ids = _as_ids(ids)
        return self._ids.found(ids, self._ids.positions(ids))

    def codes_of(self, ids: np.ndarray) -> np.ndarray:
        """Packed codes (n, nbits // 8) of stored ids, in the order given; UnknownIdError if any is absent."""
        ids = _as_ids(ids)
        rows = self._ids.positions(ids)
        known = self._ids.found(ids, rows)
        if not known.all():
            raise UnknownIdError(f"ids not in the index: {_preview(ids[~known])}")
        return self._codes[rows]

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
        costs = self._probe_costs(strategy)
        results = []
        for query in queries:
            found = None
            if costs is not None:
                found = self._tables.ball(query, radius, costs=costs, budget=self._scan_cost(costs, 1))
            if found is None:
                found = self._scanner.ball(query, radius)
            results.append(((found >> 32).astype(np.int32), self._ids.at(found & 0xFFFFFFFF)))
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
        costs = self._probe_costs(strategy)
        tables = None if costs is None else self._tables
        budget = None if costs is None else self._scan_cost(costs, _FlatScanner.passes(k))
        distances = np.empty((len(queries), k), dtype=np.int32)
        rows = np.empty((len(queries), k), dtype=np.int64)
        distances.fill(-1)
        rows.fill(-1)
        work = np.zeros(3, dtype=np.int64)
        for i, query in enumerate(queries):
            probed = tables is not None and tables.knn(
                query, costs=costs, budget=budget, distances=distances[i], rows=rows[i], work=work
            )
            if not probed and self.ntotal:
                best = self._scanner.knn(query, k)
                distances[i, : len(best)], rows[i, : len(best)] = best >> 32, best & 0xFFFFFFFF
        ids = self._ids.at(rows)
        ids[rows < 0] = -1
        return distances, ids

    # ---- serialisation --------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """Serialise ids and codes into a versioned, checksummed buffer (hash tables are rebuilt).

        The buffer is assembled in one copy: peak memory is the index plus the returned bytes.
        """
        id_kind, base, id_section = self._ids.section()
        header = _HEADER.pack(_MAGIC, _FORMAT_VERSION, self.substrings, self._nbits, self.ntotal, id_kind, base)
        parts = [header, id_section, bytes(-len(id_section) % 8), memoryview(self._codes.reshape(-1))]
        checksum = 0
        for part in parts:
            checksum = zlib.crc32(part, checksum)
        return b"".join([*parts, _CHECKSUM.pack(checksum)])

    @classmethod
    def from_bytes(cls, data: bytes) -> HammingIndex:
        """Rebuild an index written by to_bytes (format version 1 or 2); IndexFileError if the buffer
        is damaged or of another version.

        Given immutable bytes, the index keeps read-only views into them rather than copies (it
        never writes in place); any other buffer is copied.
        """
        data = memoryview(data).cast("B")
        if not data.readonly:
            data = memoryview(bytes(data))
        if len(data) < _HEADER_V1.size + _CHECKSUM.size:
            raise IndexFileError(f"Hamming index data is truncated ({len(data)} bytes); rebuild the index")
        magic, version, substrings, nbits, count = _HEADER_V1.unpack_from(data)
        if magic != _MAGIC:
            raise IndexFileError("data is not a hashae Hamming index (bad magic bytes)")
        if version not in (1, _FORMAT_VERSION):
            raise IndexFileError(
                f"Hamming index format version {version} is not supported (this hashae reads "
                f"versions 1 and {_FORMAT_VERSION}); rebuild the index"
            )
        if version == 1:
            id_kind, base, ids_at = _IDS_INT64, 0, _HEADER_V1.size
        elif len(data) < _HEADER.size + _CHECKSUM.size:
            raise IndexFileError(f"Hamming index data is truncated ({len(data)} bytes); rebuild the index")
        else:
            *_, id_kind, base = _HEADER.unpack_from(data)
            ids_at = _HEADER.size
        if id_kind not in _ID_ITEMSIZE:
            raise IndexFileError(f"Hamming index header is invalid (id storage {id_kind}); rebuild the index")
        id_bytes = count * _ID_ITEMSIZE[id_kind]
        codes_at = ids_at + id_bytes + (-id_bytes % 8 if version > 1 else 0)
        expected = codes_at + count * (nbits // 8) + _CHECKSUM.size
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
        index._ids = _SortedIds.from_section(id_kind, base, data[ids_at : ids_at + id_bytes], count)
        codes = np.frombuffer(data, dtype=np.uint8, count=count * (nbits // 8), offset=codes_at)
        index._codes = codes.reshape(count, nbits // 8)
        return index

    # ---- internals ------------------------------------------------------------------------------

    def _drop_search_structures(self) -> None:
        self._tables_cache: _MultiIndexTables | None = None
        self._scanner_cache: _FlatScanner | None = None
        self._costs_cache: _ProbeCosts | None = None

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

    def _probe_costs(self, strategy: str) -> _ProbeCosts | None:
        """How probing is priced against the scan for this strategy; None: just scan."""
        if self.ntotal == 0 or strategy == "scan":
            return None
        if strategy == "probe":
            return _FORCED_PROBING
        if self.ntotal < MIN_ITEMS_TO_PROBE:
            return None
        if self._costs_cache is None:
            self._costs_cache = _ProbeCosts.measure(self._tables, self._codes)
        return self._costs_cache

    def _scan_cost(self, costs: _ProbeCosts, passes: int) -> float:
        """What probing a query may spend (ns): what the exhaustive scan would cost."""
        return passes * (costs.scan_per_call + costs.scan_per_code * self.ntotal)

    def _check_queries(self, queries: np.ndarray, strategy: str) -> np.ndarray:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        return np.array(check_codes(queries, nbits=self._nbits), order="C")  # own, writable rows


# ---- ids ----------------------------------------------------------------------------------------

_IDS_CONSECUTIVE, _IDS_UINT32, _IDS_INT64 = 0, 1, 2
_ID_ITEMSIZE = {_IDS_CONSECUTIVE: 0, _IDS_UINT32: 4, _IDS_INT64: 8}


@dataclass(frozen=True)
class _SortedIds:
    """Strictly increasing int64 ids, held compactly: nothing when they are consecutive
    (base, base + 1, ...), uint32 offsets from base when they span under 2**32, int64 otherwise."""

    base: int  # the smallest id (0 when stored as int64)
    count: int
    offsets: np.ndarray | None  # None: consecutive; uint32 offsets from base; or the int64 ids

    @classmethod
    def empty(cls) -> _SortedIds:
        return cls(0, 0, None)

    @classmethod
    def of(cls, base: int, offsets: np.ndarray) -> _SortedIds:
        """The ids base + offsets, from strictly increasing offsets of any integer dtype."""
        count = len(offsets)
        if count == 0:
            return cls.empty()
        first, last = int(offsets[0]), int(offsets[-1])
        if last - first == count - 1:
            return cls(base + first, count, None)
        if last - first < 2**32:
            shifted = offsets - offsets.dtype.type(first) if first else offsets
            return cls(base + first, count, shifted.astype(np.uint32, copy=False))
        ids = offsets.astype(np.int64, copy=False)
        return cls(0, count, ids + base if base else ids)

    @classmethod
    def from_section(cls, kind: int, base: int, section: memoryview, count: int) -> _SortedIds:
        """Ids read back from a serialised section; IndexFileError if they are not increasing."""
        if kind == _IDS_CONSECUTIVE:
            return cls(base, count, None) if count else cls.empty()
        dtype = "<u4" if kind == _IDS_UINT32 else "<i8"
        offsets = np.frombuffer(section, dtype=dtype, count=count)
        if not (offsets[1:] > offsets[:-1]).all():
            raise IndexFileError("Hamming index ids are not strictly increasing (corrupted); rebuild the index")
        return cls.of(base, offsets)

    def __len__(self) -> int:
        return self.count

    @property
    def nbytes(self) -> int:
        return 0 if self.offsets is None else self.offsets.nbytes

    @property
    def first(self) -> int:
        return self.base if self.offsets is None or self.offsets.dtype == np.uint32 else int(self.offsets[0])

    @property
    def last(self) -> int:
        return self.base + self.count - 1 if self.offsets is None else self.base + int(self.offsets[-1])

    def values(self) -> np.ndarray:
        """Every id, int64 (count,), a fresh array."""
        if self.offsets is None:
            return np.arange(self.base, self.base + self.count, dtype=np.int64)
        return self.offsets.astype(np.int64) + self.base

    def at(self, rows: np.ndarray) -> np.ndarray:
        """Ids of rows (int64)."""
        if self.offsets is None:
            return rows + self.base
        return self.offsets[rows].astype(np.int64) + self.base

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Where each id is, or would be inserted (np.searchsorted on the ids, side left)."""
        if self.count == 0:
            return np.zeros(len(ids), dtype=np.int64)
        if self.offsets is not None and self.offsets.dtype == np.int64:
            return np.searchsorted(self.offsets, ids).astype(np.int64)
        inside = np.clip(ids, self.base, self.last) - self.base  # no overflow: within the span
        if self.offsets is not None:
            inside = np.searchsorted(self.offsets, inside.astype(np.uint32))
        return np.where(ids > self.last, self.count, np.where(ids < self.base, 0, inside)).astype(np.int64)

    def found(self, ids: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Whether each id sits at its position."""
        inside = positions < self.count
        found = np.zeros(len(ids), dtype=bool)
        found[inside] = self.at(positions[inside]) == ids[inside]
        return found

    def inserted(self, positions: np.ndarray, new: np.ndarray) -> _SortedIds:
        """These ids plus new (sorted, absent) ids, inserted at positions (as from self.positions)."""
        base = min(self.first, int(new[0])) if self.count else int(new[0])
        last = max(self.last, int(new[-1])) if self.count else int(new[-1])
        if last - base < 2**32:
            merged = np.insert(self._uint32_offsets(base), positions, (new - base).astype(np.uint32))
            return _SortedIds.of(base, merged)
        return _SortedIds.of(0, np.insert(self.values(), positions, new))

    def appended(self, new: np.ndarray) -> _SortedIds:
        """These ids plus new (sorted) ids that all come after them."""
        if self.offsets is None and (self.count == 0 or int(new[0]) == self.last + 1):
            if int(new[-1]) - int(new[0]) == len(new) - 1:  # consecutive, and continuing these
                return _SortedIds(self.base if self.count else int(new[0]), self.count + len(new), None)
        return self.inserted(np.full(len(new), self.count), new)

    def _uint32_offsets(self, base: int) -> np.ndarray:
        """The ids as uint32 offsets from base (<= self.base; the span must fit)."""
        shift = self.base - base
        if self.offsets is None:
            return np.arange(shift, shift + self.count, dtype=np.uint32)
        if self.offsets.dtype == np.uint32:
            return self.offsets + np.uint32(shift) if shift else self.offsets
        return (self.offsets - base).astype(np.uint32)

    def kept(self, keep: np.ndarray) -> _SortedIds:
        """The ids where keep is True."""
        if self.offsets is None:
            return _SortedIds.of(self.base, np.arange(self.count, dtype=np.uint32)[keep])
        return _SortedIds.of(self.base, self.offsets[keep])

    def section(self) -> tuple[int, int, memoryview | bytes]:
        """(kind, base, bytes) as serialised."""
        if self.offsets is None:
            return _IDS_CONSECUTIVE, self.base, b""
        if self.offsets.dtype == np.uint32:
            return _IDS_UINT32, self.base, memoryview(self.offsets.astype("<u4", copy=False)).cast("B")
        return _IDS_INT64, 0, memoryview(self.offsets.astype("<i8", copy=False)).cast("B")


# ---- multi-index hash tables --------------------------------------------------------------------


@dataclass(frozen=True)
class _SubstringLayout:
    """How a code is cut into m substrings: table t holds bits [starts[t], starts[t] + widths[t])
    (bit i being bit i % 8 of byte i // 8)."""

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


@dataclass(frozen=True)
class _MultiIndexTables:
    """All m hash tables in one CSR layout, probed by the compiled kernels (see _mih_kernels).

    rows[offsets[b]:offsets[b + 1]] are the rows (ascending) of bucket b = t * key_space + key.
    By position (codes up to 64 bits), words[p] is the residual of the code at position p: the code
    without table t's substring, in the fewest bytes; by row, words is the codes array itself.
    """

    rows: np.ndarray  # (m * n,) uint32
    words: np.ndarray  # (m * n, residual words) by position, or (n, words per code) by row
    by_position: bool
    offsets: np.ndarray  # (m * key_space + 1,) uint32 (int64 past 2**32 positions): half the cache lines
    widths: np.ndarray  # (m,) int64
    sub_starts: np.ndarray  # (m, m) int64: where substring s starts in the words kept for table t
    key_space: int
    nbits: int

    @classmethod
    def build(cls, codes: np.ndarray, layout: _SubstringLayout) -> _MultiIndexTables:
        kernels = _kernels()
        n, m, space = len(codes), len(layout.widths), layout.key_space
        by_position = layout.nbits <= MAX_BITS_BY_POSITION
        rows = np.empty(m * n, dtype=np.uint32)
        offsets = np.empty(m * space + 1, dtype=np.uint32 if m * n < 2**32 else np.int64)
        if by_position:
            dtype, count = _residual_words(layout.nbits - min(layout.widths))
            words = np.empty((m * n, count), dtype=dtype)
            sub_starts = [[s - (w if s > t else 0) for s in layout.starts] for t, w in zip(layout.starts, layout.widths)]
        else:
            words, sub_starts = _word_view(codes), [list(layout.starts)] * m
        for t, (start, width) in enumerate(zip(layout.starts, layout.widths)):
            kernels.build_table(codes, t, start, width, space, by_position, rows, words, offsets)
        offsets[-1] = m * n
        return cls(
            rows=rows,
            words=words,
            by_position=by_position,
            offsets=offsets,
            widths=np.array(layout.widths, dtype=np.int64),
            sub_starts=np.array(sub_starts, dtype=np.int64),
            key_space=space,
            nbits=layout.nbits,
        )

    def knn(
        self, query: np.ndarray, *, costs: _ProbeCosts, budget: float | None,
        distances: np.ndarray, rows: np.ndarray, work: np.ndarray | None = None,
    ) -> bool:
        """Write the len(rows) nearest items, sorted, into distances and rows (left as they are past
        the last item found); False, writing nothing, once probing would cost more than budget (ns).
        work (int64 (3,)), if given, is added the rounds, buckets and candidates probed."""
        work = np.zeros(3, dtype=np.int64) if work is None else work
        budget = inf if budget is None else float(budget)
        return _kernels().knn_kernel(self.kernel_tables, query, costs.probe, budget, distances, rows, work)

    def ball(self, query: np.ndarray, radius: int, *, costs: _ProbeCosts, budget: float | None) -> np.ndarray | None:
        """Sort keys of every item within radius, or None when probing would cost more than budget."""
        budget = inf if budget is None else float(budget)
        work = np.zeros(3, dtype=np.int64)
        keys, complete = _kernels().ball_kernel(self.kernel_tables, query, radius, costs.probe, budget, work)
        return np.sort(keys) if complete else None

    @property
    def kernel_tables(self) -> tuple:
        return (
            self.rows, self.words, self.by_position, self.offsets,
            self.widths, self.sub_starts, self.key_space, self.nbits,
        )

    @property
    def nbytes(self) -> int:
        """What the tables add to the codes (a by-row words array is the codes themselves)."""
        return self.rows.nbytes + self.offsets.nbytes + (self.words.nbytes if self.by_position else 0)


def _residual_words(bits: int) -> tuple[type, int]:
    """Word type and count holding `bits` bits in the fewest bytes, in the fewest words."""
    nbytes = -(-bits // 8)
    for dtype in (np.uint64, np.uint32, np.uint16, np.uint8):
        size = np.dtype(dtype).itemsize
        if nbytes % size == 0:
            return dtype, nbytes // size
    raise AssertionError("unreachable: every byte count is a whole number of uint8")


def _word_view(codes: np.ndarray) -> np.ndarray:
    """Packed codes (n, nbytes) as (n, words) of the widest native uint dividing nbytes, no copy.
    Big-endian machines get the bytes themselves, so bit i is bit i % 8 of byte i // 8 everywhere."""
    nbytes = codes.shape[1]
    for dtype in (np.uint64, np.uint32, np.uint16):
        if sys.byteorder == "little" and nbytes % np.dtype(dtype).itemsize == 0:
            view = codes.view(dtype)
            return view if view.flags.aligned else view.copy()
    return codes


# ---- exhaustive scan ----------------------------------------------------------------------------


class _FlatScanner:
    """Exhaustive popcount scan by FAISS over the index's own codes, answering in the same sort keys."""

    def __init__(self, codes: np.ndarray) -> None:
        self.codes = codes

    def ball(self, query: np.ndarray, radius: int) -> np.ndarray:
        """Keys (distance << 32 | row) of every row within radius, sorted."""
        n, nbytes = self.codes.shape
        result = faiss.RangeSearchResult(1)
        # FAISS keeps distances strictly below its radius, and returns them as floats
        faiss.hamming_range_search(faiss.swig_ptr(query), faiss.swig_ptr(self.codes), 1, n, radius + 1, nbytes, result)
        count = int(faiss.rev_swig_ptr(result.lims, 2)[1])
        keys = np.left_shift(faiss.rev_swig_ptr(result.distances, count).astype(np.int64), 32)
        keys |= faiss.rev_swig_ptr(result.labels, count)
        return np.sort(keys)

    def knn(self, query: np.ndarray, k: int) -> np.ndarray:
        """Keys of the k nearest rows, sorted by (distance, row).

        FAISS's counting k-NN (hammings_knn_mc) reads rows in order and keeps, per distance, the
        first k it meets: ties come out by smallest row, in one pass. It holds (nbits + 1) * k ids,
        so past SCAN_COUNTING_MAX_K the heap k-NN finds the k-th distance and a range search then
        gathers its ties (two passes).
        """
        k = min(k, len(self.codes))
        if k == 0:
            return _NO_KEYS
        one = query.reshape(1, -1)
        if k <= SCAN_COUNTING_MAX_K:
            distances, rows = faiss.knn_hamming(one, self.codes, k, variant="mc")
            return (distances[0].astype(np.int64) << 32) | rows[0]
        distances, _ = faiss.knn_hamming(one, self.codes, k)
        return self.ball(query, int(distances[0, -1]))[:k]

    @staticmethod
    def passes(k: int) -> int:
        """Sweeps through the codes a k-NN scan makes."""
        return 1 if k <= SCAN_COUNTING_MAX_K else 2


# ---- cost model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _ProbeCosts:
    """Nanoseconds of one core, measured in this process on this index: probing's cost per round,
    per bucket and per candidate (`probe`, as the kernels take it), and the scan's per call and per
    code. "auto" lets a query probe while what it has spent plus its next round stays under the
    cost of a scan; both sides of that comparison come from these measurements."""

    probe: np.ndarray  # float64 (3,): per round, per bucket, per candidate
    scan_per_call: float
    scan_per_code: float

    @classmethod
    def measure(cls, tables: _MultiIndexTables, codes: np.ndarray) -> _ProbeCosts:
        """Time the k-NN kernel itself on this index's tables, with doctored bucket offsets: all
        buckets empty (it then lists every bucket, radius 0 to nbits), then one bucket stretched
        over up to 2**17 positions around the query's own (one round of candidates); and the
        one-pass k-NN scan on up to 2**22 of the codes. The fastest of a few repeats of each (a shared machine
        only ever slows them down). About 10 ms at 10 million codes."""
        kernels = _kernels()

        n, widths, offsets = len(codes), tables.widths, tables.offsets
        span = min(n, 1 << 17)
        first = int(np.random.default_rng(0).integers(n - span + 1))
        query = codes[int(tables.rows[first + span // 2])].copy()  # at that position in table 0
        query_keys, _ = kernels.query_parts(query, tables.kernel_tables)
        done, first_round = np.full(len(widths), -1, dtype=np.int64), kernels.table_radii(0, widths)
        repeats = 100
        listing = lambda: kernels.repeat_rounds(query_keys, widths, tables.key_space, offsets, done, first_round, repeats)
        per_round = _fastest(listing) / repeats

        seconds, work = _timed_knn(tables, np.zeros_like(offsets), query)
        per_bucket = max(seconds - per_round * work[0], 0.0) / work[1]
        stretched = np.where(np.arange(len(offsets)) <= query_keys[0], first, first + span).astype(offsets.dtype)
        seconds, work = _timed_knn(tables, stretched, query)
        per_candidate = max(seconds - per_round * work[0] - per_bucket * work[1], 0.0) / max(work[2], 1)

        sample = _FlatScanner(codes[: min(n, 1 << 22)])
        small = _FlatScanner(codes[: min(n, 256)])
        scan_small = _fastest(lambda: small.knn(query, 10))
        scan_large = _fastest(lambda: sample.knn(query, 10))
        scan_per_code = max(scan_large - scan_small, 0.0) / max(len(sample.codes) - len(small.codes), 1)
        scan_per_call = max(scan_small - scan_per_code * len(small.codes), 0.0)
        return cls(
            probe=np.array([per_round, per_bucket, per_candidate], dtype=np.float64) * 1e9,
            scan_per_call=scan_per_call * 1e9,
            scan_per_code=scan_per_code * 1e9,
        )


def _timed_knn(tables: _MultiIndexTables, offsets: np.ndarray, query: np.ndarray) -> tuple[float, np.ndarray]:
    """Seconds of the fastest of a few 1-NN probes of query with these offsets, and the work done."""
    knn_kernel = _kernels().knn_kernel
    doctored = (tables.rows, tables.words, tables.by_position, offsets, *tables.kernel_tables[4:])
    distances, rows, work = np.empty(1, dtype=np.int32), np.empty(1, dtype=np.int64), np.zeros(3, dtype=np.int64)
    free = np.zeros(3)
    seconds = _fastest(lambda: knn_kernel(doctored, query, free, inf, distances, rows, work))
    return seconds, work // 3


_FORCED_PROBING = _ProbeCosts(probe=np.zeros(3), scan_per_call=inf, scan_per_code=inf)  # nothing is too dear


def _fastest(call, repeats: int = 3) -> float:
    """Seconds taken by the fastest of `repeats` calls."""
    best = inf
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


# ---- small helpers ------------------------------------------------------------------------------


_KERNELS = []


def _kernels():
    """The compiled kernels module, imported on first use (numba's import costs ~0.25 s of CPU)."""
    if not _KERNELS:
        from hashae.index.backends.local import _mih_kernels

        _KERNELS.append(_mih_kernels)
    return _KERNELS[0]


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
