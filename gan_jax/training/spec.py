"""The static half of training, built from the config: the networks, the objective and its terms,
the batch, the learning-rate schedule, and the numbers a step reads (`Hyperparams`).

The step functions take a `GANSpec` as a static argument: two runs with equal specs share one
compiled program. What a sweep may vary between its runs (`config.SWEEPABLE`) is not baked in: the
spec holds the config's values, and a sweep passes each run's values as arrays instead.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax

from gan_jax import config as config_lib
from gan_jax.model.networks import Discriminator, Generator

# {key: value} for every key of config.SWEEPABLE: the config's Python numbers for one run (constants of
# the compiled step), or arrays with one value per run in a sweep.
Hyperparams = dict[str, Any]


def hyperparams(config: ml_collections.ConfigDict) -> Hyperparams:
    """The config's values of the keys a sweep may vary, with each key's type (int or float)."""
    return {name: type(config_lib.BY_NAME[name].default)(config[name]) for name in config_lib.SWEEPABLE}


def optimizers(hp: Hyperparams, lr_scale: Any = 1.0) -> tuple[optax.GradientTransformation,
                                                             optax.GradientTransformation]:
    """Adam for G and for D with `hp`'s learning rates (times `lr_scale`) and betas."""
    return (optax.adam(hp["g_lr"] * lr_scale, b1=hp["b1"], b2=hp["b2"]),
            optax.adam(hp["d_lr"] * lr_scale, b1=hp["b1"], b2=hp["b2"]))


@dataclasses.dataclass(frozen=True)
class GANSpec:
    """Everything static about training a GAN: networks, objective, batch and schedule.

    The optional terms are switched on by their weights being non-zero (`cycle`, `r1`, `ema`); how
    much they weigh is in `hyperparams`, which the steps read unless they are given a sweep's.
    """

    generator: Generator
    discriminator: Discriminator
    latent_dim: int
    batch_size: int  # the global batch of each D update (a step takes d_steps of them)
    loss: str  # one of config.LOSSES
    d_steps: int  # D updates per G update
    cycle: bool  # G's loss has the tutorial's cycle term (config.cycle_weight > 0)
    r1: bool  # D's loss has the R1 penalty (config.r1_gamma > 0)
    ema: bool  # the state keeps a moving average of G (config.ema_decay > 0)
    num_classes: int  # 0: unconditional; else G and D take class (or cluster) labels
    hyperparams: Hyperparams = dataclasses.field(hash=False)  # compared, not hashed (a dict)
    clusters: int = 0  # self-conditioning's k (then num_classes == clusters); 0: off
    image_shape: tuple[int, int, int] = (28, 28, 1)  # (height, width, channels) of G's images
    augment: tuple[str, ...] = ()  # DiffAugment's transformations before D (gan_jax.model.augment)
    lr_decay: str = "none"  # one of config.LR_DECAYS: how the learning rates fall over decay_steps
    decay_steps: int = 0  # the run's length, over which lr_decay takes the rates to 0
    batch_sharding: Any = None  # "jit" over several devices: how the global batch is laid out

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, axis_name: str | None = None,
                    total_steps: int = 0, batch_sharding: Any = None) -> "GANSpec":
        """Builds networks and settings.

        Args:
          config: a validated run config.
          axis_name: the device axis BatchNorm averages over (pmap/shard_map); None otherwise.
          total_steps: the run's length, what config.lr_decay decays over (training only).
          batch_sharding: for "jit" over several devices, the global batch's layout
            (`parallel.Layout.batch_sharding`).
        """
        model = config.model
        # Parameters and optimizer states stay float32; compute_dtype is what layers compute in.
        dtype = jnp.dtype(model.compute_dtype)
        # A self-conditioned GAN is a conditional one whose classes are the clusters.
        num_classes = model.num_classes or config.self_condition.clusters
        image_shape = config_lib.image_shape(config)
        return cls(
            generator=Generator(width=model.g_width, init_scheme=model.init_scheme,
                                conv_transpose=model.conv_transpose, axis_name=axis_name,
                                dtype=dtype, num_classes=num_classes,
                                condition=model.g_condition, image_size=image_shape[0],
                                channels=image_shape[2]),
            discriminator=Discriminator(width=model.d_width, init_scheme=model.init_scheme,
                                        norm=model.d_norm, axis_name=axis_name, dtype=dtype,
                                        num_classes=num_classes, condition=model.d_condition,
                                        minibatch_std=model.d_minibatch_std),
            latent_dim=config.latent_dim,
            batch_size=config.batch_size,
            loss=config.loss,
            d_steps=config.d_steps,
            cycle=bool(config.cycle_weight),
            r1=bool(config.r1_gamma),
            ema=bool(config.ema_decay),
            num_classes=num_classes,
            hyperparams=hyperparams(config),
            clusters=config.self_condition.clusters,
            image_shape=image_shape,
            augment=config_lib.augment_policy(config.augment),
            lr_decay=config.lr_decay,
            decay_steps=total_steps,
            batch_sharding=batch_sharding,
        )

    def lr_scale(self, step: jax.Array) -> Any:
        """The learning rates' factor at `step`: 1 throughout without decay, else falling from 1 at
        step 0 to 0 at `decay_steps` (linearly, or along half a cosine)."""
        if self.lr_decay == "none":
            return 1.0
        progress = jnp.clip(step.astype(jnp.float32) / max(self.decay_steps, 1), 0.0, 1.0)
        if self.lr_decay == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
