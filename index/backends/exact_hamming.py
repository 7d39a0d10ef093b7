"""The exact Hamming index the local store searches with (multi-index hashing, results identical to
brute force, ties by id), for read views over arrays that no store holds (index/array_view.py):
the bench times the look-up users get, not a twin of it."""

from hashae.index.backends.local.hamming import HammingIndex

__all__ = ["HammingIndex"]
