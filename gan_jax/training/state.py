"""The training state: one pytree holding everything a run needs to continue bit-for-bit.

`TrainState` is what a checkpoint saves: both networks' parameters, BatchNorm statistics and Adam states,
the step, the training key and, with `ema_decay > 0`, the moving average of G's weights. The networks,
optimizers and loss settings are not state: `GANSpec` (gan_jax.training.spec) holds them.
"""

from __future__ import annotations

import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp

from gan_jax.training import clusters as clusters_lib
from gan_jax.training.spec import GANSpec, optimizers


@flax.struct.dataclass
class NetworkState:
    """One network's trainable parameters, BatchNorm running statistics and optimizer state."""

    params: Any
    batch_stats: Any
    opt_state: Any

    def variables(self) -> dict[str, Any]:
        """The flax variables dict that `Module.apply` takes."""
        return {"params": self.params, "batch_stats": self.batch_stats}


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, as one pytree.

    Attributes:
      step: int32 scalar, the number of completed training steps.
      generator: G's parameters, BatchNorm statistics and Adam state.
      discriminator: D's, likewise.
      key: typed PRNG key for training randomness; each step uses `fold_in(key, step)`, so a resumed
        run draws the same numbers as an uninterrupted one.
      generator_ema: with `ema_decay > 0`, the exponential moving average of G's variables
        ({"params", "batch_stats"}, see `steps.update_ema`); None otherwise, which adds no leaves,
        so the state (and its checkpoints) are then exactly what they were before EMA existed.
      clusters: with self-conditioning, the training images' clusters (`clusters.Clusters`); None
        otherwise (no leaves), likewise.
    """

    step: jax.Array
    generator: NetworkState
    discriminator: NetworkState
    key: jax.Array
    generator_ema: Any = None
    clusters: Any = None

    def sampling_variables(self, use_ema: bool = True) -> dict[str, Any]:
        """The variables G samples with: the moving average when there is one (and `use_ema`), else
        G's own parameters and BatchNorm running statistics."""
        if use_ema and self.generator_ema is not None:
            return dict(self.generator_ema)
        return self.generator.variables()


def _init_network(module, optimizer, key, example_input, num_classes: int) -> NetworkState:
    labels = jnp.zeros((1,), jnp.int32) if num_classes else None
    variables = module.init(key, example_input, train=False, labels=labels)
    params = variables["params"]
    # A D without normalization has no batch_stats collection: an empty dict keeps the state's shape.
    return NetworkState(params=params, batch_stats=variables.get("batch_stats", {}),
                        opt_state=optimizer.init(params))


def seed_keys(seed: int) -> dict[str, jax.Array]:
    """The run's seed split once by purpose, so no two uses of randomness share a key."""
    purposes = ("generator_init", "discriminator_init", "train", "sample_noise")
    return dict(zip(purposes, jax.random.split(jax.random.key(seed), len(purposes))))


def create_train_state(gan: GANSpec, seed: int, num_train_images: int = 0) -> TrainState:
    """Initial state from a seed: both networks initialized, Adam states zero, step 0; with
    self-conditioning, no clusters yet for the `num_train_images` training images."""
    keys = seed_keys(seed)
    # Adam's initial state (zero moments) does not depend on its hyperparameters.
    g_optimizer, d_optimizer = optimizers(gan.hyperparams)
    generator = _init_network(gan.generator, g_optimizer, keys["generator_init"],
                              jnp.zeros((1, gan.latent_dim), jnp.float32), gan.num_classes)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        generator=generator,
        discriminator=_init_network(gan.discriminator, d_optimizer, keys["discriminator_init"],
                                    jnp.zeros((1, *gan.image_shape), jnp.float32), gan.num_classes),
        key=keys["train"],
        # The average starts at G's initial variables (a copy: the state's buffers are donated).
        generator_ema=jax.tree.map(jnp.copy, generator.variables()) if gan.ema else None,
        clusters=(clusters_lib.empty(num_train_images, gan.clusters) if gan.clusters else None),
    )


def abstract_train_state(gan: GANSpec, seed: int = 0, num_train_images: int = 0) -> TrainState:
    """The state's shapes and dtypes without computing it, for restoring checkpoints into."""
    return jax.eval_shape(functools.partial(create_train_state, gan, seed, num_train_images))


def count_params(params: Any) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(params))
