"""Losses and the pure training steps: `d_step`, `g_step` and the fused `train_step`.

Every function here takes the state and returns a new one with metrics; nothing is jitted, pmapped or
donated here (that happens where they are called, see `gan_jax.parallel`), so each is testable alone.
The loss is the tutorial's, made correct: binary cross-entropy on logits, the non-saturating generator
loss, and the optional "cycle" L1 term applied to G, the only network it can act on.

With `axis_name` set, the step runs on one shard of the global batch inside pmap/shard_map: every
device draws the same global batch and noise and takes its own contiguous slice, gradients and metrics
are averaged over the axis, and BatchNorm (built with the same axis_name) averages its statistics, so
N devices compute what one device would.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gan_jax import input_pipeline
from gan_jax.state import GAN, NetworkState, TrainState

Metrics = dict[str, jax.Array]


def discriminator_loss(real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """Mean of the BCE of real images against label 1 and of fakes against label 0."""
    real = optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits)).mean()
    fake = optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits)).mean()
    return (real + fake) / 2


def generator_loss(fake_logits: jax.Array) -> jax.Array:
    """Non-saturating loss: G maximizes log D(G(z)) instead of minimizing log(1 - D(G(z)))."""
    return optax.sigmoid_binary_cross_entropy(fake_logits, jnp.ones_like(fake_logits)).mean()


def cycle_loss(real: jax.Array, fake: jax.Array) -> jax.Array:
    """The tutorial's "cycle consistency": mean absolute pixel difference between the batches."""
    return jnp.abs(real - fake).mean()


def _local_slice(global_batch: jax.Array, axis_name: str | None) -> jax.Array:
    """This device's contiguous slice of a global batch (all of it when not sharded)."""
    if axis_name is None:
        return global_batch
    num_shards = jax.lax.axis_size(axis_name)
    shards = global_batch.reshape(num_shards, -1, *global_batch.shape[1:])
    return shards[jax.lax.axis_index(axis_name)]


def _mean_over_devices(tree: Any, axis_name: str | None) -> Any:
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def sample_noise(gan: GAN, key: jax.Array, axis_name: str | None = None) -> jax.Array:
    """This device's slice of the global batch of z ~ N(0, 1)."""
    noise = jax.random.normal(key, (gan.batch_size, gan.latent_dim), jnp.float32)
    return _local_slice(noise, axis_name)


