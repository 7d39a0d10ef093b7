"""The compiled multi-index hashing kernels of hamming.py, in their own module so that a process that
only scans (a cold CLI query, a small index) never pays numba's import and kernel loading (about
0.5 s of CPU). hamming.py imports this module on first probe.

Bit numbering: bit i of a code is bit i % 8 of its byte i // 8 (little-endian), so that the native
little-endian uint16/32/64 view of the packed bytes holds the same bits in the same places. A
substring is any run of bits in this numbering; the query is cut the same way, so which run is
which never shows in the results.

Table layout (see hamming._MultiIndexTables): positions t * n ... (t + 1) * n - 1 belong to table
t, grouped by bucket (bucket b = t * key_space + key, positions offsets[b] to offsets[b + 1], rows
ascending). `rows[p]` is the row at position p. `words` is what verification reads:
- by position (codes up to 64 bits): words[p] is the row's *residual* for table t: the code with
  substring t cut out, packed into as few bytes as hold it. The bucket key already gives the
  substring's distance (the number of flipped key bits), so a candidate costs one contiguous read.
- by row (longer codes): words is the codes array itself, read at rows[p].
"""

import numpy as np
from numba import njit

# Bit arithmetic stays in uint64: mixing uint64 and int64 makes numba compute in float64.
_U64 = np.uint64
_ALL_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)

# ---- table building -----------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def build_table(codes, table, start, width, key_space, by_position, rows, words, offsets):
    """Fill table `table`: its bucket offsets, its rows grouped by key, and (by position) residuals.

    Two passes over the codes (count, then place) and no copy of them: memory is what the table
    keeps plus one count per key.
    """
    n = codes.shape[0]
    counts = np.zeros(key_space, dtype=np.int64)
    for row in range(n):
        counts[_byte_bits(codes, row, start, width)] += 1
    first_bucket = table * key_space
    cursor = np.empty(key_space, dtype=np.int64)
    position = table * n
    for key in range(key_space):
        offsets[first_bucket + key] = position
        cursor[key] = position
        position += counts[key]
    offsets[first_bucket + key_space] = position  # the next table's first offset: the same number
    word_bits = _U64(words.itemsize * 8)
    word_mask = _ALL_ONES >> (_U64(64) - word_bits)
    for row in range(n):
        key = _byte_bits(codes, row, start, width)
        at = cursor[key]
        cursor[key] = at + 1
        rows[at] = row
        if by_position:
            residual = _cut(_byte_value(codes, row), start, width)
            for j in range(words.shape[1]):
                words[at, j] = (residual >> (word_bits * _U64(j))) & word_mask


# ---- search -------------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def knn_kernel(tables, query, costs, budget, distances, out_rows, work):
    """Incremental multi-index k-NN (Norouzi et al., algorithm 2), k = len(out_rows).

    Round R covers radius R: it probes, in each table, only the buckets new at radii
    table_radii(R), so after it every item within R has been seen. It stops as soon as the k-th
    best distance is <= R, writes the items found (sorted by distance, then row) into distances and
    out_rows, and returns True. Before each round it prices the round (costs: ns per round, per
    bucket, per candidate); if what probing has spent plus that round would pass `budget` (what an
    exhaustive scan costs), it returns False having written nothing. work: rounds, buckets and
    candidates spent, added to.
    """
    rows, words, by_position, offsets, widths, sub_starts, key_space, nbits = tables
    k = len(out_rows)
    query_keys, query_words = query_parts(query, tables)
    heap = np.empty(k, dtype=np.int64)  # max-heap of the best keys (distance << 32 | row) so far
    size = 0
    done = np.full(len(widths), -1, dtype=np.int64)
    spent = 0.0
    for radius in range(nbits + 1):
        todo = table_radii(radius, widths)
        buckets = round_buckets(query_keys, widths, key_space, offsets, done, todo)
        cost = round_cost(buckets, costs)
        if spent + cost > budget:
            return False
        spent += cost
        _count_work(work, buckets)
        for b in range(len(buckets)):  # inline: a call per bucket costs ~90 ns of reference counting
            table, first, end, flips = buckets[b, 0], buckets[b, 1], buckets[b, 2], buckets[b, 3]
            key_distance = flips if by_position else 0
            for position in range(first, end):
                at = position if by_position else np.int64(rows[position])
                distance = _distance(words, at, query_words, table, key_distance)
                if size == k and distance > heap[0] >> 32:
                    continue  # most candidates stop here, before their row is even read
                key = (distance << 32) | np.int64(rows[position])
                if size == k and key >= heap[0]:
                    continue
                if _seen_before(words, at, query_keys, table, done, todo, sub_starts, widths):
                    continue
                size = _heap_push(heap, size, key)
        done = todo
        if size == k and heap[0] >> 32 <= radius:
            break
    for last in range(size - 1, -1, -1):  # heapsort the answer
        distances[last], out_rows[last] = heap[0] >> 32, heap[0] & 0xFFFFFFFF
        _sift_down(heap, last, heap[last])
    return True


