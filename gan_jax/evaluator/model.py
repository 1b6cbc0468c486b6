"""The evaluator network: a small CNN classifier whose penultimate layer is the feature space for FID & co.

Inception cannot be downloaded here, and on 28x28 digits or clothes a classifier trained on the dataset
itself is the standard choice (TF-GAN's `mnist_frechet_distance` / `mnist_score`). The network has no
BatchNorm and no dropout, so its outputs are a pure function of (params, images): the same images always
give the same features, in training mode or not.

The shipped evaluators take 28x28x1 images and 10 classes. One for a user's own images (`python -m
gan_jax.evaluator.train --source folder ...`) takes that data's shape and classes: one more conv-pool
stage per doubling of the side past 32, so the map before the dense layers stays 3x3 or 4x4.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.data.idx import IMAGE_SHAPE

NUM_CLASSES = 10
FEATURE_DIM = 128
_WIDTHS = (32, 64, 128)  # the shipped network's convolutions; larger images repeat the last


def conv_widths(image_size: int) -> tuple[int, ...]:
    """The convolutions' widths for square images of `image_size`: 3 for up to 32 pixels (28 -> 3x3,
    32 -> 4x4), one more per doubling past that (64: 4, 128: 5)."""
    extra = max(0, math.ceil(math.log2(image_size / 32)))
    return _WIDTHS + (_WIDTHS[-1],) * extra


def architecture(image_shape: tuple[int, int, int] = IMAGE_SHAPE, num_classes: int = NUM_CLASSES) -> str:
    """The network's name for weights trained on `image_shape` and `num_classes`, recorded with them
    so that weights of another network are refused at load time. Bump the version when the network
    changes."""
    layers = "".join(f"conv{width}-pool-" for width in conv_widths(image_shape[0]))
    name = f"evaluator-cnn-v1: {layers}dense{FEATURE_DIM}-dense{num_classes}"
    if tuple(image_shape) != IMAGE_SHAPE:
        name += f" on {image_shape[0]}x{image_shape[1]}x{image_shape[2]}"
    return name


ARCHITECTURE = architecture()  # the shipped evaluators'


class EvaluatorCNN(nn.Module):
    """conv32-pool-conv64-pool-conv128-pool[-conv128-pool...]-dense128-dense(num_classes), ReLU
    throughout.

    Pooling early keeps a training step cheap on a CPU (about 8 M multiply-adds per 28x28 image) and
    the parameter count near 240 k (under 1 MB of float32), small enough to ship in the repository.
    """

    num_classes: int = NUM_CLASSES
    feature_dim: int = FEATURE_DIM

    @nn.compact
    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Classifies a batch of images.

        Args:
          images: float32 (N, H, W, C) in [-1, 1], H = W.

        Returns:
          (logits (N, num_classes), features (N, feature_dim)): the features are the post-ReLU
          activations of the penultimate layer, the space in which FID, KID and precision/recall
          are measured.
        """
        x = images
        for width in conv_widths(images.shape[1]):
            x = nn.relu(nn.Conv(width, (3, 3), padding="SAME")(x))
            # 28 -> 14 -> 7 -> 3: the last pool drops the odd row and column, a 3x3x128 map.
            x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        x = x.reshape((x.shape[0], -1))
        features = nn.relu(nn.Dense(self.feature_dim)(x))
        logits = nn.Dense(self.num_classes)(features)
        return logits, features


def init_params(key: jax.Array, model: EvaluatorCNN | None = None,
                image_shape: tuple[int, int, int] = IMAGE_SHAPE) -> dict:
    """Initial parameters (the `params` collection) of `model` (the default network if None) for
    images of `image_shape`."""
    model = model or EvaluatorCNN()
    return model.init(key, jnp.zeros((1, *image_shape), jnp.float32))["params"]


def param_shapes(model: EvaluatorCNN | None = None,
                 image_shape: tuple[int, int, int] = IMAGE_SHAPE) -> dict:
    """The `params` tree of `model` as `jax.ShapeDtypeStruct`s, computed without running it."""
    model = model or EvaluatorCNN()
    return jax.eval_shape(lambda: init_params(jax.random.key(0), model, image_shape))


def num_params(params: dict) -> int:
    """Total number of scalars in a parameter tree."""
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
