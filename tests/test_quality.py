"""Tests of gan_jax.evaluation.quality on synthetic data with known answers: fast, no evaluator network needed."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from gan_jax.evaluation import quality


def _gaussian(rng: np.random.Generator, n: int, dim: int, shift: float = 0.0) -> np.ndarray:
    """n samples of a correlated Gaussian in `dim` dimensions (a fixed mixing matrix), shifted by `shift`."""
    mixing = np.random.default_rng(1234).normal(size=(dim, dim)) / np.sqrt(dim)
    return rng.normal(size=(n, dim)) @ mixing + shift


def _random_rotation(rng: np.random.Generator, dim: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(dim, dim)))
    return q * np.sign(np.diag(r))


# --- Fréchet distance ----------------------------------------------------------------------------------


def test_fid_of_a_set_with_itself_is_zero():
    features = _gaussian(np.random.default_rng(0), 2000, 32)
    scale = np.trace(quality.feature_stats(features).sigma)
    assert quality.fid(features, features) <= 1e-6 * scale


def test_fid_grows_with_a_shift_and_with_noise():
    rng = np.random.default_rng(0)
    features = _gaussian(rng, 2000, 16)
    # A shift of 1 in every coordinate moves the mean by ||1||^2 = 16 and leaves the covariance alone.
    assert quality.fid(features, features + 1.0) == pytest.approx(16.0, rel=1e-9)
    noisy = features + rng.normal(scale=1.0, size=features.shape)
    assert quality.fid(features, noisy) > 1.0


def test_frechet_distance_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    var1, var2 = rng.uniform(0.1, 3.0, size=8), rng.uniform(0.1, 3.0, size=8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    got = quality.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
    assert got == pytest.approx(expected, rel=1e-10)


def test_frechet_distance_is_rotation_invariant():
    # Rotating both Gaussians keeps the distance but makes the covariances dense, exercising the
    # non-diagonal square root.
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=12), rng.normal(size=12)
    var1, var2 = rng.uniform(0.1, 3.0, size=12), rng.uniform(0.1, 3.0, size=12)
    q = _random_rotation(rng, 12)
    expected = quality.frechet_distance(mu1, np.diag(var1), mu2, np.diag(var2))
    got = quality.frechet_distance(q @ mu1, q @ np.diag(var1) @ q.T, q @ mu2, q @ np.diag(var2) @ q.T)
    assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_handles_singular_covariances():
    # Dead ReLU features have zero variance: the covariance is singular and must still give exact answers.
    var1 = np.array([2.0, 0.0, 1.0, 0.0])
    var2 = np.array([0.5, 0.0, 0.0, 3.0])
    zeros = np.zeros(4)
    expected = np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    got = quality.frechet_distance(zeros, np.diag(var1), zeros, np.diag(var2))
    assert got == pytest.approx(expected, rel=1e-10)
    assert quality.frechet_distance(zeros, np.diag(var1), zeros, np.diag(var1)) < 1e-12


def test_feature_stats_are_float64_mean_and_unbiased_covariance():
    features = _gaussian(np.random.default_rng(0), 500, 6).astype(np.float32)
    mu, sigma = quality.feature_stats(features)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, features.astype(np.float64).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(features.astype(np.float64), rowvar=False), rtol=1e-10)


# --- KID -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kid_is_near_zero_for_one_distribution_and_positive_for_two():
    rng = np.random.default_rng(0)
    a, b = _gaussian(rng, 3000, 16), _gaussian(rng, 3000, 16)
    same_mean, same_std = quality.kid(a, b, num_subsets=50, subset_size=500)
    assert abs(same_mean) < same_std
    shifted_mean, shifted_std = quality.kid(a, _gaussian(rng, 3000, 16, shift=0.5), num_subsets=50,
                                            subset_size=500)
    assert shifted_mean > 10 * shifted_std > 0
    assert shifted_mean > 100 * abs(same_mean)


def test_kid_is_unbiased():
    # Small subsets from large pools: a biased (V-statistic) estimate would sit well above 0 here, the
    # unbiased one is 0 within its standard error.
    rng = np.random.default_rng(1)
    a, b = _gaussian(rng, 20000, 8), _gaussian(rng, 20000, 8)
    num_subsets, size = 400, 20
    mean, std = quality.kid(a, b, num_subsets=num_subsets, subset_size=size, seed=3)
    standard_error = std / np.sqrt(num_subsets)
    assert abs(mean) < 4 * standard_error
    # The diagonal terms an estimate that kept them would add: E k(x, x) is far from E k(x, y).
    k_diag = (np.einsum("ij,ij->i", a[:1000], a[:1000]) / a.shape[1] + 1) ** 3
    assert 2 * k_diag.mean() / size > 20 * standard_error


def test_kid_is_deterministic_and_seeded():
    rng = np.random.default_rng(0)
    a, b = _gaussian(rng, 800, 8), _gaussian(rng, 800, 8, shift=0.2)
    first = quality.kid(a, b, num_subsets=20, subset_size=100, seed=7)
    assert quality.kid(a, b, num_subsets=20, subset_size=100, seed=7) == first  # bitwise
    assert quality.kid(a, b, num_subsets=20, subset_size=100, seed=8) != first


def test_kid_clips_subset_size_to_the_smaller_set():
    rng = np.random.default_rng(0)
    a, b = _gaussian(rng, 50, 4), _gaussian(rng, 300, 4)
    # With subsets as large as the smaller set, every subset of `a` is all of it: same as subset_size=50.
    clipped = quality.kid(a, b, num_subsets=5, subset_size=1000)
    assert clipped == quality.kid(a, b, num_subsets=5, subset_size=50)


# --- Classifier score ----------------------------------------------------------------------------------


def test_classifier_score_is_num_classes_for_confident_balanced_predictions():
    probs = np.eye(10)[np.arange(1000) % 10]  # every split of 100 holds each class 10 times
    mean, std = quality.classifier_score(probs, num_splits=10)
    assert mean == pytest.approx(10.0, rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_classifier_score_is_one_for_constant_predictions():
    probs = np.tile(np.random.default_rng(0).dirichlet(np.ones(10)), (500, 1))
    mean, std = quality.classifier_score(probs, num_splits=5)
    assert mean == pytest.approx(1.0, rel=1e-12)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_classifier_score_of_one_confident_class_is_one():
    probs = np.zeros((100, 10))
    probs[:, 3] = 1.0
    assert quality.classifier_score(probs, num_splits=4)[0] == pytest.approx(1.0)


# --- Precision and recall ------------------------------------------------------------------------------


def _clusters(rng: np.random.Generator, per_cluster: int, which: range, dim: int = 16) -> np.ndarray:
    centers = np.random.default_rng(99).normal(scale=10.0, size=(5, dim))
    return np.concatenate([centers[c] + rng.normal(size=(per_cluster, dim)) for c in which])


def test_precision_recall_is_one_for_identical_sets():
    features = _clusters(np.random.default_rng(0), 200, range(5))
    assert quality.precision_recall(features, features.copy(), k=3) == (1.0, 1.0)


def test_mode_collapse_keeps_precision_and_loses_recall():
    rng = np.random.default_rng(0)
    # Few dimensions, so that 300 points per cluster fill it densely and k-NN balls overlap the twin set.
    real = _clusters(rng, 300, range(5), dim=4)
    fake_all = _clusters(rng, 300, range(5), dim=4)
    fake_collapsed = _clusters(rng, 1500, range(1), dim=4)  # as many samples, all from cluster 0
    healthy = quality.precision_recall(real, fake_all)
    collapsed = quality.precision_recall(real, fake_collapsed)
    assert healthy.precision > 0.9 and healthy.recall > 0.9
    assert collapsed.precision > 0.9
    assert collapsed.recall < 0.25  # only the fifth of the reals in cluster 0 can be covered


def test_precision_recall_blocks_agree_with_a_direct_computation():
    # More rows than one distance block, so the blocked code paths and their offsets are exercised.
    rng = np.random.default_rng(2)
    real, fake = rng.normal(size=(1500, 5)), rng.normal(size=(1300, 5)) * 1.3
    distances = np.linalg.norm(real[:, None] - real[None], axis=-1)
    np.fill_diagonal(distances, np.inf)
    radii = np.sort(distances, axis=1)[:, 2]
    fake_to_real = np.linalg.norm(fake[:, None] - real[None], axis=-1)
    expected_precision = np.mean(np.any(fake_to_real <= radii[None], axis=1))
    assert quality.precision_recall(real, fake, k=3).precision == pytest.approx(expected_precision, abs=2e-3)


# --- Class coverage and discriminator accuracy ---------------------------------------------------------


def test_class_coverage_entropy_is_log_num_classes_for_uniform_and_zero_for_one_class():
    counts, entropy = quality.class_coverage(np.arange(1000) % 10)
    np.testing.assert_array_equal(counts, np.full(10, 100))
    assert entropy == pytest.approx(np.log(10))
    counts, entropy = quality.class_coverage(np.full(50, 7))
    assert counts[7] == 50 and counts.sum() == 50
    # Exactly 0.0, not -0.0 (equal to 0.0, but written "-0.0" in the evaluation's JSON).
    assert entropy == 0.0 and math.copysign(1.0, entropy) == 1.0 and json.dumps(entropy) == "0.0"


def test_class_coverage_takes_the_argmax_of_probabilities():
    probs = np.eye(10)[[1, 1, 2, 3]] * 0.9 + 0.01
    counts, entropy = quality.class_coverage(probs)
    np.testing.assert_array_equal(counts, [0, 2, 1, 1, 0, 0, 0, 0, 0, 0])
    assert entropy == pytest.approx(-(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25)))


def test_discriminator_accuracy_on_hand_cases():
    assert quality.discriminator_accuracy([1.0, 2.0], [-1.0, -3.0]) == 1.0
    assert quality.discriminator_accuracy([-1.0], [1.0]) == 0.0
    # reals: 2 of 4 right (0 counts as wrong); fakes: 2 of 3 right; the two sets weigh equally.
    got = quality.discriminator_accuracy([1.0, -1.0, 2.0, 0.0], [-1.0, -2.0, 3.0])
    assert got == pytest.approx((2 / 4 + 2 / 3) / 2)
    # Column vectors, as a discriminator's (N, 1) output, are flattened.
    assert quality.discriminator_accuracy(np.array([[0.5], [0.5]]), np.array([[0.0]])) == 0.5


# --- Bad inputs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [quality.fid, quality.kid, quality.precision_recall])
def test_mismatched_feature_dims_raise(fn):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="feature dimensions differ"):
        fn(rng.normal(size=(20, 4)), rng.normal(size=(20, 5)))


@pytest.mark.parametrize("fn", [quality.fid, quality.kid, quality.precision_recall])
def test_empty_features_raise(fn):
    with pytest.raises(ValueError, match="at least"):
        fn(np.zeros((0, 4)), np.zeros((10, 4)))


def test_bad_inputs_raise_clear_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="2-D"):
        quality.feature_stats(np.zeros(10))
    with pytest.raises(ValueError, match="NaN"):
        quality.fid(np.full((5, 2), np.nan), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="sigma1 must be"):
        quality.frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="feature dimensions differ"):
        quality.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="logits"):
        quality.classifier_score(rng.normal(size=(20, 10)))
    with pytest.raises(ValueError, match="num_splits"):
        quality.classifier_score(np.full((5, 10), 0.1), num_splits=6)
    with pytest.raises(ValueError, match="subset_size"):
        quality.kid(np.zeros((5, 2)), np.zeros((5, 2)), subset_size=1)
    with pytest.raises(ValueError, match="k must be"):
        quality.precision_recall(np.zeros((5, 2)), np.zeros((5, 2)), k=0)
    with pytest.raises(ValueError, match="labels must lie"):
        quality.class_coverage(np.array([0, 10]))
    with pytest.raises(ValueError, match="empty"):
        quality.class_coverage(np.array([], np.int64))
    with pytest.raises(ValueError, match="empty"):
        quality.discriminator_accuracy([], [1.0])
    with pytest.raises(ValueError, match="NaN"):
        quality.discriminator_accuracy([np.nan], [1.0])