@njit(cache=True, nogil=True)
def ball_kernel(tables, query, radius, costs, budget, work):
    """Every item within radius, in one round: (keys distance << 32 | row, True), or (empty, False)
    as soon as the round is priced over budget."""
    rows, words, by_position, offsets, widths, sub_starts, key_space, nbits = tables
    query_keys, query_words = query_parts(query, tables)
    done = np.full(len(widths), -1, dtype=np.int64)
    todo = table_radii(radius, widths)
    if costs[1] * bucket_count(widths, done, todo) > budget:
        return np.empty(0, dtype=np.int64), False
    buckets = round_buckets(query_keys, widths, key_space, offsets, done, todo)
    if round_cost(buckets, costs) > budget:
        return np.empty(0, dtype=np.int64), False
    _count_work(work, buckets)
    found = np.empty(_candidate_count(buckets), dtype=np.int64)
    count = 0
    for b in range(len(buckets)):
        table, first, end, flips = buckets[b, 0], buckets[b, 1], buckets[b, 2], buckets[b, 3]
        for position in range(first, end):
            at = position if by_position else np.int64(rows[position])
            distance = _distance(words, at, query_words, table, flips if by_position else 0)
            if distance > radius:
                continue
            if _seen_before(words, at, query_keys, table, done, todo, sub_starts, widths):
                continue
            found[count] = (distance << 32) | np.int64(rows[position])
            count += 1
    return found[:count], True


@njit(cache=True, nogil=True)
def query_parts(query, tables):
    """A query's substring keys (m,) and, per table, the words its candidates are compared with
    (m, words per candidate): its residual by position, its whole code by row."""
    rows, words, by_position, offsets, widths, sub_starts, key_space, nbits = tables
    m = len(widths)
    code = query.reshape(1, -1)
    keys = np.empty(m, dtype=np.int64)
    start = 0
    for t in range(m):
        keys[t] = _byte_bits(code, 0, start, widths[t])
        start += widths[t]
    word_bits = words.itemsize * 8
    compared = np.zeros((m, words.shape[1]), dtype=np.uint64)
    start = 0
    for t in range(m):
        if by_position:
            residual = _cut(_byte_value(code, 0), start, widths[t])
            for j in range(words.shape[1]):
                compared[t, j] = (residual >> _U64(word_bits * j)) & (_ALL_ONES >> _U64(64 - word_bits))
        else:
            bytes_per_word = words.itemsize
            for j in range(words.shape[1]):
                for b in range(bytes_per_word):
                    compared[t, j] |= _U64(code[0, j * bytes_per_word + b]) << _U64(8 * b)
        start += widths[t]
    return keys, compared


