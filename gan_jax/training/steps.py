"""The pure training steps: `d_step`, `g_step` and the fused `train_step`.

Every function here takes the state and returns a new one with metrics; nothing is jitted, pmapped or
donated here (that happens where they are called, see `gan_jax.training.parallel`), so each is testable
alone. The objectives live in `gan_jax.model.losses` and the networks in `gan_jax.model.networks` (change
those to change the loss or a network); by default they are the tutorial's, made correct:
binary cross-entropy on logits, the non-saturating generator loss, and the optional "cycle" L1 term
applied to G, the only network it can act on.

A step is `d_steps` discriminator updates, each on its own batch and noise, then one generator update,
then (with `ema_decay > 0`) the moving average of G's variables.

With `axis_name` set, the step runs on one shard of the global batch inside pmap/shard_map: every
device draws the same global batch and noise and takes its own contiguous slice, gradients and metrics
are averaged over the axis, and BatchNorm (built with the same axis_name) averages its statistics, so
N devices compute what one device would. With `gan.batch_sharding` set instead ("jit" over several
devices), the step is the one-device step, its batch laid out over the devices, and XLA partitions it.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from gan_jax.data import batches
from gan_jax.model import augment, losses
from gan_jax.model.networks import split_output
from gan_jax.training.spec import GANSpec, Hyperparams, optimizers
from gan_jax.training.state import NetworkState, TrainState

Metrics = dict[str, jax.Array]


def cycle_loss(real: jax.Array, fake: jax.Array) -> jax.Array:
    """The tutorial's "cycle consistency": mean absolute pixel difference between the batches."""
    return jnp.abs(real - fake).mean()


def _local_slice(global_batch: jax.Array, axis_name: str | None, gan: GANSpec) -> jax.Array:
    """This device's contiguous slice of a global batch: all of it when not sharded, and all of it,
    laid out over the devices, for "jit" over several (`gan.batch_sharding`: XLA then splits the
    work and inserts the reductions)."""
    if gan.batch_sharding is not None:
        return jax.lax.with_sharding_constraint(global_batch, gan.batch_sharding)
    if axis_name is None:
        return global_batch
    num_shards = jax.lax.axis_size(axis_name)
    shards = global_batch.reshape(num_shards, -1, *global_batch.shape[1:])
    return shards[jax.lax.axis_index(axis_name)]


def _mean_over_devices(tree: Any, axis_name: str | None) -> Any:
    return tree if axis_name is None else jax.lax.pmean(tree, axis_name)


def sample_noise(gan: GANSpec, key: jax.Array, axis_name: str | None = None) -> jax.Array:
    """This device's slice of the global batch of z ~ N(0, 1)."""
    noise = jax.random.normal(key, (gan.batch_size, gan.latent_dim), jnp.float32)
    return _local_slice(noise, axis_name, gan)


def _apply_gradients(network: NetworkState, optimizer: optax.GradientTransformation, grads: Any,
                     batch_stats: Any) -> NetworkState:
    updates, opt_state = optimizer.update(grads, network.opt_state, network.params)
    return NetworkState(params=optax.apply_updates(network.params, updates),
                        batch_stats=batch_stats, opt_state=opt_state)


def _d_forward(gan: GANSpec, variables: dict[str, Any], images: jax.Array,
                  labels: jax.Array | None) -> tuple[jax.Array, jax.Array | None, dict]:
    """D in training mode: (logits, class logits or None, its variables with updated statistics:
    BatchNorm's running averages or spectral normalization's vectors; none when D has neither)."""
    output, updates = gan.discriminator.apply(variables, images, train=True, labels=labels,
                                              mutable=["batch_stats"])
    return (*split_output(output), {**variables, "batch_stats": updates.get("batch_stats", {})})


def _augment(gan: GANSpec, images: jax.Array, key: jax.Array, axis_name: str | None) -> jax.Array:
    """What D sees of `images`: them through DiffAugment's policy (config.augment), drawn for the
    global batch from `key`; the images themselves without a policy."""
    if not gan.augment:
        return images
    return augment.augment(images, key, gan.augment, gan.batch_size,
                           lambda draws: _local_slice(draws, axis_name, gan))


