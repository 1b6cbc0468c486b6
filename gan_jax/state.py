"""The training state: one pytree holding everything a run needs to continue bit-for-bit.

`TrainState` is what a checkpoint saves: both networks' parameters, BatchNorm statistics and Adam states,
the step, and the training key. The models and optimizers themselves are not state: `GAN` holds them,
built from the config, and the step functions take it as a static argument.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax

from gan_jax.models import Discriminator, Generator

IMAGE_SHAPE = (28, 28, 1)


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
    """

    step: jax.Array
    generator: NetworkState
    discriminator: NetworkState
    key: jax.Array


@dataclasses.dataclass(frozen=True)
class GAN:
    """The static half of training: models, optimizers and loss settings, all from the config."""

    generator: Generator
    discriminator: Discriminator
    g_optimizer: optax.GradientTransformation
    d_optimizer: optax.GradientTransformation
    latent_dim: int
    batch_size: int  # the global batch
    cycle_weight: float

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, axis_name: str | None = None) -> "GAN":
        """Builds models and optimizers; `axis_name` names the device axis BatchNorm averages over."""
        model = config.model
        # Parameters and optimizer states stay float32; compute_dtype is what layers compute in.
        dtype = jnp.dtype(model.compute_dtype)
        return cls(
            generator=Generator(width=model.g_width, init_scheme=model.init_scheme,
                                conv_transpose=model.conv_transpose, axis_name=axis_name,
                                dtype=dtype),
            discriminator=Discriminator(width=model.d_width, init_scheme=model.init_scheme,
                                        axis_name=axis_name, dtype=dtype),
            g_optimizer=optax.adam(config.g_lr, b1=config.b1, b2=config.b2),
            d_optimizer=optax.adam(config.d_lr, b1=config.b1, b2=config.b2),
            latent_dim=config.latent_dim,
            batch_size=config.batch_size,
            cycle_weight=float(config.cycle_weight),
        )


def _init_network(module, optimizer, key, example_input) -> NetworkState:
    variables = module.init(key, example_input, train=False)
    params = variables["params"]
    return NetworkState(params=params, batch_stats=variables["batch_stats"],
                        opt_state=optimizer.init(params))


def seed_keys(seed: int) -> dict[str, jax.Array]:
    """The run's seed split once by purpose, so no two uses of randomness share a key."""
    purposes = ("generator_init", "discriminator_init", "train", "sample_noise")
    return dict(zip(purposes, jax.random.split(jax.random.key(seed), len(purposes))))


def create_train_state(gan: GAN, seed: int) -> TrainState:
    """Initial state from a seed: both networks initialized, Adam states zero, step 0."""
    keys = seed_keys(seed)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        generator=_init_network(gan.generator, gan.g_optimizer, keys["generator_init"],
                                jnp.zeros((1, gan.latent_dim), jnp.float32)),
        discriminator=_init_network(gan.discriminator, gan.d_optimizer, keys["discriminator_init"],
                                    jnp.zeros((1, *IMAGE_SHAPE), jnp.float32)),
        key=keys["train"],
    )


def abstract_train_state(gan: GAN, seed: int = 0) -> TrainState:
    """The state's shapes and dtypes without computing it, for restoring checkpoints into."""
    return jax.eval_shape(functools.partial(create_train_state, gan, seed))


def count_params(params: Any) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(params))
