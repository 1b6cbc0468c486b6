"""Differentiable augmentation (Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN
Training"): the same random transformations applied to every image D sees, real and generated, in D's
step and in G's, so D cannot tell them apart by the augmentation and G learns through it.

`config.augment` names the policy, a comma-separated subset of `config.AUGMENTATIONS` ("" is off, the
tutorial's; `config.augment_policy` parses it):

| name | what | paper's setting |
| --- | --- | --- |
| translation | shift by up to 1/8 of the image size each way, the uncovered border filled with 0 | ratio 0.125 |
| cutout | one square of half the image size set to 0, at a random place (it may overhang the edge) | ratio 0.5 |
| color | brightness (+U[-0.5, 0.5]), saturation (x U[0, 2], RGB only) and contrast (x U[0.5, 1.5]) | as the paper |

Images are in [-1, 1], so 0 is the middle gray, as in the paper's code (which pads and masks with 0 in
the same range). Each image draws its own transformation; real and generated images draw theirs from
the same distribution (independent draws), as the paper does. The draws are for the whole global batch
and each device keeps its slice, so 1 device and N devices augment alike.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from gan_jax.config import AUGMENTATIONS

# Keeps a device's rows of a draw made for the global batch (the identity on one device).
LocalSlice = Callable[[jax.Array], jax.Array]

TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


def _shift(images: jax.Array, offsets: jax.Array, axis: int) -> jax.Array:
    """Each image moved by its offset along `axis` (1: rows, 2: columns), zeros moving in.

    A one-hot (size x size) matrix per image does the move, so the gradient is exact and cheap.
    """
    size = images.shape[axis]
    source = jnp.arange(size)[None, :] - offsets[:, None]  # (batch, size): where each pixel comes from
    moves = jax.nn.one_hot(source, size, dtype=images.dtype)  # out-of-range sources give zero rows
    spec = "bij,bjwc->biwc" if axis == 1 else "bij,bhjc->bhic"
    return jnp.einsum(spec, moves, images)


def translation(images: jax.Array, key: jax.Array, batch: int, local: LocalSlice) -> jax.Array:
    """Shifts each image by up to `TRANSLATION_RATIO` of its size in each direction."""
    height, width = images.shape[1:3]
    max_y, max_x = int(height * TRANSLATION_RATIO + 0.5), int(width * TRANSLATION_RATIO + 0.5)
    key_y, key_x = jax.random.split(key)
    dy = local(jax.random.randint(key_y, (batch,), -max_y, max_y + 1))
    dx = local(jax.random.randint(key_x, (batch,), -max_x, max_x + 1))
    return _shift(_shift(images, dy, axis=1), dx, axis=2)


def cutout(images: jax.Array, key: jax.Array, batch: int, local: LocalSlice) -> jax.Array:
    """Sets one square of `CUTOUT_RATIO` of the size to 0 in each image, centred anywhere in it."""
    height, width = images.shape[1:3]
    size_y, size_x = int(height * CUTOUT_RATIO + 0.5), int(width * CUTOUT_RATIO + 0.5)
    key_y, key_x = jax.random.split(key)
    # The paper's centres: 0 .. size + (1 - cutout % 2) - 1, so the square may overhang every edge.
    cy = local(jax.random.randint(key_y, (batch, 1), 0, height + (1 - size_y % 2)))
    cx = local(jax.random.randint(key_x, (batch, 1), 0, width + (1 - size_x % 2)))
    rows, cols = jnp.arange(height)[None, :], jnp.arange(width)[None, :]
    inside_y = (rows >= cy - size_y // 2) & (rows < cy - size_y // 2 + size_y)
    inside_x = (cols >= cx - size_x // 2) & (cols < cx - size_x // 2 + size_x)
    keep = ~(inside_y[:, :, None] & inside_x[:, None, :])
    return images * keep[..., None].astype(images.dtype)


def color(images: jax.Array, key: jax.Array, batch: int, local: LocalSlice) -> jax.Array:
    """Random brightness, saturation (3-channel images only) and contrast, per image."""
    draws = jax.random.uniform(key, (batch, 3, 1, 1, 1), images.dtype)
    brightness, saturation, contrast = jnp.moveaxis(local(draws), 1, 0)
    images = images + (brightness - 0.5)
    if images.shape[-1] == 3:
        gray = images.mean(axis=-1, keepdims=True)
        images = (images - gray) * (saturation * 2) + gray
    mean = images.mean(axis=(1, 2, 3), keepdims=True)
    return (images - mean) * (contrast + 0.5) + mean


_TRANSFORMS = {"color": color, "translation": translation, "cutout": cutout}


def augment(images: jax.Array, key: jax.Array, policy: tuple[str, ...], batch: int | None = None,
            local: LocalSlice = lambda x: x) -> jax.Array:
    """`images` through each transformation of `policy` in turn; unchanged for an empty policy.

    Args:
      images: (local batch, height, width, channels) in [-1, 1].
      key: each transformation draws from its own key folded out of this one.
      policy: names from AUGMENTATIONS (see `config.augment_policy`).
      batch: the global batch the draws are made for (default: `images`' own batch).
      local: keeps this device's rows of a global draw (`images` are those rows of the global batch).
    """
    batch = images.shape[0] if batch is None else batch
    for index, name in enumerate(AUGMENTATIONS):
        if name in policy:
            images = _TRANSFORMS[name](images, jax.random.fold_in(key, index), batch, local)
    return images
