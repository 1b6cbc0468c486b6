"""What the train step reads of the data, and how it picks its batches.

The whole split is put on the device once; each training step gathers its batch on the device from
its epoch's permutation, a pure function of (key, epoch) computed once per epoch, so a resumed run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


def to_model_range(images: jax.Array) -> jax.Array:
    """uint8 pixels in [0, 255] -> float32 in [-1, 1], the range of the generator's tanh."""
    return images.astype(jnp.float32) / 127.5 - 1.0


class TrainData(NamedTuple):
    """What the train step reads: the whole split and the batch order of the epochs at hand.

    Attributes:
      images: uint8 (num_examples, 28, 28, 1), resident on the device for the whole run.
      orders: int32 (2, num_examples): row `e % 2` is epoch e's permutation, for the epoch of the
        call's first step and the next one, so a call of several steps may cross one epoch boundary.
      labels: uint8 (num_examples,), the class of each image, resident likewise; None for an
        unconditional run, which never reads them. A batch's labels are gathered with its images'
        indices.
    """

    images: Any
    orders: Any
    labels: Any = None


def epoch_permutation(key: jax.Array, epoch: int | jax.Array, num_examples: int) -> jax.Array:
    """Epoch `epoch`'s data order: a pure function of (key, epoch), drawn from fold_in(key, epoch)."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)


def epoch_orders(key: jax.Array, epoch: int, num_examples: int) -> np.ndarray:
    """TrainData.orders for a call starting in `epoch`: epochs `epoch` and `epoch + 1` by parity."""
    rows = [np.asarray(_epoch_permutation(key, e, num_examples)) for e in (epoch, epoch + 1)]
    return np.stack(rows[::-1] if epoch % 2 else rows)


_epoch_permutation = jax.jit(epoch_permutation, static_argnums=2)


def batch_from_orders(orders: jax.Array, step: jax.Array, batch_size: int) -> jax.Array:
    """Indices of the global batch of `step`, from TrainData.orders (the epoch's ragged tail dropped)."""
    steps_per_epoch = orders.shape[1] // batch_size
    return _batch_of(orders[(step // steps_per_epoch) % 2], step, batch_size, steps_per_epoch)


def batch_indices(key: jax.Array, step: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """Indices of the global batch for `step`, computing the epoch's permutation on the spot.

    The same order as `batch_from_orders` gives, for callers that do not keep the permutations.
    """
    steps_per_epoch = num_examples // batch_size
    permutation = epoch_permutation(key, step // steps_per_epoch, num_examples)
    return _batch_of(permutation, step, batch_size, steps_per_epoch)


def _batch_of(order: jax.Array, step: jax.Array, batch_size: int, steps_per_epoch: int) -> jax.Array:
    return jax.lax.dynamic_slice_in_dim(order, (step % steps_per_epoch) * batch_size, batch_size)
