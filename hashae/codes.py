"""The one canonical form of binary codes: packed per row, uint8 (n, nbits // 8), nbits % 8 == 0.

Bits are packed big-endian within each byte (numpy.packbits default), along the last axis only, so
rows never bleed into each other. This is the layout FAISS binary indexes expect.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hashae.errors import CodeError


def check_nbits(nbits: int) -> int:
    """Return nbits if it is a positive multiple of 8, else raise CodeError."""
    if not isinstance(nbits, (int, np.integer)) or nbits <= 0 or nbits % 8:
        raise CodeError(f"code length must be a positive multiple of 8 bits, got {nbits!r}")
    return int(nbits)


def check_codes(codes: np.ndarray, *, nbits: int | None = None) -> np.ndarray:
    """Validate packed codes: a 2-D C-contiguous uint8 array, optionally of exactly nbits per row.

    Wrong dtypes are refused, never cast: a float or int64 array here is a bug upstream.
    """
    if not isinstance(codes, np.ndarray):
        raise CodeError(f"codes must be a numpy uint8 array, got {type(codes).__name__}")
    if codes.dtype != np.uint8:
        raise CodeError(f"codes must have dtype uint8 (packed bits), got {codes.dtype}")
    if codes.ndim != 2:
        raise CodeError(f"codes must be 2-D (n, nbytes), got shape {codes.shape}")
    if nbits is not None and codes.shape[1] * 8 != check_nbits(nbits):
        raise CodeError(f"codes have {codes.shape[1] * 8} bits per row, expected {nbits}")
    return np.ascontiguousarray(codes)


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack a boolean/0-1 array (n, nbits) into uint8 codes (n, nbits // 8), per row."""
    bits = np.asarray(bits)
    if bits.ndim != 2:
        raise CodeError(f"bits must be 2-D (n, nbits), got shape {bits.shape}")
    check_nbits(bits.shape[1])
    if bits.dtype != np.bool_:
        if not np.isin(bits, (0, 1)).all():
            raise CodeError("bits must be boolean or contain only 0 and 1")
        bits = bits.astype(bool)
    return np.packbits(bits, axis=-1)


def unpack_bits(codes: np.ndarray, *, nbits: int | None = None) -> np.ndarray:
    """Unpack uint8 codes (n, nbytes) into a bool array (n, nbits)."""
    codes = check_codes(codes, nbits=nbits)
    return np.unpackbits(codes, axis=-1).astype(bool)


def hamming_distances(query: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Hamming distances (nq, n) int32 between packed query codes (nq, B) and codes (n, B), by popcount.

    The bytes are viewed as the widest unsigned words that divide B (uint64 for 64-bit codes), so the
    XOR and popcount run on whole words."""
    query = check_codes(query)
    codes = check_codes(codes, nbits=query.shape[1] * 8)
    word = next(w for w in (8, 4, 2, 1) if query.shape[1] % w == 0)
    q_words, c_words = query.view(f"<u{word}"), codes.view(f"<u{word}")
    xor = np.bitwise_xor(q_words[:, None, :], c_words[None, :, :])  # (nq, n, B / word)
    return np.bitwise_count(xor).sum(axis=-1, dtype=np.int32)


@dataclass(frozen=True)
class CodeStats:
    """How binary a code layer has become and how well its bits are used.

    saturated_share: share of code unit activations within 0.1 of 0 or 1.
    bit_balance_std: standard deviation over bits of each bit's mean (0 = every bit is on half the time).
    mean_bit_entropy: mean over bits of the entropy (in bits) of the bit's on/off distribution; 1 is best.
    unique_codes: number of distinct codes.
    """

    saturated_share: float
    bit_balance_std: float
    mean_bit_entropy: float
    unique_codes: int

    def as_dict(self) -> dict[str, float]:
        return {
            "saturated_share": self.saturated_share,
            "bit_balance_std": self.bit_balance_std,
            "mean_bit_entropy": self.mean_bit_entropy,
            "unique_codes": self.unique_codes,
        }


def code_stats(activations: np.ndarray) -> CodeStats:
    """Statistics of code-layer activations in [0, 1], shape (n, nbits); bits are activation > 0.5."""
    act = np.asarray(activations, dtype=np.float64)
    if act.ndim != 2 or act.shape[0] == 0:
        raise CodeError(f"activations must be a non-empty 2-D array, got shape {act.shape}")
    bits = act > 0.5
    saturated = float(np.mean((act < 0.1) | (act > 0.9)))
    p = bits.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -(p * np.log2(p) + (1 - p) * np.log2(1 - p))
    ent = np.nan_to_num(ent, nan=0.0)
    unique = len(np.unique(np.packbits(bits, axis=-1), axis=0)) if bits.shape[1] % 8 == 0 else len(
        np.unique(bits, axis=0)
    )
    return CodeStats(
        saturated_share=saturated,
        bit_balance_std=float(p.std()),
        mean_bit_entropy=float(ent.mean()),
        unique_codes=int(unique),
    )
