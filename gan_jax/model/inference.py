"""G and D in inference mode (BatchNorm's running statistics) on many inputs: batched to bound memory,
and compiled once per architecture and batch shape, for the sample grids of training, `gan_jax.sample`
and `gan_jax.evaluate` alike.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import numpy as np

from gan_jax.data.batches import to_model_range
from gan_jax.model.networks import Discriminator, Generator, split_output

BATCH_SIZE = 1_000  # images per compiled call of G or D: bounds memory


def batched(fn: Callable[..., Any], inputs: np.ndarray, labels: np.ndarray | None = None,
            batch_size: int = BATCH_SIZE) -> np.ndarray:
    """`fn(inputs, labels)` over `batch_size` rows at a time (labels None for unconditional GANs).

    The last batch is padded to full size, so one compilation serves every count; each output row
    depends only on its input row (everything here runs in inference mode), so padding changes nothing.
    """
    def padded(array, start, batch):
        chunk = array[start:start + batch]
        if len(chunk) < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        return chunk

    n = inputs.shape[0]
    batch = min(batch_size, n)
    outputs = []
    for start in range(0, n, batch):
        chunk_labels = None if labels is None else padded(labels, start, batch)
        output = fn(padded(inputs, start, batch), chunk_labels)
        outputs.append(np.asarray(output)[:min(batch, n - start)])
    return np.concatenate(outputs)


# Jitted with the flax module as a static argument: modules compare equal field by field, so every
# call with the same architecture reuses one compilation.
@functools.partial(jax.jit, static_argnums=0)
def _generate(generator: Generator, variables, noise, labels):
    return generator.apply(variables, noise, train=False, labels=labels)


@functools.partial(jax.jit, static_argnums=0)
def _discriminate(discriminator: Discriminator, variables, images, labels):
    if images.dtype == np.uint8:  # decided when tracing: one compilation per input dtype
        images = to_model_range(images)
    logits, _ = split_output(discriminator.apply(variables, images, train=False, labels=labels))
    return logits


def generate_images(generator: Generator, variables: dict[str, Any], noise: np.ndarray,
                    labels: np.ndarray | None = None) -> np.ndarray:
    """G on `noise` (N, latent_dim): float32 images (N, height, width, channels) in [-1, 1].

    `variables` are G's {"params", "batch_stats"}, e.g. `TrainState.sampling_variables()`; `labels`
    (N,) the classes asked for, for a conditional G.
    """
    variables = jax.device_put(variables)  # once, not once per batch
    return batched(lambda z, y: _generate(generator, variables, z, y), noise, labels)


def discriminate(discriminator: Discriminator, variables: dict[str, Any], images: np.ndarray,
                 labels: np.ndarray | None = None) -> np.ndarray:
    """D's logits (N,) float32 for uint8 images or floats in [-1, 1] (and their labels, for a
    conditional D); `variables` are D's {"params", "batch_stats"}."""
    variables = jax.device_put(variables)
    return batched(lambda x, y: _discriminate(discriminator, variables, x, y), images, labels)


def class_grid(noise: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """A class grid's inputs: every class (a row each) with the same `noise` vectors (a column each),
    so a column shows one "style" across the classes. Returns (noise (classes * n, latent_dim),
    labels (classes * n,) int32), row-major."""
    labels = np.repeat(np.arange(num_classes, dtype=np.int32), len(noise))
    return np.tile(np.asarray(noise), (num_classes, 1)), labels


def balanced_labels(num: int, num_classes: int) -> np.ndarray:
    """0, 1, ..., num_classes - 1, 0, 1, ...: `num` labels, every class as often as can be (int32)."""
    return (np.arange(num) % num_classes).astype(np.int32)


def latent_noise(seed: int, num: int, latent_dim: int) -> np.ndarray:
    """z ~ N(0, 1), (num, latent_dim) float32, a pure function of the seed (and of num)."""
    return np.asarray(jax.random.normal(jax.random.key(seed), (num, latent_dim)))


def share_labels(counts: np.ndarray, num: int, grouped: bool = False) -> np.ndarray:
    """`num` labels in the proportions of `counts` (a self-conditioned G's clusters), stratified rather
    than drawn: the clusters at quantiles (i + 0.5) / num, so each cluster gets its share up to
    rounding, and the same counts always give the same labels (int32).

    They come in a fixed shuffled order, so that any run of them (the classifier score's splits, a
    batch) holds the clusters in proportion; `grouped` keeps them in cluster order instead (a grid
    whose rows show one cluster each).
    """
    cumulative = np.cumsum(np.asarray(counts, np.float64))
    if cumulative[-1] <= 0:
        raise ValueError("no cluster has any image")
    quantiles = (np.arange(num) + 0.5) / num * cumulative[-1]
    labels = np.searchsorted(cumulative, quantiles, side="right").astype(np.int32)
    return labels if grouped else labels[np.random.default_rng(0).permutation(num)]
