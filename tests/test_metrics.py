"""Retrieval metrics against hand-computed cases and brute force."""

from __future__ import annotations

import numpy as np
import pytest

from hashae.codes import hamming_distances, pack_bits
from hashae.errors import CodeError, ConfigError, DataError
from hashae.metrics import (
    average_precision,
    average_precisions,
    evaluate_binary,
    evaluate_float,
    exact_neighbours,
    float_ranking,
    hamming_ranking,
    mean_average_precision,
    precision_recall_curve,
    precision_within_radius,
    recall_at,
)

REPORT_KEYS = {"map_at_1000", "map_all", "p_at_r2", "empty_ball_share", "recall_at_10", "r10_at_100"}


def codes_at_distances(distances: list[int], nbits: int = 8) -> np.ndarray:
    """Packed codes whose Hamming distance to the all-zero code is each given distance."""
    bits = np.zeros((len(distances), nbits), dtype=bool)
    for row, d in enumerate(distances):
        bits[row, :d] = True
    return pack_bits(bits)


def random_codes(rng: np.random.Generator, n: int, nbytes: int) -> np.ndarray:
    return rng.integers(0, 256, size=(n, nbytes), dtype=np.uint8)


# ----------------------------------------------------------------------------- average precision


def test_average_precision_of_known_ranking():
    assert average_precision([1, 0, 1, 0]) == pytest.approx((1 + 2 / 3) / 2)


def test_average_precision_truncates_at_k():
    relevant = [0, 1, 1, 1]
    assert average_precision(relevant, k=2) == pytest.approx(0.5)  # P(2) = 1/2 over 1 relevant in the top 2
    assert average_precision(relevant, k=3) == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert average_precision(relevant) == pytest.approx((1 / 2 + 2 / 3 + 3 / 4) / 3)


def test_average_precision_is_zero_without_relevant_item_in_top_k():
    assert average_precision([0, 0, 1], k=2) == 0.0
    assert average_precision([0, 0, 0]) == 0.0


def test_k_beyond_ranking_length_uses_the_whole_ranking():
    assert average_precision([1, 0, 1], k=1000) == average_precision([1, 0, 1])


def test_mean_average_precision_averages_queries():
    relevant = np.array([[1, 0, 1, 0], [0, 1, 0, 0]], dtype=bool)
    assert mean_average_precision(relevant) == pytest.approx(((1 + 2 / 3) / 2 + 1 / 2) / 2)
    assert mean_average_precision(relevant, k=1) == pytest.approx(0.5)
    np.testing.assert_allclose(average_precisions(relevant, k=1), [1.0, 0.0])


def test_average_precision_rejects_bad_input():
    with pytest.raises(DataError):
        average_precisions(np.array([1, 0]))
    with pytest.raises(DataError):
        average_precisions(np.array([[2, 0]]))
    with pytest.raises(ConfigError):
        average_precision([1, 0], k=0)


# ----------------------------------------------------------------------------- rankings


