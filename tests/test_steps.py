"""The pure steps: what each one changes, determinism, and the losses' definitions."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_config, trees_equal
from gan_jax import input_pipeline, steps
from gan_jax.state import GAN, create_train_state


def train_data(images, state):
    """The TrainData a run starting at epoch 0 would pass to its steps."""
    return input_pipeline.TrainData(images, steps.data_orders(state.key, 0, len(images)))


@pytest.fixture(scope="module")
def setup(idx_dir):
    gan = GAN.from_config(tiny_config(idx_dir))
    state = create_train_state(gan, seed=0)
    real = jax.random.uniform(jax.random.key(7), (gan.batch_size, 28, 28, 1), minval=-1, maxval=1)
    d_step = jax.jit(functools.partial(steps.d_step, gan=gan))
    g_step = jax.jit(functools.partial(steps.g_step, gan=gan))
    return gan, state, real, d_step, g_step


def test_d_step_changes_only_the_discriminator(setup):
    _, state, real, d_step, _ = setup
    new, metrics = d_step(state, real, jax.random.key(1))
    assert trees_equal(new.generator, state.generator)
    assert not trees_equal(new.discriminator.params, state.discriminator.params)
    assert not trees_equal(new.discriminator.batch_stats, state.discriminator.batch_stats)
    assert int(new.step) == int(state.step)
    assert set(metrics) == {"d_loss", "d_real", "d_fake"}
    assert 0 < float(metrics["d_real"]) < 1 and 0 < float(metrics["d_fake"]) < 1


def test_g_step_changes_only_the_generator(setup):
    _, state, real, _, g_step = setup
    new, metrics = g_step(state, real, jax.random.key(1))
    assert trees_equal(new.discriminator, state.discriminator)
    assert not trees_equal(new.generator.params, state.generator.params)
    assert not trees_equal(new.generator.batch_stats, state.generator.batch_stats)
    assert set(metrics) == {"g_loss"} and np.isfinite(float(metrics["g_loss"]))


def test_same_key_same_result_other_key_other_result(setup):
    _, state, real, d_step, _ = setup
    a, ma = d_step(state, real, jax.random.key(3))
    b, mb = d_step(state, real, jax.random.key(3))
    c, mc = d_step(state, real, jax.random.key(4))
    assert trees_equal(a, b) and trees_equal(ma, mb)
    assert float(ma["d_loss"]) != float(mc["d_loss"])


def test_losses_are_bce_on_logits():
    real_logits, fake_logits = jnp.array([2.0, -1.0]), jnp.array([0.5, -3.0])
    bce = lambda x, y: -(y * jnp.log(jax.nn.sigmoid(x)) + (1 - y) * jnp.log(1 - jax.nn.sigmoid(x)))  # noqa
    expected_d = (bce(real_logits, 1).mean() + bce(fake_logits, 0).mean()) / 2
    np.testing.assert_allclose(steps.discriminator_loss(real_logits, fake_logits), expected_d, rtol=1e-6)
    np.testing.assert_allclose(steps.generator_loss(fake_logits), bce(fake_logits, 1).mean(), rtol=1e-6)
    # Logits, not probabilities: a very confident D still gives a finite loss.
    assert np.isfinite(float(steps.generator_loss(jnp.array([-200.0]))))


def test_cycle_term_adds_weighted_l1_to_the_generator_loss(setup, idx_dir):
    gan, state, real, _, g_step = setup
    weighted = GAN.from_config(tiny_config(idx_dir, cycle_weight=0.5))
    key = jax.random.key(5)
    _, plain = g_step(state, real, key)
    _, with_cycle = jax.jit(functools.partial(steps.g_step, gan=weighted))(state, real, key)
    fake, _ = gan.generator.apply(state.generator.variables(), steps.sample_noise(gan, key),
                                  train=True, mutable=["batch_stats"])
    expected = float(plain["g_loss"]) + 0.5 * float(steps.cycle_loss(real, fake))
    assert float(with_cycle["g_loss"]) == pytest.approx(expected, rel=1e-5)


def test_train_step_advances_and_is_deterministic(setup):
    gan, state, _, _, _ = setup
    images = jax.random.randint(jax.random.key(0), (32, 28, 28, 1), 0, 256).astype(jnp.uint8)
    data = train_data(images, state)
    step = jax.jit(functools.partial(steps.train_step, gan=gan))
    a, ma = step(state, data)
    b, mb = step(state, data)
    assert int(a.step) == 1 and trees_equal(a, b) and trees_equal(ma, mb)
    assert set(ma) == {"d_loss", "g_loss", "d_real", "d_fake"}
    # Step 1 draws other noise and another batch than step 0.
    _, m1 = step(a, data)
    assert float(m1["d_loss"]) != float(ma["d_loss"])


def test_adam_uses_the_configured_hyperparameters(idx_dir):
    gan = GAN.from_config(tiny_config(idx_dir, g_lr=1e-3, d_lr=5e-4, b1=0.9))
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.array([1.0, -2.0, 0.5])}
    for optimizer, lr in ((gan.g_optimizer, 1e-3), (gan.d_optimizer, 5e-4)):
        expected = optax.adam(lr, b1=0.9, b2=0.999)
        got, _ = optimizer.update(grads, optimizer.init(params), params)
        want, _ = expected.update(grads, expected.init(params), params)
        np.testing.assert_array_equal(got["w"], want["w"])


@pytest.mark.parametrize("unroll", [True, False])
def test_k_steps_per_call_equal_k_single_steps(setup, idx_dir, unroll):
    """steps_per_call only changes how steps are dispatched: same results to float32 rounding."""
    from conftest import assert_same_training
    from gan_jax.parallel import to_host
    gan, state, _, _, _ = setup
    images = jax.random.randint(jax.random.key(0), (32, 28, 28, 1), 0, 256).astype(jnp.uint8)
    data = train_data(images, state)  # 4 steps of batch 8 per epoch: the call crosses into epoch 1
    single = jax.jit(functools.partial(steps.train_step, gan=gan))
    one_by_one, metrics = state.replace(step=jnp.int32(2)), []
    for _ in range(4):
        one_by_one, step_metrics = single(one_by_one, data)
        metrics.append(step_metrics)
    batched = jax.jit(functools.partial(steps.train_steps, gan=gan, num_steps=4, unroll=unroll))
    four, stacked = batched(state.replace(step=jnp.int32(2)), data)
    assert stacked["d_loss"].shape == (4,)
    assert_same_training(to_host(four), to_host(one_by_one), gauge_atol=2 * 2e-4 * 4)
    for name in stacked:
        np.testing.assert_allclose(stacked[name], [m[name] for m in metrics], atol=1e-5)


def test_fast_and_xla_transposed_convolutions_train_alike(idx_dir):
    """The generator's conv-transpose implementation is one config field with the same parameters."""
    from conftest import assert_same_training
    from gan_jax.parallel import to_host
    images = jax.random.randint(jax.random.key(0), (32, 28, 28, 1), 0, 256).astype(jnp.uint8)
    results = {}
    for impl in ("fast", "xla"):
        gan = GAN.from_config(tiny_config(idx_dir, **{"model.conv_transpose": impl}))
        state = create_train_state(gan, seed=0)
        step = jax.jit(functools.partial(steps.train_steps, gan=gan, num_steps=3, unroll=True))
        results[impl] = step(state, train_data(images, state))
    assert_same_training(to_host(results["fast"][0]), to_host(results["xla"][0]),
                         gauge_atol=2 * 2e-4 * 3)
    for name, values in results["fast"][1].items():
        np.testing.assert_allclose(values, results["xla"][1][name], atol=1e-5)


def test_bfloat16_compute_keeps_float32_state_and_finite_losses(idx_dir):
    gan = GAN.from_config(tiny_config(idx_dir, **{"model.compute_dtype": "bfloat16"}))
    state = create_train_state(gan, seed=0)
    images = jax.random.randint(jax.random.key(0), (32, 28, 28, 1), 0, 256).astype(jnp.uint8)
    step = functools.partial(steps.train_steps, gan=gan, num_steps=3, unroll=True)
    # The convolutions really run in bfloat16...
    data = train_data(images, state)
    jaxpr = str(jax.make_jaxpr(step)(state, data))
    assert "conv_general_dilated" in jaxpr and "bf16[" in jaxpr
    new, metrics = jax.jit(step)(state, data)
    # ...while parameters, BatchNorm statistics and Adam states stay float32, and losses are finite.
    for leaf in jax.tree.leaves((new.generator, new.discriminator)):
        assert leaf.dtype in (jnp.float32, jnp.int32), leaf.dtype
    assert all(np.isfinite(np.asarray(v)).all() for v in metrics.values())
    assert metrics["d_loss"].dtype == jnp.float32
