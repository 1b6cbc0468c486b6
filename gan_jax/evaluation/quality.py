"""Sample-quality metrics for generative models: pure numpy functions of features, probabilities or logits.

Features come from the evaluator network (`gan_jax.evaluator`); nothing here knows about networks. The
Fréchet distance and KID are computed in float64, where rounding would otherwise show in the small
differences they take; k-NN precision/recall use float32 distances (see `precision_recall`). Every
random choice is drawn from an explicit seed, so equal inputs give bitwise-equal outputs.

Bad inputs (wrong rank, mismatched feature dimensions, empty or non-finite arrays) raise ValueError.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# Probabilities from a float32 softmax sum to 1 only up to rounding; anything further off is not a
# probability vector (most likely logits passed by mistake).
_PROB_SUM_TOLERANCE = 1e-3
# Rows of the pairwise-distance matrix computed at once in `precision_recall`: 1024 x 10k float32 is
# 40 MB, so 10k x 10k sets never materialize the 400 MB full matrix.
_DISTANCE_BLOCK_ROWS = 1024
PR_NEIGHBOURS = 3  # k of the k-NN precision/recall balls (Kynkaanniemi et al. 2019 use 3)


class FeatureStats(NamedTuple):
    """Mean (d,) and covariance (d, d), float64, of a set of feature vectors."""

    mu: np.ndarray
    sigma: np.ndarray


class PrecisionRecall(NamedTuple):
    """k-NN precision (fidelity of fakes) and recall (coverage of the reals), each in [0, 1]."""

    precision: float
    recall: float


class ClassCoverage(NamedTuple):
    """Predicted-class histogram (counts, int64) and its entropy in nats (at most log(num_classes))."""

    counts: np.ndarray
    entropy: float


def _as_matrix(x: np.ndarray, name: str, dtype: type = np.float64, min_rows: int = 1) -> np.ndarray:
    """`x` as a finite 2-D array of `dtype` with at least `min_rows` rows and one column."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D (num_samples, dim), got shape {x.shape}")
    if x.shape[0] < min_rows or x.shape[1] == 0:
        raise ValueError(f"{name} needs at least {min_rows} row(s) and 1 column, got shape {x.shape}")
    x = x.astype(dtype, copy=False)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return x


