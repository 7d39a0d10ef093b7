"""LSH, PCAH and ITQ through FAISS: canonical codes, determinism, balanced bits on real images."""

from __future__ import annotations

import numpy as np
import pytest

from hashae.baselines import METHODS, fit_hash
from hashae.codes import check_codes, unpack_bits
from hashae.errors import CodeError, ConfigError, DataError

BITS = (16, 32, 64)
DIM = 14 * 14


@pytest.fixture(scope="module")
def images(fashion) -> np.ndarray:
    """Real Fashion-MNIST training images (conftest's `fashion`) pooled 2 x 2 to 14 x 14 and flattened:
    float32 (n, 196) in [0, 1]. A quarter of the dimensions keeps FAISS's PCA fits quick."""
    train, _ = fashion
    pooled = train.reshape(len(train), 14, 2, 14, 2).mean(axis=(2, 4))
    return np.ascontiguousarray(pooled.reshape(len(train), DIM), dtype=np.float32)


@pytest.fixture(scope="module")
def fitted(images):
    """Every method at every tested length, fitted once: {(method, nbits): HashFunction}."""
    return {(method, nbits): fit_hash(method, images, nbits=nbits) for method in METHODS for nbits in BITS}


@pytest.mark.parametrize("nbits", BITS)
@pytest.mark.parametrize("method", METHODS)
def test_codes_are_canonical(fitted, images, method, nbits):
    hash_fn = fitted[method, nbits]
    assert (hash_fn.method, hash_fn.nbits, hash_fn.dim) == (method, nbits, DIM)
    codes = hash_fn.encode(images[:100])
    assert codes.dtype == np.uint8 and codes.shape == (100, nbits // 8)
    check_codes(codes, nbits=nbits)
    # bit j of the canonical (big-endian packed) code is the sign of projection j
    np.testing.assert_array_equal(unpack_bits(codes), hash_fn.project(images[:100]) >= 0)


@pytest.mark.parametrize("method", METHODS)
def test_encoding_the_training_data_twice_gives_the_same_codes(fitted, images, method):
    hash_fn = fitted[method, 32]
    np.testing.assert_array_equal(hash_fn.encode(images), hash_fn.encode(images))


@pytest.mark.parametrize("method", METHODS)
def test_fit_is_deterministic_given_seed(fitted, images, method):
    again = fit_hash(method, images, nbits=32, seed=0)
    np.testing.assert_array_equal(again.encode(images), fitted[method, 32].encode(images))


def test_lsh_seed_changes_the_hyperplanes(fitted, images):
    other = fit_hash("lsh", images, nbits=32, seed=1)
    assert not np.array_equal(other.encode(images), fitted["lsh", 32].encode(images))


@pytest.mark.parametrize("method", ["pcah", "itq"])
def test_bits_are_roughly_balanced_on_real_images(fitted, images, method):
    bit_means = unpack_bits(fitted[method, 32].encode(images)).mean(axis=0)
    assert np.all(np.abs(bit_means - 0.5) < 0.15), bit_means


def test_lsh_hyperplanes_pass_through_the_data_mean(fitted, images):
    projected_mean = fitted["lsh", 64].project(images.mean(axis=0, keepdims=True))
    np.testing.assert_allclose(projected_mean, 0.0, atol=1e-4)


def test_encoding_is_batched_without_changing_codes(fitted, images, monkeypatch):
    whole = fitted["itq", 16].encode(images)
    monkeypatch.setattr("hashae.baselines.ENCODE_BATCH_ROWS", 7)
    np.testing.assert_array_equal(fitted["itq", 16].encode(images), whole)


def test_unknown_method_lists_the_known_ones(images):
    with pytest.raises(ConfigError, match="lsh, pcah, itq"):
        fit_hash("spectral", images, nbits=16)


def test_bad_sizes_and_inputs_are_refused(images):
    with pytest.raises(CodeError):
        fit_hash("lsh", images, nbits=12)
    with pytest.raises(ConfigError, match="at most one bit per input dimension"):
        fit_hash("pcah", images[:, :8], nbits=16)
    with pytest.raises(DataError, match="scale pixels"):
        fit_hash("pcah", (images * 255).astype(np.uint8), nbits=16)
    with pytest.raises(DataError, match=f"{DIM}-dimensional"):
        fit_hash("lsh", images, nbits=16).encode(images[:, :100])


# ---------------------------------------------------------------------------------- AGH and SGH
def clustered(n_per_cluster: int = 150, clusters: int = 10, dim: int = 64, seed: int = 0):
    """Gaussian clusters float32 (n, dim) with their labels (n,): a small set where a learned hash
    should keep same-cluster items close."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.0, (clusters, dim))
    labels = np.repeat(np.arange(clusters), n_per_cluster)
    x = centres[labels] + rng.normal(0, 0.6, (len(labels), dim))
    return x.astype(np.float32), labels


def mean_precision_at(codes: np.ndarray, labels: np.ndarray, k: int = 50) -> float:
    """Mean share of same-label items among each item's k nearest codes (itself left out)."""
    bits = unpack_bits(codes).astype(np.int32)
    distances = (bits[:, None, :] != bits[None, :, :]).sum(-1) + np.eye(len(bits), dtype=np.int32) * 10**6
    order = np.argsort(distances, axis=1, kind="stable")[:, :k]
    return float((labels[order] == labels[:, None]).mean())


@pytest.mark.parametrize("method", ["agh", "sgh"])
def test_learned_peers_beat_lsh_on_clustered_data(method):
    x, labels = clustered()
    lsh = mean_precision_at(fit_hash("lsh", x, nbits=16).encode(x), labels)
    learned = mean_precision_at(fit_hash(method, x, nbits=16).encode(x), labels)
    assert learned > lsh + 0.05, (learned, lsh)


@pytest.mark.parametrize("method", ["agh", "sgh"])
def test_learned_peers_are_deterministic_and_shaped(method):
    x, _ = clustered(n_per_cluster=40)
    first, again = fit_hash(method, x, nbits=32, seed=3), fit_hash(method, x, nbits=32, seed=3)
    assert first.project(x).shape == (len(x), 32)
    np.testing.assert_array_equal(first.encode(x), again.encode(x))
    assert first.encode(x[:5]).shape == (5, 4)


def test_agh_rows_of_the_anchor_graph_keep_two_anchors_summing_to_one():
    x, _ = clustered(n_per_cluster=40)
    (projection,) = fit_hash("agh", x, nbits=16).transforms
    rows = projection.graph_rows(x)
    assert rows.shape == (len(x), 300) and ((rows > 0).sum(1) <= 2).all()
    np.testing.assert_allclose(rows.sum(1), 1.0, rtol=1e-5)


def test_agh_needs_fewer_bits_than_anchors():
    x, _ = clustered(n_per_cluster=2)
    with pytest.raises(ConfigError, match="anchors"):
        fit_hash("agh", x, nbits=32)
