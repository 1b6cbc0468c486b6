"""Self-conditioning (Liu et al. 2020, "Diverse Image Generation via Self-Conditioned GANs"): G and D
conditioned on clusters of D's own features of the real images, so an unconditional GAN gets the
benefit of class conditioning without reading a label.

`config.self_condition.clusters = k` turns it on: G and D are the conditional networks with k classes
(`model.g_condition`, `model.d_condition`), each real image's class is its cluster, and G asks for
cluster c as often as the real images fall in it. Every `self_condition.every` steps (and before the
first step; more often early with `self_condition.first_every`) the loop reclusters (`recluster`):

1. D's penultimate features (inference mode) of every training image, projected to PROJECTION_DIMS
   by a fixed Gaussian matrix: the distances survive the projection, so k-means finds clusters as
   pure at a fraction of the cost (docs/speed.md, "Why the code is as it is");
2. k-means, started from the means of the previous clusters' members in the new features (the
   paper's initialization: a cluster keeps its images unless they moved) or, the first time, from
   k-means++; LLOYD_ITERATIONS Lloyd steps;
3. the new clusters matched to the old ones by the Hungarian algorithm on their overlap
   (`scipy.optimize.linear_sum_assignment`), so that cluster c stays cluster c for G and D.

Everything is drawn from the run's training key (fold_in of `CLUSTER_STREAM`, then of the step), so a
run stays a pure function of its seed; the clusters are part of the state, hence of checkpoints, and
a resumed run reclusters exactly as an uninterrupted one.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from gan_jax.data.batches import to_model_range
from gan_jax.model.inference import batched
from gan_jax.model.networks import Discriminator

PROJECTION_DIMS = 256
LLOYD_ITERATIONS = 20
CLUSTER_STREAM = 0x5E1F  # folded into the training key for the clustering's randomness


@flax.struct.dataclass
class Clusters:
    """The clusters of the training images.

    Attributes:
      assignments: int32 (num_train_images,): each training image's cluster, its class for D.
      counts: int32 (k,): the images in each cluster; G draws its classes in these proportions. All
        zero before the first clustering.
    """

    assignments: jax.Array
    counts: jax.Array


def empty(num_images: int, num_clusters: int) -> Clusters:
    """The clusters of a run that has not clustered yet."""
    return Clusters(np.zeros(num_images, np.int32), np.zeros(num_clusters, np.int32))


def is_empty(clusters: Clusters) -> bool:
    return int(np.asarray(clusters.counts).sum()) == 0


def is_reclustering_step(step: int, every: int, first_every: int = 0) -> bool:
    """Whether the schedule reclusters at `step`: at 0, then every `every` steps; with `first_every`,
    after `first_every` steps first and each interval twice the one before until it is `every`
    (0, f, 3f, 7f, ...): D's features change fastest early, and a reclustering costs a pass of D over
    every training image, so the early ones are worth it and the later ones are not."""
    if not first_every:
        return step % every == 0
    mark, interval = 0, first_every
    while mark < step and interval < every:
        mark, interval = mark + interval, 2 * interval
    return mark == step or (mark < step and (step - mark) % every == 0)


def reclustering_due(clusters: Clusters | None, step: int, every: int, first_every: int = 0) -> bool:
    """Whether the loop reclusters before the step after `step`: on the schedule
    (`is_reclustering_step`), and first."""
    return clusters is not None and (is_reclustering_step(step, every, first_every) or
                                     is_empty(clusters))


@functools.partial(jax.jit, static_argnums=0)
def _projected_features(discriminator: Discriminator, variables: Any, images: jax.Array,
                        projection: jax.Array) -> jax.Array:
    features = discriminator.apply(variables, to_model_range(images), train=False, features_only=True)
    return features.astype(jnp.float32) @ projection


def features(discriminator: Discriminator, variables: Any, images: np.ndarray,
             key: jax.Array) -> np.ndarray:
    """D's penultimate features of `images` (uint8), projected to PROJECTION_DIMS: (N, dims) float32.

    The projection is N(0, 1 / dims), drawn from `key` (the same for the whole run)."""
    width = jax.eval_shape(
        lambda: discriminator.apply(variables, jnp.zeros((1, *images.shape[1:]), jnp.float32),
                                    train=False, features_only=True)).shape[-1]
    projection = jax.random.normal(key, (width, PROJECTION_DIMS)) / np.sqrt(PROJECTION_DIMS)
    variables = jax.device_put(variables)
    return batched(lambda x, _: _projected_features(discriminator, variables, x, projection), images)


@functools.partial(jax.jit, static_argnums=2)
def _kmeans_plus_plus(points: jax.Array, key: jax.Array, k: int) -> jax.Array:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): each next centre drawn in proportion to the
    squared distance to the nearest one so far."""
    first = points[jax.random.randint(jax.random.fold_in(key, 0), (), 0, points.shape[0])]

    def add(i, carry):
        centres, nearest = carry
        pick = jax.random.choice(jax.random.fold_in(key, i), points.shape[0], p=nearest / nearest.sum())
        centre = points[pick]
        return centres.at[i].set(centre), jnp.minimum(nearest, jnp.sum((points - centre) ** 2, axis=1))

    centres = jnp.zeros((k, points.shape[1]), points.dtype).at[0].set(first)
    nearest = jnp.sum((points - first) ** 2, axis=1)
    return jax.lax.fori_loop(1, k, add, (centres, nearest))[0]