def _apply_gradients(network: NetworkState, optimizer: optax.GradientTransformation, grads: Any,
                     batch_stats: Any) -> NetworkState:
    updates, opt_state = optimizer.update(grads, network.opt_state, network.params)
    return NetworkState(params=optax.apply_updates(network.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state)


def d_step(state: TrainState, real: jax.Array, key: jax.Array, *, gan: GAN,
           axis_name: str | None = None) -> tuple[TrainState, Metrics]:
    """One discriminator update on real images (label 1) and G(z) (label 0), G held fixed.

    Only D changes: G runs in training mode (batch statistics) as in the tutorial, but its updated
    running statistics are dropped, so this step is a function of D alone.

    Args:
      state: the training state.
      real: this device's real images, float32 in [-1, 1], (batch, 28, 28, 1).
      key: PRNG key for this step's noise.
      gan: models and optimizers.
      axis_name: the device axis when sharded, else None.

    Returns:
      The new state and {"d_loss", "d_real", "d_fake"}: the loss and the mean sigmoid of D on real and
      on fake images.
    """
    generator, discriminator = state.generator, state.discriminator
    fake, _ = gan.generator.apply(generator.variables(), sample_noise(gan, key, axis_name),
                                  train=True, mutable=["batch_stats"])

    def loss_fn(params):
        variables = {"params": params, "batch_stats": discriminator.batch_stats}
        # Real and fake go through D separately, as in the tutorial: each gets its own batch statistics.
        real_logits, updates = gan.discriminator.apply(variables, real, train=True,
                                                       mutable=["batch_stats"])
        variables = {"params": params, **updates}
        fake_logits, updates = gan.discriminator.apply(variables, fake, train=True,
                                                       mutable=["batch_stats"])
        loss = discriminator_loss(real_logits, fake_logits)
        return loss, (updates["batch_stats"], real_logits, fake_logits)

    (loss, (batch_stats, real_logits, fake_logits)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(discriminator.params)
    grads = _mean_over_devices(grads, axis_name)
    discriminator = _apply_gradients(discriminator, gan.d_optimizer, grads, batch_stats)
    metrics = {
        "d_loss": loss,
        "d_real": jax.nn.sigmoid(real_logits).mean(),
        "d_fake": jax.nn.sigmoid(fake_logits).mean(),
    }
    return state.replace(discriminator=discriminator), _mean_over_devices(metrics, axis_name)


def g_step(state: TrainState, real: jax.Array, key: jax.Array, *, gan: GAN,
           axis_name: str | None = None) -> tuple[TrainState, Metrics]:
    """One generator update through D with label 1 (non-saturating), plus the optional cycle term.

    Only G changes: D runs in training mode, but its updated running statistics are dropped.

    Args:
      state: the training state.
      real: this device's real images; used only by the cycle term.
      key: PRNG key for this step's noise.
      gan: models and optimizers.
      axis_name: the device axis when sharded, else None.

    Returns:
      The new state and {"g_loss"} (the cycle term included when its weight is not zero).
    """
    generator, discriminator = state.generator, state.discriminator
    noise = sample_noise(gan, key, axis_name)

    def loss_fn(params):
        variables = {"params": params, "batch_stats": generator.batch_stats}
        fake, updates = gan.generator.apply(variables, noise, train=True, mutable=["batch_stats"])
        fake_logits, _ = gan.discriminator.apply(discriminator.variables(), fake, train=True,
                                                 mutable=["batch_stats"])
        loss = generator_loss(fake_logits)
        if gan.cycle_weight:
            loss = loss + gan.cycle_weight * cycle_loss(real, fake)
        return loss, updates["batch_stats"]

    (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(generator.params)
    grads = _mean_over_devices(grads, axis_name)
    generator = _apply_gradients(generator, gan.g_optimizer, grads, batch_stats)
    return state.replace(generator=generator), _mean_over_devices({"g_loss": loss}, axis_name)


def split_train_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The state's training key split by purpose: (data order, noise)."""
    data_key, noise_key = jax.random.split(key)
    return data_key, noise_key


def data_orders(train_key: jax.Array, epoch: int, num_examples: int) -> np.ndarray:
    """`TrainData.orders` for calls starting in `epoch`: this run's data order, on the host."""
    data_key, _ = split_train_key(train_key)
    return input_pipeline.epoch_orders(data_key, epoch, num_examples)


def train_step(state: TrainState, data: input_pipeline.TrainData, *, gan: GAN,
               axis_name: str | None = None) -> tuple[TrainState, Metrics]:
    """One training step: gather the batch on device, update D, then G, and advance the step.

    Args:
      state: the training state.
      data: the whole training split, resident on the device, and the data order of the epochs of
        this call (see `data_orders`).
      gan: models and optimizers.
      axis_name: the device axis when sharded, else None.

    Returns:
      The new state and the step's metrics: d_loss, g_loss, d_real, d_fake.
    """
    indices = input_pipeline.batch_from_orders(data.orders, state.step, gan.batch_size)
    real = input_pipeline.to_model_range(data.images[_local_slice(indices, axis_name)])
    # fold_in(key, step) makes step k's noise independent of how the run got to step k (fresh,
    # resumed, or k steps in one call).
    _, noise_key = split_train_key(state.key)
    d_key, g_key = jax.random.split(jax.random.fold_in(noise_key, state.step))
    state, d_metrics = d_step(state, real, d_key, gan=gan, axis_name=axis_name)
    state, g_metrics = g_step(state, real, g_key, gan=gan, axis_name=axis_name)
    return state.replace(step=state.step + 1), {**d_metrics, **g_metrics}


def train_steps(state: TrainState, data: input_pipeline.TrainData, *, gan: GAN, num_steps: int,
                unroll: bool, axis_name: str | None = None) -> tuple[TrainState, Metrics]:
    """`num_steps` training steps in one call, to remove per-step dispatch overhead.

    Each step is `train_step`, so the result equals `num_steps` separate calls up to float rounding
    (XLA may fuse differently across step boundaries).

    Args:
      state, data, gan, axis_name: as for `train_step`; the call's steps span at most two epochs.
      num_steps: steps per call.
      unroll: unroll the loop into straight-line code instead of an XLA while loop. Both run at the
        same speed per step with the model's own convolutions, whose gradients are canonical
        convolutions (see conv_transpose.conv); the rolled loop compiles several times faster.
        XLA:CPU canonicalizes convolutions only outside loops, so jax's own (non-canonical) conv
        gradients inside a rolled loop run as naive loops, ~100x slower: model.conv_transpose="xla"
        should be unrolled on CPU.

    Returns:
      The new state and each metric stacked over the steps, shape (num_steps,).
    """
    def body(state, _):
        return train_step(state, data, gan=gan, axis_name=axis_name)
    return jax.lax.scan(body, state, length=num_steps, unroll=num_steps if unroll else 1)


def generate(gan: GAN, generator: NetworkState, noise: jax.Array) -> jax.Array:
    """Samples in [-1, 1] from G in inference mode (BatchNorm running statistics)."""
    return gan.generator.apply(generator.variables(), noise, train=False)