@njit(cache=True, nogil=True)
def table_radii(radius, widths):
    """Per-table probing radii that together find every item within radius; -1: table unused.

    An item missed by every table differs from the query by at least radii[t] + 1 bits in each
    substring t, and the sum over t = 0..m-1 of (floor((radius - t) / m) + 1) is radius + 1.
    """
    m = len(widths)
    radii = np.empty(m, dtype=np.int64)
    for t in range(m):
        radii[t] = min((radius - t) // m, widths[t])
    return radii


@njit(cache=True, nogil=True)
def bucket_count(widths, done, todo):
    """How many buckets lie within radius todo[t] but beyond done[t] of a key, summed over tables."""
    total = 0
    for t in range(len(widths)):
        for flips in range(done[t] + 1, todo[t] + 1):
            total += _binomial(widths[t], flips)
    return total


@njit(cache=True, nogil=True)
def round_buckets(query_keys, widths, key_space, offsets, done, todo):
    """(table, first position, end position, flipped bits) of every bucket within radius todo[t]
    but beyond done[t] of the query's key in table t."""
    buckets = np.empty((bucket_count(widths, done, todo), 4), dtype=np.int64)
    i = 0
    for t in range(len(widths)):
        for flips in range(done[t] + 1, todo[t] + 1):
            mask = (1 << flips) - 1
            while mask < 1 << widths[t]:  # every mask of `flips` bits, by Gosper's hack
                bucket = t * key_space + (query_keys[t] ^ mask)
                buckets[i, 0], buckets[i, 1], buckets[i, 2], buckets[i, 3] = (
                    t, offsets[bucket], offsets[bucket + 1], flips
                )
                i += 1
                if mask == 0:
                    break
                lowest = mask & -mask
                ripple = mask + lowest
                mask = (((ripple ^ mask) >> 2) // lowest) | ripple
    return buckets


@njit(cache=True, nogil=True)
def round_cost(buckets, costs):
    """Nanoseconds a round is expected to take: costs = (per round, per bucket, per candidate)."""
    return costs[0] + costs[1] * len(buckets) + costs[2] * _candidate_count(buckets)


# ---- calibration (hamming._ProbeCosts also times knn_kernel itself, on doctored offsets) ----------


@njit(cache=True, nogil=True)
def repeat_rounds(query_keys, widths, key_space, offsets, done, todo, repeats):
    """round_buckets, `repeats` times; returns the buckets listed (so nothing is optimised away)."""
    total = 0
    for _ in range(repeats):
        total += len(round_buckets(query_keys, widths, key_space, offsets, done, todo))
    return total


# ---- small helpers ------------------------------------------------------------------------------


@njit(cache=True, nogil=True)
def _count_work(work, buckets):
    work[0] += 1
    work[1] += len(buckets)
    work[2] += _candidate_count(buckets)


@njit(cache=True, nogil=True)
def _candidate_count(buckets):
    total = 0
    for b in range(len(buckets)):
        total += buckets[b, 2] - buckets[b, 1]
    return total


@njit(cache=True, nogil=True)
def _distance(words, at, query_words, table, key_distance):
    total = key_distance
    for j in range(words.shape[1]):
        total += _popcount(_U64(words[at, j]) ^ query_words[table, j])
    return total


@njit(cache=True, nogil=True)
def _seen_before(words, at, query_keys, table, done, todo, sub_starts, widths):
    """Whether an earlier round, or an earlier table in this round, already reached this item.

    Each item is then handled once, by the first (round, table) whose probe covers it.
    sub_starts[table, t]: where substring t starts in the words stored for `table`.
    """
    for t in range(len(widths)):
        reached = todo[t] if t < table else done[t]
        if t != table and reached >= 0:
            substring = _word_bits(words, at, sub_starts[table, t], widths[t])
            if _popcount(_U64(substring ^ query_keys[t])) <= reached:
                return True
    return False


@njit(cache=True, nogil=True)
def _word_bits(words, at, start, width):
    """`width` (<= 16) bits of words[at] starting at bit `start` (words little-endian, any uint)."""
    word_bits = words.itemsize * 8
    value = _U64(0)
    got = 0
    index, offset = start // word_bits, start % word_bits
    while got < width:
        value |= (_U64(words[at, index]) >> _U64(offset)) << _U64(got)
        got += word_bits - offset
        offset = 0
        index += 1
    return np.int64(value & ((_U64(1) << _U64(width)) - _U64(1)))


@njit(cache=True, nogil=True)
def _byte_bits(codes, row, start, width):
    """`width` (<= 16) bits of packed code codes[row] starting at bit `start`."""
    first, last = start // 8, (start + width - 1) // 8
    value = _U64(0)
    for b in range(first, last + 1):
        value |= _U64(codes[row, b]) << _U64(8 * (b - first))
    return np.int64((value >> _U64(start % 8)) & ((_U64(1) << _U64(width)) - _U64(1)))


@njit(cache=True, nogil=True)
def _byte_value(codes, row):
    """A packed code of at most 64 bits as one integer."""
    value = _U64(0)
    for b in range(codes.shape[1]):
        value |= _U64(codes[row, b]) << _U64(8 * b)
    return value


@njit(cache=True, nogil=True)
def _cut(value, start, width):
    """value with its bits start..start + width - 1 taken out (higher bits move down)."""
    low = value & ((_U64(1) << _U64(start)) - _U64(1)) if start > 0 else _U64(0)
    high = value >> _U64(start + width) if start + width < 64 else _U64(0)
    return low | (high << _U64(start))


@njit(cache=True, nogil=True)
def _popcount(x):
    x = x - ((x >> _U64(1)) & _U64(0x5555555555555555))
    x = (x & _U64(0x3333333333333333)) + ((x >> _U64(2)) & _U64(0x3333333333333333))
    x = (x + (x >> _U64(4))) & _U64(0x0F0F0F0F0F0F0F0F)
    return np.int64((x * _U64(0x0101010101010101)) >> _U64(56))


@njit(cache=True, nogil=True)
def _binomial(n, r):
    result = 1
    for i in range(r):
        result = result * (n - i) // (i + 1)
    return result


@njit(cache=True, nogil=True)
def _heap_push(heap, size, key):
    """Insert key into the max-heap heap[:size] holding at most len(heap) keys; returns the new size."""
    if size < len(heap):
        i = size
        size += 1
        while i > 0 and heap[(i - 1) // 2] < key:
            heap[i] = heap[(i - 1) // 2]
            i = (i - 1) // 2
        heap[i] = key
        return size
    _sift_down(heap, size, key)
    return size


@njit(cache=True, nogil=True)
def _sift_down(heap, size, key):
    """Replace the largest key of the max-heap heap[:size] by key, keeping it a heap."""
    i = 0
    while True:
        child = 2 * i + 1
        if child >= size:
            break
        if child + 1 < size and heap[child + 1] > heap[child]:
            child += 1
        if heap[child] <= key:
            break
        heap[i] = heap[child]
        i = child
    heap[i] = key