def draw_labels(gan: GANSpec, key: jax.Array, axis_name: str | None = None,
                counts: jax.Array | None = None) -> jax.Array | None:
    """This device's slice of the global batch of labels G is asked for: uniform over the classes,
    or (self-conditioning) in the clusters' proportions `counts`; None for an unconditional GAN.
    Drawn from fold_in(key, 2): the noise takes the key itself."""
    if not gan.num_classes:
        return None
    label_key = jax.random.fold_in(key, 2)
    if counts is not None:
        labels = jax.random.categorical(label_key, jnp.log(counts.astype(jnp.float32)),
                                        shape=(gan.batch_size,))
    else:
        labels = jax.random.randint(label_key, (gan.batch_size,), 0, gan.num_classes)
    return _local_slice(labels, axis_name, gan)


def _cluster_counts(state: TrainState) -> jax.Array | None:
    return None if state.clusters is None else state.clusters.counts


def d_step(state: TrainState, real: jax.Array, key: jax.Array, *, gan: GANSpec,
           hp: Hyperparams | None = None, axis_name: str | None = None,
           real_labels: jax.Array | None = None) -> tuple[TrainState, Metrics]:
    """One discriminator update on real images and G(z), G held fixed, with `gan.loss`'s objective.

    Only D changes: G runs in training mode (batch statistics) as in the tutorial, but its updated
    running statistics are dropped, so this step is a function of D alone.

    Args:
      state: the training state.
      real: this device's real images, float32 in [-1, 1], (batch, height, width, channels).
      key: PRNG key for this update's noise (and WGAN-GP's interpolation weights).
      gan: models and loss settings.
      hp: learning rates, betas and loss weights; `gan.hyperparams` (the config's) by default.
      axis_name: the device axis when sharded, else None.
      real_labels: the real images' class labels (conditional GANs only); G's are drawn from `key`.

    Returns:
      The new state and {"d_loss", "d_real", "d_fake"}, plus "d_gp" (loss="wgan_gp"), "d_r1"
      (r1_gamma > 0) and "d_ac" (ACGAN): the loss with its extra terms, D's mean output on real and
      on fake images (a probability for the "ns" loss, the raw score otherwise), and the unweighted
      terms.
    """
    hp = gan.hyperparams if hp is None else hp
    generator, discriminator = state.generator, state.discriminator
    fake_labels = draw_labels(gan, key, axis_name, _cluster_counts(state))
    fake, _ = gan.generator.apply(generator.variables(), sample_noise(gan, key, axis_name),
                                  train=True, labels=fake_labels, mutable=["batch_stats"])

    # DiffAugment: real and fake through the same policy, each image its own draw (keys 3 and 4).
    seen_real = _augment(gan, real, jax.random.fold_in(key, 3), axis_name)
    seen_fake = _augment(gan, fake, jax.random.fold_in(key, 4), axis_name)

    def loss_fn(params):
        variables = {"params": params, "batch_stats": discriminator.batch_stats}
        # Real and fake go through D separately, as in the tutorial: each gets its own batch statistics.
        real_logits, real_classes, variables = _d_forward(gan, variables, seen_real, real_labels)
        fake_logits, fake_classes, variables = _d_forward(gan, variables, seen_fake, fake_labels)
        loss = losses.discriminator_loss(gan.loss, real_logits, fake_logits)
        penalties = {}
        if real_classes is not None:
            penalties["d_ac"] = (losses.auxiliary_classifier_loss(real_classes, real_labels) +
                                 losses.auxiliary_classifier_loss(fake_classes, fake_labels))
            loss = loss + hp["ac_weight"] * penalties["d_ac"]
        # The penalties' D is the one just trained on, in inference mode (the config refuses them
        # with BatchNorm, so this changes only that spectral norm's vectors are not updated again),
        # with the real images' labels (also for WGAN-GP's interpolates, as PyTorch-StudioGAN does),
        # on the images as D sees them (augmented, as DiffAugment's R1 is).
        def critic(images):
            return split_output(gan.discriminator.apply(variables, images, train=False,
                                                        labels=real_labels))[0]
        if gan.loss == "wgan_gp":
            # One interpolation weight per image of the global batch, sliced like the noise.
            weights = jax.random.uniform(jax.random.fold_in(key, 1), (gan.batch_size,))
            penalties["d_gp"] = losses.gradient_penalty(critic, seen_real, seen_fake,
                                                        _local_slice(weights, axis_name, gan))
            loss = loss + hp["gp_weight"] * penalties["d_gp"]
        if gan.r1:
            penalties["d_r1"] = losses.r1_penalty(critic, seen_real)
            loss = loss + hp["r1_gamma"] / 2 * penalties["d_r1"]
        return loss, (variables["batch_stats"], real_logits, fake_logits, penalties)

    (loss, (batch_stats, real_logits, fake_logits, penalties)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(discriminator.params)
    grads = _mean_over_devices(grads, axis_name)
    discriminator = _apply_gradients(discriminator, optimizers(hp, gan.lr_scale(state.step))[1], grads,
                                     batch_stats)
    metrics = {
        "d_loss": loss,
        "d_real": losses.discriminator_output(gan.loss, real_logits).mean(),
        "d_fake": losses.discriminator_output(gan.loss, fake_logits).mean(),
        **penalties,
    }
    return state.replace(discriminator=discriminator), _mean_over_devices(metrics, axis_name)


def g_step(state: TrainState, real: jax.Array, key: jax.Array, *, gan: GANSpec,
           hp: Hyperparams | None = None, axis_name: str | None = None) -> tuple[TrainState, Metrics]:
    """One generator update through D with `gan.loss`'s generator objective, plus the cycle term.

    Only G changes: D runs in training mode, but its updated statistics are dropped.

    Args:
      state: the training state.
      real: this device's real images; used only by the cycle term.
      key: PRNG key for this step's noise.
      gan: models and loss settings.
      hp: learning rates, betas and loss weights; `gan.hyperparams` (the config's) by default.
      axis_name: the device axis when sharded, else None.

    Returns:
      The new state and {"g_loss"} (with the cycle term and, for an ACGAN, the weighted auxiliary
      classifier loss), plus "g_ac" (ACGAN): that classifier loss, unweighted.
    """
    hp = gan.hyperparams if hp is None else hp
    generator, discriminator = state.generator, state.discriminator
    noise = sample_noise(gan, key, axis_name)
    labels = draw_labels(gan, key, axis_name, _cluster_counts(state))

    def loss_fn(params):
        variables = {"params": params, "batch_stats": generator.batch_stats}
        fake, updates = gan.generator.apply(variables, noise, train=True, labels=labels,
                                            mutable=["batch_stats"])
        seen_fake = _augment(gan, fake, jax.random.fold_in(key, 4), axis_name)
        fake_logits, fake_classes, _ = _d_forward(gan, discriminator.variables(), seen_fake, labels)
        loss = losses.generator_loss(gan.loss, fake_logits)
        terms = {}
        if fake_classes is not None:
            terms["g_ac"] = losses.auxiliary_classifier_loss(fake_classes, labels)
            loss = loss + hp["ac_weight"] * terms["g_ac"]
        if gan.cycle:
            loss = loss + hp["cycle_weight"] * cycle_loss(real, fake)
        return loss, (updates["batch_stats"], terms)

    (loss, (batch_stats, terms)), grads = jax.value_and_grad(loss_fn, has_aux=True)(generator.params)
    grads = _mean_over_devices(grads, axis_name)
    generator = _apply_gradients(generator, optimizers(hp, gan.lr_scale(state.step))[0], grads,
                                 batch_stats)
    return state.replace(generator=generator), _mean_over_devices({"g_loss": loss, **terms}, axis_name)


def update_ema(state: TrainState, hp: Hyperparams) -> TrainState:
    """Moves the average of G's variables towards G's: ema <- decay * ema + (1 - decay) * G.

    The average covers G's parameters and its BatchNorm running statistics alike. Before step
    `hp["ema_start"]` the decay is 0, so the average copies G (as PyTorch-StudioGAN's `ema_start`).
    Decay 0 gives G's variables exactly, decay 1 keeps the initial ones exactly (the update is
    `optax.incremental_update`, whose weights are then exactly 0 and 1).
    """
    decay = jnp.where(state.step >= hp["ema_start"], hp["ema_decay"], 0.0)
    average = optax.incremental_update(state.generator.variables(), state.generator_ema, 1.0 - decay)
    return state.replace(generator_ema=average)


def split_train_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The state's training key split by purpose: (data order, noise)."""
    data_key, noise_key = jax.random.split(key)
    return data_key, noise_key


def data_orders(train_key: jax.Array, epoch: int, num_examples: int) -> np.ndarray:
    """`TrainData.orders` for calls starting in `epoch`: this run's data order, on the host."""
    data_key, _ = split_train_key(train_key)
    return batches.epoch_orders(data_key, epoch, num_examples)


def train_step(state: TrainState, data: batches.TrainData, *, gan: GANSpec,
               hp: Hyperparams | None = None,
               axis_name: str | None = None) -> tuple[TrainState, Metrics]:
    """One training step: gather its batches on device, update D d_steps times, then G, then the EMA.

    Args:
      state: the training state.
      data: the whole training split, resident on the device, and the data order of the epochs of
        this call (see `data_orders`).
      gan: models and loss settings.
      hp: learning rates, betas, loss weights and EMA settings; `gan.hyperparams` by default.
      axis_name: the device axis when sharded, else None.

    Returns:
      The new state and the step's metrics: d_loss, g_loss, d_real, d_fake (and d_gp, d_r1, d_ac,
      g_ac when those terms are on); D's metrics are the mean over its d_steps updates.
    """
    # The step's d_steps global batches are consecutive slices of the epoch's order.
    indices = batches.batch_from_orders(data.orders, state.step, gan.batch_size * gan.d_steps)
    per_update = indices.reshape(gan.d_steps, gan.batch_size)  # the labels come with the same indices
    # fold_in(key, step) makes step k's noise independent of how the run got to step k (fresh,
    # resumed, or k steps in one call). With d_steps=1 this is split(key) into (D's key, G's key).
    _, noise_key = split_train_key(state.key)
    keys = jax.random.split(jax.random.fold_in(noise_key, state.step), gan.d_steps + 1)
    d_metrics = []
    for update in range(gan.d_steps):
        local = _local_slice(per_update[update], axis_name, gan)
        real = batches.to_model_range(data.images[local])
        # A self-conditioned run's classes are its clusters; a conditional run's, the data's labels.
        labels = data.labels if state.clusters is None else state.clusters.assignments
        real_labels = labels[local].astype(jnp.int32) if gan.num_classes else None
        state, metrics = d_step(state, real, keys[update], gan=gan, hp=hp, axis_name=axis_name,
                                real_labels=real_labels)
        d_metrics.append(metrics)
    # G's cycle term (if any) compares with the last D update's real batch.
    state, g_metrics = g_step(state, real, keys[gan.d_steps], gan=gan, hp=hp, axis_name=axis_name)
    if state.generator_ema is not None:  # the state keeps an average when config.ema_decay > 0
        state = update_ema(state, gan.hyperparams if hp is None else hp)
    d_metrics = jax.tree.map(lambda *values: jnp.stack(values).mean(), *d_metrics)
    return state.replace(step=state.step + 1), {**d_metrics, **g_metrics}


def train_steps(state: TrainState, data: batches.TrainData, *, gan: GANSpec, num_steps: int,
                unroll: bool, hp: Hyperparams | None = None,
                axis_name: str | None = None) -> tuple[TrainState, Metrics]:
    """`num_steps` training steps in one call, to remove per-step dispatch overhead.

    Each step is `train_step`, so the result equals `num_steps` separate calls up to float rounding
    (XLA may fuse differently across step boundaries).

    Args:
      state, data, gan, hp, axis_name: as for `train_step`; the call's steps span at most two
        epochs.
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
        return train_step(state, data, gan=gan, hp=hp, axis_name=axis_name)
    return jax.lax.scan(body, state, length=num_steps, unroll=num_steps if unroll else 1)
