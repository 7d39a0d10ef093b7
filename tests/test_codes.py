"""The canonical binary code form: packing, unpacking, Hamming distances and code statistics."""

from __future__ import annotations

import numpy as np
import pytest

from hashae.codes import CodeError, check_nbits, code_stats, hamming_distances, pack_bits, unpack_bits

NBITS = [8, 16, 24, 32, 64, 128, 256]


@pytest.mark.parametrize("nbits", NBITS)
def test_pack_unpack_round_trip(nbits: int) -> None:
    bits = np.random.default_rng(nbits).random((37, nbits)) < 0.5
    codes = pack_bits(bits)
    assert codes.dtype == np.uint8 and codes.shape == (37, nbits // 8)
    np.testing.assert_array_equal(unpack_bits(codes, nbits=nbits), bits)
    np.testing.assert_array_equal(unpack_bits(codes), bits)


@pytest.mark.parametrize("nbits", NBITS)
def test_rows_do_not_bleed(nbits: int) -> None:
    """Each packed row depends on its own bits only: one all-ones row between all-zero rows."""
    bits = np.zeros((3, nbits), dtype=bool)
    bits[1] = True
    codes = pack_bits(bits)
    np.testing.assert_array_equal(codes[[0, 2]], 0)
    np.testing.assert_array_equal(codes[1], 255)
    mixed = np.random.default_rng(0).random((5, nbits)) < 0.5
    packed = pack_bits(mixed)
    for i in range(len(mixed)):
        np.testing.assert_array_equal(packed[i], pack_bits(mixed[i : i + 1])[0])


def test_bit_order_is_big_endian_within_each_byte() -> None:
    bits = np.zeros((1, 16), dtype=bool)
    bits[0, 0] = True  # first bit -> most significant bit of the first byte
    bits[0, 15] = True  # last bit -> least significant bit of the last byte
    np.testing.assert_array_equal(pack_bits(bits), [[128, 1]])


def test_zero_one_integers_and_floats_are_packed_like_booleans() -> None:
    bits = np.random.default_rng(1).random((4, 16)) < 0.5
    expected = pack_bits(bits)
    np.testing.assert_array_equal(pack_bits(bits.astype(np.uint8)), expected)
    np.testing.assert_array_equal(pack_bits(bits.astype(np.float32)), expected)


@pytest.mark.parametrize("nbits", [1, 7, 12, 100])
def test_bit_count_not_a_multiple_of_8_is_refused(nbits: int) -> None:
    with pytest.raises(CodeError, match="multiple of 8"):
        pack_bits(np.zeros((2, nbits), dtype=bool))


@pytest.mark.parametrize("nbits", [0, -8, 12, 8.0])
def test_check_nbits(nbits) -> None:
    with pytest.raises(CodeError, match="multiple of 8"):
        check_nbits(nbits)


def test_pack_refuses_values_other_than_0_and_1() -> None:
    with pytest.raises(CodeError, match="only 0 and 1"):
        pack_bits(np.full((2, 8), 2, dtype=np.int64))


@pytest.mark.parametrize("shape", [(8,), (2, 2, 8)])
def test_pack_refuses_non_2d_bits(shape) -> None:
    with pytest.raises(CodeError, match="2-D"):
        pack_bits(np.zeros(shape, dtype=bool))


@pytest.mark.parametrize("dtype", [np.int8, np.int64, np.uint16, np.float32, np.bool_])
def test_unpack_refuses_wrong_dtype_instead_of_casting(dtype) -> None:
    with pytest.raises(CodeError, match="uint8") as caught:
        unpack_bits(np.zeros((2, 4), dtype=dtype))
    assert np.dtype(dtype).name in str(caught.value)


def test_unpack_refuses_wrong_shape_and_bit_count() -> None:
    with pytest.raises(CodeError, match="2-D"):
        unpack_bits(np.zeros(4, dtype=np.uint8))
    with pytest.raises(CodeError, match="expected 64"):
        unpack_bits(np.zeros((2, 4), dtype=np.uint8), nbits=64)
    with pytest.raises(CodeError, match="numpy uint8 array"):
        unpack_bits([[0, 1]])


# widths whose byte count is odd, 2 * odd, 4 * odd and a multiple of 8: every word size a
# vectorised implementation might view the bytes as
@pytest.mark.parametrize("nbits", [8, 24, 16, 48, 32, 96, 64, 256])
def test_hamming_distances_match_a_naive_loop(nbits: int) -> None:
    rng = np.random.default_rng(nbits)
    queries = rng.integers(0, 256, (6, nbits // 8), dtype=np.uint8)
    codes = rng.integers(0, 256, (40, nbits // 8), dtype=np.uint8)
    codes[:3] = queries[:3]  # some exact matches (distance 0)
    codes[3] = ~queries[0]  # the complement (distance nbits)
    got = hamming_distances(queries, codes)
    naive = np.array(
        [[sum(bin(int(a) ^ int(b)).count("1") for a, b in zip(q, c)) for c in codes] for q in queries]
    )
    assert got.dtype == np.int32 and got.shape == (6, 40)
    np.testing.assert_array_equal(got, naive)
    assert got[0, 0] == 0 and got[0, 3] == nbits


def test_hamming_distances_refuse_mismatched_widths_and_dtypes() -> None:
    with pytest.raises(CodeError, match="expected 16"):
        hamming_distances(np.zeros((1, 2), np.uint8), np.zeros((3, 4), np.uint8))
    with pytest.raises(CodeError, match="uint8"):
        hamming_distances(np.zeros((1, 2), np.uint8), np.zeros((3, 2), np.int64))


def test_code_stats_on_known_inputs() -> None:
    # 4 items x 8 units. Bits (> 0.5): unit 0 always on, unit 1 never, units 2..7 on for half the items.
    act = np.array(
        [
            [0.95, 0.05, 0.95, 0.05, 0.95, 0.05, 0.95, 0.05],
            [0.95, 0.05, 0.95, 0.05, 0.95, 0.05, 0.95, 0.05],
            [0.95, 0.05, 0.05, 0.95, 0.05, 0.95, 0.05, 0.95],
            [0.60, 0.40, 0.05, 0.95, 0.05, 0.95, 0.05, 0.95],
        ]
    )
    stats = code_stats(act)
    assert stats.saturated_share == pytest.approx(30 / 32)  # only 0.60 and 0.40 are not saturated
    p = np.array([1, 0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert stats.bit_balance_std == pytest.approx(p.std())
    assert stats.mean_bit_entropy == pytest.approx(6 / 8)  # 1 bit for the balanced units, 0 for the constant ones
    assert stats.unique_codes == 2  # rows 0 == 1 and rows 2 == 3 once thresholded
    assert set(stats.as_dict()) == {"saturated_share", "bit_balance_std", "mean_bit_entropy", "unique_codes"}


def test_code_stats_with_a_bit_count_not_a_multiple_of_8() -> None:
    act = np.array([[0.95, 0.05, 0.95], [0.95, 0.05, 0.95], [0.05, 0.95, 0.2]])
    stats = code_stats(act)
    assert stats.unique_codes == 2
    assert stats.saturated_share == pytest.approx(8 / 9)


def test_code_stats_refuses_empty_or_flat_input() -> None:
    with pytest.raises(CodeError):
        code_stats(np.zeros((0, 8)))
    with pytest.raises(CodeError):
        code_stats(np.zeros(8))
