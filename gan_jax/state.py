"""The training state: one pytree holding everything a run needs to continue bit-for-bit.

`TrainState` is what a checkpoint saves: both networks' parameters, BatchNorm statistics and Adam states,
the step, the training key and, with `ema_decay > 0`, the moving average of G's weights. The models,
optimizers and loss settings are not state: `GAN` holds them, built from the config, and the step
functions take it as a static argument.
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

from gan_jax import augment
from gan_jax.idx import IMAGE_SHAPE
from gan_jax.models import Discriminator, Generator


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
    """

    step: jax.Array
    generator: NetworkState
    discriminator: NetworkState
    key: jax.Array
    generator_ema: Any = None

    def sampling_variables(self, use_ema: bool = True) -> dict[str, Any]:
        """The variables G samples with: the moving average when there is one (and `use_ema`), else
        G's own parameters and BatchNorm running statistics."""
        if use_ema and self.generator_ema is not None:
            return dict(self.generator_ema)
        return self.generator.variables()


@flax.struct.dataclass
class Hyperparams:
    """The numbers a training step reads that leave its program unchanged: learning rates, Adam's
    betas, the loss weights (ACGAN's too) and the EMA's decay and start (the config keys of the same
    names).

    For one run they are the config's Python numbers, constants of the compiled step. A sweep
    (`gan_jax.sweep`) passes arrays with one value per run instead, so runs with other learning rates
    share one program.
    """

    g_lr: Any
    d_lr: Any
    b1: Any
    b2: Any
    cycle_weight: Any
    gp_weight: Any
    r1_gamma: Any
    ema_decay: Any
    ema_start: Any
    ac_weight: Any

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict) -> "Hyperparams":
        return cls(**{name: int(config[name]) if name == "ema_start" else float(config[name])
                      for name in HYPERPARAMETERS})

    def optimizers(self, lr_scale: Any = 1.0) -> tuple[optax.GradientTransformation,
                                                         optax.GradientTransformation]:
        """Adam for G and for D with these learning rates (times `lr_scale`, see `lr_scale`) and betas."""
        return (optax.adam(self.g_lr * lr_scale, b1=self.b1, b2=self.b2),
                optax.adam(self.d_lr * lr_scale, b1=self.b1, b2=self.b2))


HYPERPARAMETERS = tuple(field.name for field in dataclasses.fields(Hyperparams))
LR_DECAYS = ("none", "linear", "cosine")


@dataclasses.dataclass(frozen=True)
class GAN:
    """The static half of training, all from the config: models, loss kind and the terms it has.

    The optional terms are switched on by their weights being non-zero (`cycle`, `r1`, `ema`); how
    much they weigh is in `hyperparams`, which the steps read unless they are given a sweep's.
    """

    generator: Generator
    discriminator: Discriminator
    latent_dim: int
    batch_size: int  # the global batch of each D update (a step takes d_steps of them)
    loss: str  # one of losses.LOSSES
    d_steps: int  # D updates per G update
    cycle: bool  # G's loss has the tutorial's cycle term (config.cycle_weight > 0)
    r1: bool  # D's loss has the R1 penalty (config.r1_gamma > 0)
    ema: bool  # the state keeps a moving average of G (config.ema_decay > 0)
    num_classes: int  # 0: unconditional; else G and D take class labels
    hyperparams: Hyperparams
    augment: tuple[str, ...] = ()  # DiffAugment's transformations before D (gan_jax.augment)
    lr_decay: str = "none"  # one of LR_DECAYS: how the learning rates fall over decay_steps
    decay_steps: int = 0  # the run's length, over which lr_decay takes the rates to 0

    def lr_scale(self, step: jax.Array) -> Any:
        """The learning rates' factor at `step`: 1 throughout without decay, else falling from 1 at
        step 0 to 0 at `decay_steps` (linearly, or along half a cosine)."""
        if self.lr_decay == "none":
            return 1.0
        progress = jnp.clip(step.astype(jnp.float32) / max(self.decay_steps, 1), 0.0, 1.0)
        if self.lr_decay == "linear":
            return 1.0 - progress
        return 0.5 * (1.0 + jnp.cos(jnp.pi * progress))

    @classmethod
    def from_config(cls, config: ml_collections.ConfigDict, axis_name: str | None = None,
                    total_steps: int = 0) -> "GAN":
        """Builds models and settings; `axis_name` names the device axis BatchNorm averages over,
        `total_steps` the run's length (what config.lr_decay decays over; training only)."""
        model = config.model
        # Parameters and optimizer states stay float32; compute_dtype is what layers compute in.
        dtype = jnp.dtype(model.compute_dtype)
        return cls(
            generator=Generator(width=model.g_width, init_scheme=model.init_scheme,
                                conv_transpose=model.conv_transpose, axis_name=axis_name,
                                dtype=dtype, num_classes=model.num_classes,
                                condition=model.g_condition),
            discriminator=Discriminator(width=model.d_width, init_scheme=model.init_scheme,
                                        norm=model.d_norm, axis_name=axis_name, dtype=dtype,
                                        num_classes=model.num_classes, condition=model.d_condition,
                                        minibatch_std=model.d_minibatch_std),
            latent_dim=config.latent_dim,
            batch_size=config.batch_size,
            loss=config.loss,
            d_steps=config.d_steps,
            cycle=bool(config.cycle_weight),
            r1=bool(config.r1_gamma),
            ema=bool(config.ema_decay),
            num_classes=model.num_classes,
            hyperparams=Hyperparams.from_config(config),
            augment=augment.parse_policy(config.augment),
            lr_decay=config.lr_decay,
            decay_steps=total_steps,
        )


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


def create_train_state(gan: GAN, seed: int) -> TrainState:
    """Initial state from a seed: both networks initialized, Adam states zero, step 0."""
    keys = seed_keys(seed)
    # Adam's initial state (zero moments) does not depend on its hyperparameters.
    g_optimizer, d_optimizer = gan.hyperparams.optimizers()
    generator = _init_network(gan.generator, g_optimizer, keys["generator_init"],
                              jnp.zeros((1, gan.latent_dim), jnp.float32), gan.num_classes)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        generator=generator,
        discriminator=_init_network(gan.discriminator, d_optimizer, keys["discriminator_init"],
                                    jnp.zeros((1, *IMAGE_SHAPE), jnp.float32), gan.num_classes),
        key=keys["train"],
        # The average starts at G's initial variables (a copy: the state's buffers are donated).
        generator_ema=jax.tree.map(jnp.copy, generator.variables()) if gan.ema else None,
    )


def abstract_train_state(gan: GAN, seed: int = 0) -> TrainState:
    """The state's shapes and dtypes without computing it, for restoring checkpoints into."""
    return jax.eval_shape(functools.partial(create_train_state, gan, seed))


def count_params(params: Any) -> int:
    return sum(leaf.size for leaf in jax.tree.leaves(params))
