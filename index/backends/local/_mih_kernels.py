"""The compiled multi-index hashing kernels of index.hamming, in their own module so that a process
that only scans (a cold CLI query, a small index) never pays numba's import and kernel loading
(about 0.5 s of CPU). index.hamming imports this module on first probe.
"""

import numpy as np
from numba import njit

from hashae.index.backends.local.hamming import COST_PER_BUCKET, COST_PER_CANDIDATE_WORD, COST_PER_ROUND

# ---- compiled kernels ---------------------------------------------------------------------------
# numba: a round probes thousands of buckets and candidates; in numpy each round would cost dozens
# of array calls, more than the whole answer is allowed to take. Bit arithmetic stays in uint64:
# mixing uint64 and int64 makes numba compute in float64.

_U64 = np.uint64


@njit(cache=True, nogil=True)
def _knn_kernel(
    perm, offsets, words, by_position, bit_starts, widths, key_space, nbits, query, budget, distances, rows
):
    """Incremental multi-index k-NN (Norouzi et al., algorithm 2), k = len(rows).

    Round R covers radius R: it probes, in each table, only the buckets new at radii
    _table_radii(R), so after it every item within R has been seen. It stops as soon as the k-th
    best distance is <= R, writes the items found into distances and rows, and returns True. It
    returns False as soon as the probing spent, or certain to be spent before the k-th best is
    settled, exceeds the budget (an exhaustive scan is then cheaper).
    """
    k = len(rows)
    query_keys = _substring_keys(query, bit_starts, widths)
    heap = np.empty(k, dtype=np.int64)  # max-heap of the best keys (distance << 32 | row) so far
    size = 0
    done = np.full(len(widths), -1, dtype=np.int64)
    spent = 0.0
    for radius in range(nbits + 1):
        todo = _table_radii(radius, widths)
        buckets = _round_buckets(query_keys, widths, key_space, offsets, done, todo)
        spent += _round_cost(buckets, query.shape[1])
        if spent > budget:
            return False
        for b in range(len(buckets)):
            table = buckets[b, 0]
            for position in range(buckets[b, 1], buckets[b, 2]):
                row = perm[position]
                at = position if by_position else row
                key = (_distance(words, at, query) << 32) | row
                if size == k and key >= heap[0]:
                    continue
                if _seen_before(words, at, query_keys, table, done, todo, bit_starts, widths):
                    continue
                size = _heap_push(heap, size, key)
        done = todo
        if size == k:
            bound = heap[0] >> 32
            if bound <= radius:
                break
            still_to_probe = _bucket_count(widths, done, _table_radii(bound, widths))
            if spent + COST_PER_BUCKET * still_to_probe > budget:
                return False
    for last in range(size - 1, -1, -1):  # heapsort the answer
        distances[last], rows[last] = heap[0] >> 32, heap[0] & 0xFFFFFFFF
        _sift_down(heap, last, heap[last])
    return True


@njit(cache=True, nogil=True)
def _ball_kernel(
    perm, offsets, words, by_position, bit_starts, widths, key_space, nbits, query, radius, budget
):
    """Every item within radius, in one round; (keys, True) or (empty, False) if over budget."""
    query_keys = _substring_keys(query, bit_starts, widths)
    done = np.full(len(widths), -1, dtype=np.int64)
    todo = _table_radii(radius, widths)
    if COST_PER_BUCKET * _bucket_count(widths, done, todo) > budget:
        return np.empty(0, dtype=np.int64), False
    buckets = _round_buckets(query_keys, widths, key_space, offsets, done, todo)
    if _round_cost(buckets, query.shape[1]) > budget:
        return np.empty(0, dtype=np.int64), False
    found = np.empty(_candidate_count(buckets), dtype=np.int64)
    count = 0
    for b in range(len(buckets)):
        table = buckets[b, 0]
        for position in range(buckets[b, 1], buckets[b, 2]):
            row = perm[position]
            at = position if by_position else row
            distance = _distance(words, at, query)
            if distance > radius:
                continue
            if _seen_before(words, at, query_keys, table, done, todo, bit_starts, widths):
                continue
            found[count] = (distance << 32) | row
            count += 1
    return found[:count], True


@njit(cache=True, nogil=True)
def _table_radii(radius, widths):
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
def _bucket_count(widths, done, todo):
    """How many buckets lie within radius todo[t] but beyond done[t] of a key, summed over tables."""
    total = 0
    for t in range(len(widths)):
        for flips in range(done[t] + 1, todo[t] + 1):
            total += _binomial(widths[t], flips)
    return total


@njit(cache=True, nogil=True)
def _round_buckets(query_keys, widths, key_space, offsets, done, todo):
    """(table, first position, end position) of every bucket within radius todo[t] but beyond done[t]."""
    buckets = np.empty((_bucket_count(widths, done, todo), 3), dtype=np.int64)
    i = 0
    for t in range(len(widths)):
        for flips in range(done[t] + 1, todo[t] + 1):
            mask = (1 << flips) - 1
            while mask < 1 << widths[t]:  # every mask of `flips` bits, by Gosper's hack
                bucket = t * key_space + (query_keys[t] ^ mask)
                buckets[i, 0], buckets[i, 1], buckets[i, 2] = t, offsets[bucket], offsets[bucket + 1]
                i += 1
                if mask == 0:
                    break
                lowest = mask & -mask
                ripple = mask + lowest
                mask = (((ripple ^ mask) >> 2) // lowest) | ripple
    return buckets


@njit(cache=True, nogil=True)
def _round_cost(buckets, nwords):
    candidates = _candidate_count(buckets)
    return COST_PER_ROUND + COST_PER_BUCKET * len(buckets) + COST_PER_CANDIDATE_WORD * nwords * candidates


@njit(cache=True, nogil=True)
def _candidate_count(buckets):
    total = 0
    for b in range(len(buckets)):
        total += buckets[b, 2] - buckets[b, 1]
    return total


@njit(cache=True, nogil=True)
def _seen_before(words, at, query_keys, table, done, todo, bit_starts, widths):
    """Whether an earlier round, or an earlier table in this round, already reached this item.

    Each item is then handled once, by the first (round, table) whose probe covers it.
    """
    for t in range(len(widths)):
        reached = todo[t] if t < table else done[t]
        if t != table and reached >= 0:
            if _popcount(_U64(_substring(words, at, bit_starts[t], widths[t]) ^ query_keys[t])) <= reached:
                return True
    return False


@njit(cache=True, nogil=True)
def _substring_keys(words, bit_starts, widths):
    keys = np.empty(len(widths), dtype=np.int64)
    for t in range(len(widths)):
        keys[t] = _substring(words, 0, bit_starts[t], widths[t])
    return keys


@njit(cache=True, nogil=True)
def _substring(words, at, bit, width):
    """The `width` bits of code words[at] (big-endian uint64 words) that start `bit` bits from its top."""
    word, offset = bit // 64, bit % 64
    value = words[at, word] << _U64(offset)
    if offset + width > 64:
        value |= words[at, word + 1] >> _U64(64 - offset)
    return np.int64(value >> _U64(64 - width))


@njit(cache=True, nogil=True)
def _distance(words, at, query):
    total = 0
    for i in range(query.shape[1]):
        total += _popcount(words[at, i] ^ query[0, i])
    return total


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