@pytest.mark.parametrize("nbits", [8, 16, 64])
def test_hamming_ranking_is_stable_argsort_of_brute_force(nbits):
    rng = np.random.default_rng(0)
    db = random_codes(rng, 500, nbits // 8)
    queries = np.concatenate([random_codes(rng, 20, nbits // 8), db[:3]])  # some queries in the database
    expected = np.argsort(hamming_distances(queries, db), axis=1, kind="stable")
    np.testing.assert_array_equal(hamming_ranking(queries, db), expected)
    np.testing.assert_array_equal(hamming_ranking(queries, db, topk=17, chunk_size=4), expected[:, :17])


def test_hamming_ranking_breaks_ties_by_database_order():
    db = codes_at_distances([2, 1, 2, 0, 1, 2])
    query = codes_at_distances([0])
    np.testing.assert_array_equal(hamming_ranking(query, db), [[3, 1, 4, 0, 2, 5]])
    np.testing.assert_array_equal(hamming_ranking(query, db, topk=3), [[3, 1, 4]])


def test_hamming_ranking_refuses_mismatched_codes():
    with pytest.raises(CodeError):
        hamming_ranking(np.zeros((1, 2), np.uint8), np.zeros((3, 1), np.uint8))
    with pytest.raises(CodeError):
        hamming_ranking(np.zeros((1, 1), np.int64), np.zeros((3, 1), np.uint8))


def test_float_ranking_breaks_ties_by_database_order():
    # small integers: every distance is exact, so duplicates and equidistant points truly tie
    db = np.array([[3, 0], [1, 0], [0, 1], [1, 0], [-1, 0], [0, 0]], dtype=np.float32)
    query = np.zeros((1, 2), dtype=np.float32)
    np.testing.assert_array_equal(float_ranking(query, db), [[5, 1, 2, 3, 4, 0]])
    np.testing.assert_array_equal(float_ranking(query, db, topk=3), [[5, 1, 2]])
    np.testing.assert_array_equal(float_ranking(query, db, topk=2), [[5, 1]])


def test_float_ranking_matches_brute_force():
    rng = np.random.default_rng(1)
    db = rng.integers(0, 4, size=(300, 5)).astype(np.float32)  # many exact ties
    queries = rng.integers(0, 4, size=(25, 5)).astype(np.float32)
    brute = ((queries[:, None, :].astype(np.float64) - db[None]) ** 2).sum(-1)
    expected = np.argsort(brute, axis=1, kind="stable")
    np.testing.assert_array_equal(float_ranking(queries, db, chunk_size=7), expected)
    np.testing.assert_array_equal(float_ranking(queries, db, topk=10, chunk_size=7), expected[:, :10])


# ----------------------------------------------------------------------------- Hamming balls


def test_precision_within_radius_by_hand():
    db = codes_at_distances([0, 1, 2, 3, 8])
    db_labels = np.array([0, 1, 0, 0, 1])
    queries = codes_at_distances([0, 0])
    # query 0 (label 0): ball r<=2 = items 0, 1, 2 -> 2 of 3 relevant; query 1 (label 1) -> 1 of 3
    precision, empty = precision_within_radius(queries, db, np.array([0, 1]), db_labels, radius=2)
    assert precision == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert empty == 0.0


def test_empty_ball_counts_as_zero_precision():
    db = codes_at_distances([3, 4, 8])
    queries = codes_at_distances([0, 4])  # the first query's ball r<=2 is empty, the second holds item 1
    labels = np.array([0, 0])
    precision, empty = precision_within_radius(queries, db, labels, np.array([0, 0, 0]), radius=2)
    assert precision == pytest.approx(0.5)
    assert empty == pytest.approx(0.5)


def test_precision_recall_curve_ends_at_class_share_and_full_recall():
    rng = np.random.default_rng(2)
    db, queries = random_codes(rng, 200, 2), random_codes(rng, 30, 2)
    db_labels, query_labels = rng.integers(0, 3, 200), rng.integers(0, 3, 30)
    curve = precision_recall_curve(queries, db, query_labels, db_labels, chunk_size=8)
    assert curve.radius.tolist() == list(range(17))
    class_share = np.mean([np.mean(db_labels == label) for label in query_labels])
    assert curve.precision[-1] == pytest.approx(class_share)
    assert curve.recall[-1] == pytest.approx(1.0)
    assert np.all(np.diff(curve.recall) >= 0)
    assert np.all(np.diff(curve.empty_share) <= 0)
    p_at_2, empty_at_2 = precision_within_radius(queries, db, query_labels, db_labels, radius=2)
    assert curve.precision[2] == pytest.approx(p_at_2)
    assert curve.empty_share[2] == pytest.approx(empty_at_2)


# ----------------------------------------------------------------------------- neighbour recall


def test_recall_counts_items_tied_with_the_kth_distance():
    kth = np.array([1.0, 2.0])
    candidates = np.array(
        [
            [0.5, 1.0, 1.0 + 5e-7, 1.0 + 2e-6],  # exactly at and within 1e-6 of the 10th distance count
            [3.0, np.inf, 2.5, 2.0],
        ]
    )
    assert recall_at(kth, candidates, k=4) == pytest.approx((3 / 4 + 1 / 4) / 2)


def test_recall_is_capped_at_k_when_ties_exceed_it():
    assert recall_at(np.array([1.0]), np.ones((1, 30)), k=10) == 1.0


def test_recall_rejects_mismatched_shapes():
    with pytest.raises(DataError):
        recall_at(np.ones(3), np.ones((2, 10)))


def test_exact_neighbours_recall_with_ties_at_the_kth_distance():
    # points on a line: the query's 3 nearest are 0, 1 and (tied at distance 2) 2 and 3
    db = np.array([[0.0], [1.0], [2.0], [-2.0], [5.0], [-6.0]], dtype=np.float32)
    truth = exact_neighbours(np.zeros((1, 1), dtype=np.float32), db, k=3)
    np.testing.assert_array_equal(truth.ids, [[0, 1, 2]])
    np.testing.assert_allclose(truth.distances, [[0.0, 1.0, 2.0]])
    assert truth.recall(np.array([[0, 1, 3]])) == 1.0  # item 3 ties with the 3rd neighbour: found
    assert truth.recall(np.array([[4, 1, 5]])) == pytest.approx(1 / 3)
    assert truth.recall(np.array([[4, 5, -1]])) == 0.0  # -1 = missing candidate


# ----------------------------------------------------------------------------- one call per representation


@pytest.fixture()
def small_problem():
    rng = np.random.default_rng(3)
    db_x = rng.normal(size=(400, 12)).astype(np.float32)
    query_x = rng.normal(size=(37, 12)).astype(np.float32)
    db_labels, query_labels = (db_x[:, 0] > 0).astype(int), (query_x[:, 0] > 0).astype(int)
    projection = rng.normal(size=(12, 16))
    db_codes, query_codes = pack_bits(db_x @ projection > 0), pack_bits(query_x @ projection > 0)
    return query_x, db_x, query_labels, db_labels, query_codes, db_codes


def test_evaluate_binary_matches_the_separate_metrics(small_problem):
    query_x, db_x, query_labels, db_labels, query_codes, db_codes = small_problem
    truth = exact_neighbours(query_x, db_x)
    report = evaluate_binary(query_codes, db_codes, query_labels, db_labels, truth=truth, chunk_size=5)
    assert set(report) == REPORT_KEYS
    ranking = hamming_ranking(query_codes, db_codes)
    relevant = db_labels[ranking] == query_labels[:, None]
    assert report["map_at_1000"] == pytest.approx(mean_average_precision(relevant, k=1000))
    assert report["map_all"] == pytest.approx(mean_average_precision(relevant))
    p_at_2, empty = precision_within_radius(query_codes, db_codes, query_labels, db_labels)
    assert report["p_at_r2"] == pytest.approx(p_at_2)
    assert report["empty_ball_share"] == pytest.approx(empty)
    assert report["recall_at_10"] == pytest.approx(truth.recall(ranking[:, :10]))
    assert report["r10_at_100"] == pytest.approx(truth.recall(ranking[:, :100]))
    assert evaluate_binary(query_codes, db_codes, query_labels, db_labels, truth=truth) == report


def test_evaluate_float_on_the_original_vectors_recalls_everything(small_problem):
    query_x, db_x, query_labels, db_labels, _, _ = small_problem
    report = evaluate_float(query_x, db_x, query_labels, db_labels, truth=exact_neighbours(query_x, db_x))
    assert set(report) == REPORT_KEYS
    assert report["p_at_r2"] is None and report["empty_ball_share"] is None
    assert report["recall_at_10"] == 1.0 and report["r10_at_100"] == 1.0
    relevant = db_labels[float_ranking(query_x, db_x)] == query_labels[:, None]
    assert report["map_all"] == pytest.approx(mean_average_precision(relevant))


def test_evaluate_without_truth_leaves_recall_empty(small_problem):
    query_x, db_x, query_labels, db_labels, query_codes, db_codes = small_problem
    report = evaluate_binary(query_codes, db_codes, query_labels, db_labels)
    assert report["recall_at_10"] is None and report["r10_at_100"] is None


def test_evaluate_refuses_mismatched_labels_and_truth(small_problem):
    query_x, db_x, query_labels, db_labels, query_codes, db_codes = small_problem
    with pytest.raises(DataError):
        evaluate_binary(query_codes, db_codes, query_labels[:-1], db_labels)
    with pytest.raises(ConfigError):
        evaluate_float(query_x, db_x, query_labels, db_labels, truth=exact_neighbours(query_x, db_x, k=5))