@jax.jit
def _lloyd(points: jax.Array, centres: jax.Array) -> tuple[jax.Array, jax.Array]:
    """LLOYD_ITERATIONS steps of k-means from `centres`: (centres, assignments). A cluster that loses
    every point keeps its centre."""
    squared_norms = jnp.sum(points ** 2, axis=1)

    def assign(centres):
        distances = squared_norms[:, None] - 2 * points @ centres.T + jnp.sum(centres ** 2, axis=1)
        return jnp.argmin(distances, axis=1)

    def step(centres, _):
        members = jax.nn.one_hot(assign(centres), centres.shape[0], dtype=points.dtype)
        counts = members.sum(axis=0)[:, None]
        return jnp.where(counts > 0, members.T @ points / jnp.maximum(counts, 1), centres), None

    centres, _ = jax.lax.scan(step, centres, length=LLOYD_ITERATIONS)
    return centres, assign(centres).astype(jnp.int32)


def _initial_centres(points: np.ndarray, previous: np.ndarray | None, k: int,
                     key: jax.Array) -> jax.Array:
    """The previous clusters' means in the new features; k-means++ for the first clustering, and
    for a previous cluster without members."""
    seeded = _kmeans_plus_plus(jnp.asarray(points), key, k)
    if previous is None:
        return seeded
    members = jax.nn.one_hot(previous, k, dtype=jnp.float32)
    counts = members.sum(axis=0)[:, None]
    means = members.T @ jnp.asarray(points) / jnp.maximum(counts, 1)
    return jnp.where(counts > 0, means, seeded)


def match(new: np.ndarray, old: np.ndarray, k: int) -> np.ndarray:
    """The permutation of new cluster ids that best keeps old ones: `perm[new_id] = old_id`,
    maximizing the images whose cluster id stays (the Hungarian algorithm on the overlap counts)."""
    overlap = np.zeros((k, k), np.int64)
    np.add.at(overlap, (new, old), 1)
    rows, cols = scipy.optimize.linear_sum_assignment(-overlap)
    permutation = np.empty(k, np.int64)
    permutation[rows] = cols
    return permutation


def recluster(discriminator: Discriminator, d_variables: Any, clusters: Clusters, images: np.ndarray,
              train_key: jax.Array, step: int) -> Clusters:
    """The clusters of `images` in the features of D (`d_variables`), stable against `clusters`.

    Args:
      discriminator: D's module (a conditional one, of k classes).
      d_variables: D's {"params", "batch_stats"} now.
      clusters: the current clusters (empty before the first clustering).
      images: the training split, uint8 (N, h, w, c), in the order `clusters.assignments` follows.
      train_key: the run's training key (typed).
      step: the step the clustering is for (its k-means++ draws depend on it).
    """
    k = int(np.asarray(clusters.counts).shape[0])
    stream = jax.random.fold_in(train_key, CLUSTER_STREAM)
    points = features(discriminator, d_variables, images, jax.random.fold_in(stream, 0))
    previous = None if is_empty(clusters) else np.asarray(clusters.assignments)
    centres = _initial_centres(points, previous, k, jax.random.fold_in(jax.random.fold_in(stream, 1), step))
    _, assignments = _lloyd(jnp.asarray(points), centres)
    assignments = np.asarray(assignments)
    if previous is not None:
        assignments = match(assignments, previous, k)[assignments].astype(np.int32)
    return Clusters(assignments.astype(np.int32), np.bincount(assignments, minlength=k).astype(np.int32))


def purity(assignments: np.ndarray, labels: np.ndarray) -> float:
    """The share of images whose label is their cluster's most common one (a diagnostic: the clusters
    never see the labels)."""
    k = int(assignments.max()) + 1
    table = np.zeros((k, int(labels.max()) + 1), np.int64)
    np.add.at(table, (assignments, labels), 1)
    return float(table.max(axis=1).sum() / len(labels))