def _check_same_dim(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {name_a} has {a.shape[1]}, {name_b} has {b.shape[1]}")


def feature_stats(features: np.ndarray) -> FeatureStats:
    """Mean and unbiased (N - 1) covariance of a set of feature vectors, in float64.

    Args:
      features: (N, d), N >= 2.

    Returns:
      `FeatureStats(mu (d,), sigma (d, d))`.
    """
    features = _as_matrix(features, "features", min_rows=2)
    mu = features.mean(axis=0)
    centered = features - mu
    sigma = centered.T @ centered / (features.shape[0] - 1)
    return FeatureStats(mu, sigma)


def _sqrt_psd(sigma: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric PSD matrix; rounding's tiny negative eigenvalues become 0."""
    eigvals, eigvecs = np.linalg.eigh(sigma)
    return (eigvecs * np.sqrt(np.clip(eigvals, 0.0, None))) @ eigvecs.T


def _check_gaussian(mu: np.ndarray, sigma: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    mu = np.asarray(mu, np.float64)
    sigma = np.asarray(sigma, np.float64)
    if mu.ndim != 1 or mu.shape[0] == 0:
        raise ValueError(f"mu{name} must be a non-empty vector, got shape {mu.shape}")
    if sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"sigma{name} must be ({mu.shape[0]}, {mu.shape[0]}) to match mu{name}, "
                         f"got {sigma.shape}")
    if not (np.all(np.isfinite(mu)) and np.all(np.isfinite(sigma))):
        raise ValueError(f"mu{name} or sigma{name} contains NaN or infinite values")
    # Covariances computed in floating point are symmetric only up to rounding; eigh needs exact symmetry.
    return mu, (sigma + sigma.T) / 2


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = ||mu1 - mu2||^2 + tr(sigma1) + tr(sigma2) - 2 tr((sigma1 sigma2)^(1/2)).

    The product sigma1 sigma2 is not symmetric, and a general matrix square root of it (scipy's sqrtm)
    returns complex rounding noise on near-singular covariances. Instead: with A = sigma1^(1/2),
    sigma1 sigma2 = A (A sigma2) has the same eigenvalues as (A sigma2) A = A sigma2 A, which is
    symmetric PSD, so tr((sigma1 sigma2)^(1/2)) = sum sqrt(eigvalsh(A sigma2 A)), two symmetric
    eigen-decompositions with real results. This holds for singular sigma1 too (AB and BA always share
    their eigenvalues), so dead ReLU features with zero variance need no epsilon on the diagonal.

    Args:
      mu1, mu2: means, (d,).
      sigma1, sigma2: covariances, (d, d), symmetric PSD.

    Returns:
      The squared distance, a float >= 0 (FID when the Gaussians are fitted to evaluator features).
    """
    mu1, sigma1 = _check_gaussian(mu1, sigma1, "1")
    mu2, sigma2 = _check_gaussian(mu2, sigma2, "2")
    if mu1.shape != mu2.shape:
        raise ValueError(f"feature dimensions differ: mu1 has {mu1.shape[0]}, mu2 has {mu2.shape[0]}")
    sqrt_sigma1 = _sqrt_psd(sigma1)
    product = sqrt_sigma1 @ sigma2 @ sqrt_sigma1
    eigvals = np.linalg.eigvalsh((product + product.T) / 2)
    trace_sqrt = float(np.sum(np.sqrt(np.clip(eigvals, 0.0, None))))
    diff = mu1 - mu2
    distance = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)
    # The exact value is >= 0; a negative one is rounding (of order 1e-13 * trace) around a true 0.
    return max(distance, 0.0)


def fid(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet Inception Distance, with the evaluator's features in place of Inception's.

    Args:
      features_a, features_b: (N_a, d) and (N_b, d), each with at least 2 rows.

    Returns:
      The Fréchet distance between Gaussians fitted to the two sets.
    """
    features_a = _as_matrix(features_a, "features_a", min_rows=2)
    features_b = _as_matrix(features_b, "features_b", min_rows=2)
    _check_same_dim(features_a, features_b, "features_a", "features_b")
    return frechet_distance(*feature_stats(features_a), *feature_stats(features_b))


def _polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """k(x, y) = (x . y / d + 1)^3, the kernel of KID (Binkowski et al. 2018)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased estimate of MMD^2 between two equal-size samples: the diagonals k(x_i, x_i) are left out."""
    m = x.shape[0]
    k_xx = _polynomial_kernel(x, x)
    k_yy = _polynomial_kernel(y, y)
    k_xy = _polynomial_kernel(x, y)
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    # x and y are independent, so every cross pair, i == j included, is an unbiased term.
    return float(within - 2.0 * k_xy.mean())


def kid(features_a: np.ndarray, features_b: np.ndarray, num_subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: unbiased MMD^2 with a cubic polynomial kernel, averaged over subsets.

    Each subset draws `subset_size` rows without replacement from each set, from
    `np.random.default_rng(seed)`, so the result is a pure function of the inputs and the seed.

    Args:
      features_a, features_b: (N_a, d) and (N_b, d).
      num_subsets: how many subset pairs to average over, >= 1.
      subset_size: rows per subset, clipped to min(N_a, N_b); must end up >= 2.
      seed: seeds the subset draws.

    Returns:
      (mean, std) of the per-subset estimates (std with ddof=0). The mean is unbiased: near 0 (either
      sign) for two samples of one distribution.
    """
    features_a = _as_matrix(features_a, "features_a", min_rows=2)
    features_b = _as_matrix(features_b, "features_b", min_rows=2)
    _check_same_dim(features_a, features_b, "features_a", "features_b")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1, got {num_subsets}")
    size = min(subset_size, features_a.shape[0], features_b.shape[0])
    if size < 2:
        raise ValueError(f"subset_size must be >= 2 (the unbiased estimate needs pairs), got {subset_size}")
    rng = np.random.default_rng(seed)
    estimates = np.empty(num_subsets, np.float64)
    for i in range(num_subsets):
        subset_a = features_a[rng.choice(features_a.shape[0], size, replace=False)]
        subset_b = features_b[rng.choice(features_b.shape[0], size, replace=False)]
        estimates[i] = _mmd2_unbiased(subset_a, subset_b)
    return float(estimates.mean()), float(estimates.std())


def _as_probs(probs: np.ndarray) -> np.ndarray:
    """`probs` as float64 (N, C) after checking every row is a probability vector."""
    probs = _as_matrix(probs, "probs")
    if np.any(probs < 0):
        raise ValueError("probs contains negative values (logits passed instead of probabilities?)")
    row_sums = probs.sum(axis=1)
    worst = float(np.max(np.abs(row_sums - 1.0)))
    if worst > _PROB_SUM_TOLERANCE:
        raise ValueError(f"probs rows must sum to 1, one is off by {worst:.3g} "
                         "(logits instead of probabilities?)")
    return probs


def classifier_score(probs: np.ndarray, num_splits: int = 10) -> tuple[float, float]:
    """Inception Score with the evaluator's class probabilities: exp(E_x KL(p(y|x) || p(y))).

    As in the original Inception Score, the samples are cut into `num_splits` contiguous splits, each
    with its own marginal p(y); the score ranges from 1 (every sample gets the same distribution) to the
    number of classes (confident predictions, classes equally used).

    Args:
      probs: (N, C) class probabilities, rows summing to 1.
      num_splits: 1 <= num_splits <= N.

    Returns:
      (mean, std) over the splits (std with ddof=0).
    """
    probs = _as_probs(probs)
    if not 1 <= num_splits <= probs.shape[0]:
        raise ValueError(f"num_splits must be in [1, {probs.shape[0]}] (the number of samples), "
                         f"got {num_splits}")
    scores = []
    for split in np.array_split(probs, num_splits):
        marginal = split.mean(axis=0, keepdims=True)
        # 0 log 0 = 0; where p(y|x) > 0 the marginal is > 0 too, so the log never sees a zero.
        positive = split > 0
        terms = np.where(positive, split * (np.log(np.where(positive, split, 1.0)) -
                                            np.log(np.where(positive, marginal, 1.0))), 0.0)
        scores.append(np.exp(terms.sum(axis=1).mean()))
    scores = np.asarray(scores)
    return float(scores.mean()), float(scores.std())


def _squared_distances(rows: np.ndarray, cols: np.ndarray, col_sq_norms: np.ndarray) -> np.ndarray:
    """||rows_i - cols_j||^2 for a block of rows against all columns, clipped at 0 against rounding."""
    row_sq_norms = np.einsum("ij,ij->i", rows, rows)
    distances = row_sq_norms[:, None] + col_sq_norms[None, :] - 2.0 * (rows @ cols.T)
    return np.maximum(distances, 0.0)


def _knn_radii(points: np.ndarray, k: int) -> np.ndarray:
    """Squared distance from each point to its k-th nearest neighbour in the same set, itself excluded."""
    sq_norms = np.einsum("ij,ij->i", points, points)
    radii = np.empty(points.shape[0], points.dtype)
    for start in range(0, points.shape[0], _DISTANCE_BLOCK_ROWS):
        block = _squared_distances(points[start:start + _DISTANCE_BLOCK_ROWS], points, sq_norms)
        rows = np.arange(block.shape[0])
        block[rows, start + rows] = np.inf  # a point is not its own neighbour
        radii[start:start + block.shape[0]] = np.partition(block, k - 1, axis=1)[:, k - 1]
    return radii


def _fraction_inside(queries: np.ndarray, centers: np.ndarray, radii: np.ndarray) -> float:
    """Fraction of queries within the radius of at least one center: inside the centers' k-NN manifold."""
    sq_norms = np.einsum("ij,ij->i", centers, centers)
    inside = 0
    for start in range(0, queries.shape[0], _DISTANCE_BLOCK_ROWS):
        block = _squared_distances(queries[start:start + _DISTANCE_BLOCK_ROWS], centers, sq_norms)
        inside += int(np.count_nonzero(np.any(block <= radii[None, :], axis=1)))
    return inside / queries.shape[0]


def precision_recall(real_features: np.ndarray, fake_features: np.ndarray,
                     k: int = PR_NEIGHBOURS) -> PrecisionRecall:
    """Improved precision and recall (Kynkäänniemi et al. 2019) from k-NN manifolds of features.

    Each set's manifold is the union of balls around its points, each ball reaching the point's k-th
    nearest neighbour in the set. Precision is the fraction of fakes inside the real manifold (are the
    samples realistic?), recall the fraction of reals inside the fake manifold (is all of the data
    covered?). A mode-collapsed generator keeps precision and loses recall.

    Distances are computed in blocks of rows, so two 10k sets need about 40 MB at a time, and in
    float32, twice as fast as float64: they only decide whether a point lies inside a ball, and
    float32 rounding moves a distance by about 1e-7 of the squared feature norms, far below the
    spacing of nearest neighbours, so it can only flip points lying on a ball's surface to within that
    margin. Features are centered on the real mean first, which shrinks the norms and with them the
    cancellation in ||x||^2 + ||y||^2 - 2 x.y.

    Args:
      real_features: (N_r, d), N_r > k.
      fake_features: (N_f, d), N_f > k.
      k: the neighbour that sets each ball's radius, >= 1.

    Returns:
      `PrecisionRecall(precision, recall)`.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    real = _as_matrix(real_features, "real_features", min_rows=k + 1)
    fake = _as_matrix(fake_features, "fake_features", min_rows=k + 1)
    _check_same_dim(real, fake, "real_features", "fake_features")
    center = real.mean(axis=0)
    real = (real - center).astype(np.float32)
    fake = (fake - center).astype(np.float32)
    precision = _fraction_inside(fake, real, _knn_radii(real, k))
    recall = _fraction_inside(real, fake, _knn_radii(fake, k))
    return PrecisionRecall(precision, recall)


def class_coverage(predictions: np.ndarray, num_classes: int = 10) -> ClassCoverage:
    """How evenly samples spread over the classes the evaluator predicts for them.

    Args:
      predictions: (N,) integer class labels, or (N, num_classes) probabilities or logits (argmax taken).
      num_classes: the number of classes.

    Returns:
      `ClassCoverage(counts (num_classes,) int64, entropy)`, entropy of counts / N in nats: log(num_classes)
      (2.303 for 10) when every class is equally frequent, 0 when all samples fall in one class.
    """
    predictions = np.asarray(predictions)
    if predictions.ndim == 2:
        if predictions.shape[1] != num_classes:
            raise ValueError(f"predictions has {predictions.shape[1]} columns, "
                             f"expected num_classes={num_classes}")
        labels = np.argmax(_as_matrix(predictions, "predictions"), axis=1)
    elif predictions.ndim == 1:
        if not np.issubdtype(predictions.dtype, np.integer):
            raise ValueError(f"1-D predictions must be integer labels, got dtype {predictions.dtype}")
        labels = predictions
    else:
        raise ValueError("predictions must be (N,) labels or (N, num_classes) scores, "
                         f"got shape {predictions.shape}")
    if labels.shape[0] == 0:
        raise ValueError("predictions is empty")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    counts = np.bincount(labels, minlength=num_classes).astype(np.int64)
    frequencies = counts[counts > 0] / labels.shape[0]
    entropy = float(-(frequencies * np.log(frequencies)).sum())
    # One class gives -(1 * log 1) = -0.0, which JSON would keep as "-0.0"; every other histogram has
    # entropy > 0. (max(-0.0, 0.0) is -0.0: the two compare equal, so max keeps the first.)
    return ClassCoverage(counts, entropy if entropy > 0 else 0.0)


def discriminator_accuracy(real_logits: np.ndarray, fake_logits: np.ndarray) -> float:
    """Accuracy of a discriminator that calls logit > 0 real, each set weighted equally.

    Args:
      real_logits: logits on real samples, any shape ((N,) or (N, 1)); counted right where > 0.
      fake_logits: logits on generated samples; counted right where < 0. A logit of exactly 0 is wrong
        on either side.

    Returns:
      (fraction of reals right + fraction of fakes right) / 2, in [0, 1]; 0.5 is chance.
    """
    real = np.asarray(real_logits, np.float64).ravel()
    fake = np.asarray(fake_logits, np.float64).ravel()
    for name, logits in (("real_logits", real), ("fake_logits", fake)):
        if logits.size == 0:
            raise ValueError(f"{name} is empty")
        if not np.all(np.isfinite(logits)):
            raise ValueError(f"{name} contains NaN or infinite values")
    return float((np.mean(real > 0) + np.mean(fake < 0)) / 2)


def conditional_accuracy(probs: np.ndarray, labels: np.ndarray) -> float:
    """Share of samples the classifier assigns to the class they were generated for.

    Args:
      probs: (N, num_classes) class probabilities (or logits: only the argmax counts).
      labels: (N,) the classes the samples were asked for.
    """
    probs, labels = np.asarray(probs), np.asarray(labels)
    if probs.ndim != 2 or labels.shape != probs.shape[:1]:
        raise ValueError(f"probs (N, classes) and labels (N,) must agree, got {probs.shape} and "
                         f"{labels.shape}")
    return float(np.mean(np.argmax(probs, axis=1) == labels))


def intra_class_fid(features: np.ndarray, labels: np.ndarray, real_features: np.ndarray,
                    real_labels: np.ndarray, num_classes: int) -> tuple[float, list[float]]:
    """Intra-class FID: the Fréchet distance between the samples of each class and the real images of
    that class, and their mean over the classes (Miyato & Koyama 2018).

    Args:
      features: (N, d) features of the samples; labels (N,) the classes they were generated for.
      real_features: (M, d) features of the real images; real_labels (M,) their classes.
      num_classes: the classes, 0 .. num_classes - 1; each needs 2 samples and 2 real images.

    Returns:
      (mean over classes, [FID of class 0, 1, ...]).
    """
    per_class = []
    for c in range(num_classes):
        mine, real = features[np.asarray(labels) == c], real_features[np.asarray(real_labels) == c]
        if len(mine) < 2 or len(real) < 2:
            raise ValueError(f"class {c} has {len(mine)} sample(s) and {len(real)} real image(s); "
                             f"each needs at least 2")
        per_class.append(frechet_distance(*feature_stats(mine), *feature_stats(real)))
    return float(np.mean(per_class)), per_class
