"""The static half of training (gan_jax.training.spec): what the config turns into, and the
learning-rate schedule."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import load_experiment, tiny_config
from gan_jax import config as config_lib
from gan_jax.training import steps
from gan_jax.training.spec import GANSpec, hyperparams
from gan_jax.training.state import create_train_state


def test_the_hyperparameters_are_the_sweepable_keys_with_their_types():
    hp = hyperparams(load_experiment("mnist"))
    assert tuple(hp) == config_lib.SWEEPABLE
    assert isinstance(hp["ema_start"], int) and isinstance(hp["g_lr"], float)


@pytest.mark.parametrize("decay, halfway", [("none", 1.0), ("linear", 0.5), ("cosine", 0.5)])
def test_the_learning_rates_fall_from_one_to_zero_over_the_run(decay, halfway):
    config = load_experiment("mnist")
    config.lr_decay = decay
    spec = GANSpec.from_config(config, total_steps=100)
    scale = lambda step: float(spec.lr_scale(jnp.int32(step)))  # noqa: E731
    assert scale(0) == 1.0 and scale(50) == pytest.approx(halfway)
    assert scale(100) == (1.0 if decay == "none" else pytest.approx(0.0, abs=1e-7))
    if decay == "cosine":
        assert scale(25) == pytest.approx(0.5 * (1 + np.cos(np.pi / 4)))


def test_a_decayed_step_moves_the_parameters_as_adam_at_the_scaled_rate(idx_dir):
    """At the halfway step, linear decay is Adam at half the rate: the first update's size halves."""
    plain = GANSpec.from_config(tiny_config(idx_dir))
    decayed = GANSpec.from_config(tiny_config(idx_dir, lr_decay="linear"), total_steps=10)
    state = create_train_state(plain, seed=0).replace(step=jnp.int32(5))
    real = jax.random.uniform(jax.random.key(1), (8, 28, 28, 1), minval=-1, maxval=1)
    moves = []
    for spec in (plain, decayed):
        new, _ = jax.jit(functools.partial(steps.d_step, gan=spec))(state, real, jax.random.key(2))
        moves.append(jax.tree.leaves(jax.tree.map(lambda a, b: a - b, new.discriminator.params,
                                                  state.discriminator.params)))
    for full, half in zip(*moves):
        np.testing.assert_allclose(half, full / 2, rtol=0, atol=1e-7)  # float32 rounding of p - p0


def test_self_conditioning_makes_a_conditional_gan_of_the_clusters(idx_dir):
    config = tiny_config(idx_dir, **{"self_condition.clusters": 5, "model.g_condition": "cbn"})
    spec = GANSpec.from_config(config)
    assert spec.clusters == spec.num_classes == 5
    assert spec.generator.num_classes == spec.discriminator.num_classes == 5
    state = create_train_state(spec, seed=0, num_train_images=64)
    assert state.clusters.assignments.shape == (64,) and state.clusters.counts.shape == (5,)
