"""The evaluator network: a small CNN classifier whose penultimate layer is the feature space for FID & co.

Inception cannot be downloaded here, and on 28x28 digits or clothes a classifier trained on the dataset
itself is the standard choice (TF-GAN's `mnist_frechet_distance` / `mnist_score`). The network has no
BatchNorm and no dropout, so its outputs are a pure function of (params, images): the same images always
give the same features, in training mode or not.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.data.idx import IMAGE_SHAPE

NUM_CLASSES = 10
FEATURE_DIM = 128
# Bump when the architecture changes, so weights trained for another one are refused at load time.
ARCHITECTURE = "evaluator-cnn-v1: conv32-pool-conv64-pool-conv128-pool-dense128-dense10"


class EvaluatorCNN(nn.Module):
    """conv32-pool-conv64-pool-conv128-pool-dense128-dense10, ReLU throughout.

    Pooling early keeps a training step cheap on a CPU (about 8 M multiply-adds per image) and the
    parameter count near 240 k (under 1 MB of float32), small enough to ship in the repository.
    """

    num_classes: int = NUM_CLASSES
    feature_dim: int = FEATURE_DIM

    @nn.compact
    def __call__(self, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Classifies a batch of images.

        Args:
          images: float32 (N, 28, 28, 1) in [-1, 1].

        Returns:
          (logits (N, num_classes), features (N, feature_dim)): the features are the post-ReLU
          activations of the penultimate layer, the space in which FID, KID and precision/recall
          are measured.
        """
        x = images
        for width in (32, 64, 128):
            x = nn.relu(nn.Conv(width, (3, 3), padding="SAME")(x))
            # 28 -> 14 -> 7 -> 3: the last pool drops the odd row and column, a 3x3x128 map.
            x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="VALID")
        x = x.reshape((x.shape[0], -1))
        features = nn.relu(nn.Dense(self.feature_dim)(x))
        logits = nn.Dense(self.num_classes)(features)
        return logits, features


def init_params(key: jax.Array, model: EvaluatorCNN | None = None) -> dict:
    """Initial parameters (the `params` collection) of `model`, the default network if None."""
    model = model or EvaluatorCNN()
    return model.init(key, jnp.zeros((1, *IMAGE_SHAPE), jnp.float32))["params"]


def param_shapes(model: EvaluatorCNN | None = None) -> dict:
    """The `params` tree of `model` as `jax.ShapeDtypeStruct`s, computed without running it."""
    model = model or EvaluatorCNN()
    return jax.eval_shape(lambda: init_params(jax.random.key(0), model))


def num_params(params: dict) -> int:
    """Total number of scalars in a parameter tree."""
    return sum(int(p.size) for p in jax.tree_util.tree_leaves(params))
