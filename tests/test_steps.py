"""The pure steps: what each one changes, determinism, and the losses' definitions."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from helpers import assert_same_training, tiny_config, trees_equal
from gan_jax.data import batches
from gan_jax.training import steps
from gan_jax.training.devices import to_host
from gan_jax.training.spec import GANSpec, optimizers
from gan_jax.training.state import create_train_state


def train_data(images, state):
    """The TrainData a run starting at epoch 0 would pass to its steps."""
    return batches.TrainData(images, steps.data_orders(state.key, 0, len(images)))


@pytest.fixture(scope="module")
def setup(idx_dir):
    gan = GANSpec.from_config(tiny_config(idx_dir))
    state = create_train_state(gan, seed=0)
    real = jax.random.uniform(jax.random.key(7), (gan.batch_size, 28, 28, 1), minval=-1, maxval=1)
    d_step = jax.jit(functools.partial(steps.d_step, gan=gan))
    g_step = jax.jit(functools.partial(steps.g_step, gan=gan))
    return gan, state, real, d_step, g_step


@pytest.mark.slow
def test_d_step_changes_only_the_discriminator(setup):
    _, state, real, d_step, _ = setup
    new, metrics = d_step(state, real, jax.random.key(1))
    assert trees_equal(new.generator, state.generator)
    assert not trees_equal(new.discriminator.params, state.discriminator.params)
    assert not trees_equal(new.discriminator.batch_stats, state.discriminator.batch_stats)
    assert int(new.step) == int(state.step)
    assert set(metrics) == {"d_loss", "d_real", "d_fake"}
    assert 0 < float(metrics["d_real"]) < 1 and 0 < float(metrics["d_fake"]) < 1


@pytest.mark.slow
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


@pytest.mark.slow
def test_cycle_term_adds_weighted_l1_to_the_generator_loss(setup, idx_dir):
    gan, state, real, _, g_step = setup
    weighted = GANSpec.from_config(tiny_config(idx_dir, cycle_weight=0.5))
    key = jax.random.key(5)
    _, plain = g_step(state, real, key)
    _, with_cycle = jax.jit(functools.partial(steps.g_step, gan=weighted))(state, real, key)
    fake, _ = gan.generator.apply(state.generator.variables(), steps.sample_noise(gan, key),
                                  train=True, mutable=["batch_stats"])
    expected = float(plain["g_loss"]) + 0.5 * float(steps.cycle_loss(real, fake))
    assert float(with_cycle["g_loss"]) == pytest.approx(expected, rel=1e-5)


def _logits_of_a_d_step(gan, state, real, key):
    """What d_step's D sees: its logits on the real batch and on G(z) (D's statistics as it sees them)."""
    fake, _ = gan.generator.apply(state.generator.variables(), steps.sample_noise(gan, key), train=True,
                                  mutable=["batch_stats"])
    variables = state.discriminator.variables()
    real_logits, updates = gan.discriminator.apply(variables, real, train=True, mutable=["batch_stats"])
    variables = {**variables, **updates}
    fake_logits, _ = gan.discriminator.apply(variables, fake, train=True, mutable=["batch_stats"])
    return real_logits, fake_logits


@pytest.mark.slow
@pytest.mark.parametrize("overrides, penalty", [
    ({"loss": "hinge"}, None),
    ({"loss": "ls"}, None),
    ({"loss": "wgan_gp", "model.d_norm": "none"}, "d_gp"),
    ({"r1_gamma": 2.0, "model.d_norm": "spectral"}, "d_r1"),
])
def test_d_step_uses_the_configured_loss(idx_dir, overrides, penalty):
    """d_loss is the loss module's D loss of D's logits, plus the weighted penalty; d_real and d_fake
    are D's raw mean scores for the losses other than ns."""
    from gan_jax.model import losses
    config = tiny_config(idx_dir, **overrides)
    gan = GANSpec.from_config(config)
    state = create_train_state(gan, seed=0)
    real = jax.random.uniform(jax.random.key(7), (gan.batch_size, 28, 28, 1), minval=-1, maxval=1)
    key = jax.random.key(1)
    new, metrics = jax.jit(functools.partial(steps.d_step, gan=gan))(state, real, key)
    real_logits, fake_logits = _logits_of_a_d_step(gan, state, real, key)
    expected = float(losses.discriminator_loss(config.loss, real_logits, fake_logits))
    weight = {"d_gp": config.gp_weight, "d_r1": config.r1_gamma / 2, None: 0}[penalty]
    if penalty:
        assert float(metrics[penalty]) > 0
        expected += weight * float(metrics[penalty])
    assert set(metrics) == {"d_loss", "d_real", "d_fake"} | ({penalty} if penalty else set())
    assert float(metrics["d_loss"]) == pytest.approx(expected, rel=1e-5)
    output = losses.discriminator_output(config.loss, real_logits)
    assert float(metrics["d_real"]) == pytest.approx(float(output.mean()), rel=1e-5)
    if config.loss != "ns":  # the raw score, not a probability
        assert np.array_equal(output, real_logits)
    assert trees_equal(new.generator, state.generator)
    assert not trees_equal(new.discriminator.params, state.discriminator.params)


@pytest.mark.slow
def test_g_step_uses_the_configured_loss(idx_dir):
    from gan_jax.model import losses
    gan = GANSpec.from_config(tiny_config(idx_dir, loss="hinge"))
    state = create_train_state(gan, seed=0)
    key = jax.random.key(2)
    _, metrics = jax.jit(functools.partial(steps.g_step, gan=gan))(state, None, key)
    fake, _ = gan.generator.apply(state.generator.variables(), steps.sample_noise(gan, key), train=True,
                                  mutable=["batch_stats"])
    logits, _ = gan.discriminator.apply(state.discriminator.variables(), fake, train=True,
                                        mutable=["batch_stats"])
    assert float(metrics["g_loss"]) == pytest.approx(float(losses.generator_loss("hinge", logits)), rel=1e-5)


@pytest.mark.slow
def test_d_steps_updates_d_on_consecutive_batches_with_their_own_noise(idx_dir):
    """With d_steps=2 a step is d_step(batch 2s), d_step(batch 2s+1), g_step, each with its own key;
    D's metrics are the mean of its two updates."""
    gan = GANSpec.from_config(tiny_config(idx_dir, d_steps=2))
    state = create_train_state(gan, seed=0).replace(step=jnp.int32(1))
    images = jax.random.randint(jax.random.key(0), (32, 28, 28, 1), 0, 256).astype(jnp.uint8)
    data = train_data(images, state)
    stepped, metrics = jax.jit(functools.partial(steps.train_step, gan=gan))(state, data)

    indices = batches.batch_from_orders(data.orders, state.step, 2 * gan.batch_size)
    reals = [batches.to_model_range(images[indices[i * 8:(i + 1) * 8]]) for i in (0, 1)]
    assert np.array_equal(indices, np.asarray(data.orders[0][16:32]))  # step 1 of 2 per epoch
    _, noise_key = steps.split_train_key(state.key)
    keys = jax.random.split(jax.random.fold_in(noise_key, state.step), 3)
    d_step = jax.jit(functools.partial(steps.d_step, gan=gan))
    manual, first = d_step(state, reals[0], keys[0])
    manual, second = d_step(manual, reals[1], keys[1])
    manual, g_metrics = jax.jit(functools.partial(steps.g_step, gan=gan))(manual, reals[1], keys[2])
    # One compiled step vs three: the same computation up to how XLA fuses it.
    assert_same_training(to_host(stepped.replace(step=state.step)), to_host(manual), gauge_atol=1e-3)
    assert int(stepped.step) == 2
    for name in first:
        assert float(metrics[name]) == pytest.approx((float(first[name]) + float(second[name])) / 2,
                                                     rel=1e-5)
    assert float(metrics["g_loss"]) == pytest.approx(float(g_metrics["g_loss"]), rel=1e-5)


def _perturbed(state):
    """`state` with G's parameters and statistics moved, as if it had trained."""
    moved = jax.tree.map(lambda x: x + 0.5, state.generator.variables())
    return state.replace(generator=state.generator.replace(**moved))


def test_ema_decay_zero_copies_the_generator_and_one_keeps_the_start(idx_dir):
    gan = GANSpec.from_config(tiny_config(idx_dir, ema_decay=0.5))
    start = create_train_state(gan, seed=0)
    assert trees_equal(start.generator_ema, start.generator.variables())
    moved = _perturbed(start)
    for decay, expected in ((0.0, moved.generator.variables()), (1.0, start.generator_ema)):
        averaged = steps.update_ema(moved, {**gan.hyperparams, "ema_decay": decay})
        assert trees_equal(averaged.generator_ema, expected)
    half = steps.update_ema(moved, gan.hyperparams).generator_ema
    np.testing.assert_allclose(half["params"]["ConvTranspose_0"]["bias"],
                               start.generator.params["ConvTranspose_0"]["bias"] + 0.25, rtol=1e-6)


def test_ema_copies_the_generator_until_ema_start(idx_dir):
    gan = GANSpec.from_config(tiny_config(idx_dir, ema_decay=0.9, ema_start=3))
    moved = _perturbed(create_train_state(gan, seed=0))
    before = steps.update_ema(moved.replace(step=jnp.int32(2)), gan.hyperparams)
    assert trees_equal(before.generator_ema, moved.generator.variables())
    after = steps.update_ema(moved.replace(step=jnp.int32(3)), gan.hyperparams)
    assert not trees_equal(after.generator_ema, moved.generator.variables())


@pytest.mark.slow
def test_train_step_keeps_the_ema_and_samples_from_it(idx_dir):
    """Through the real step: with decay 0 the average is G itself, bit for bit, after each step."""
    gan = GANSpec.from_config(tiny_config(idx_dir, ema_decay=0.9))
    state = create_train_state(gan, seed=0)
    images = jax.random.randint(jax.random.key(0), (32, 28, 28, 1), 0, 256).astype(jnp.uint8)
    data = train_data(images, state)
    # decay 0.0 for a state that keeps an average: it copies G.
    copy = jax.jit(functools.partial(steps.train_step, gan=gan,
                                     hp={**gan.hyperparams, "ema_decay": 0.0}))
    copied, _ = copy(state, data)
    assert trees_equal(copied.generator_ema, copied.generator.variables())
    averaged, _ = jax.jit(functools.partial(steps.train_step, gan=gan))(state, data)
    assert not trees_equal(averaged.generator_ema["params"], averaged.generator.params)
    assert trees_equal(averaged.sampling_variables(), averaged.generator_ema)
    assert trees_equal(averaged.sampling_variables(use_ema=False), averaged.generator.variables())


@pytest.mark.slow
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
    gan = GANSpec.from_config(tiny_config(idx_dir, g_lr=1e-3, d_lr=5e-4, b1=0.9))
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.array([1.0, -2.0, 0.5])}
    for optimizer, lr in zip(optimizers(gan.hyperparams), (1e-3, 5e-4)):
        expected = optax.adam(lr, b1=0.9, b2=0.999)
        got, _ = optimizer.update(grads, optimizer.init(params), params)
        want, _ = expected.update(grads, expected.init(params), params)
        np.testing.assert_array_equal(got["w"], want["w"])


@pytest.mark.slow
@pytest.mark.parametrize("unroll", [True, False])
def test_k_steps_per_call_equal_k_single_steps(setup, idx_dir, unroll):
    """steps_per_call only changes how steps are dispatched: same results to float32 rounding."""
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


@pytest.mark.slow
def test_fast_and_xla_transposed_convolutions_train_alike(idx_dir):
    """The generator's conv-transpose implementation is one config field with the same parameters."""
    images = jax.random.randint(jax.random.key(0), (32, 28, 28, 1), 0, 256).astype(jnp.uint8)
    results = {}
    for impl in ("fast", "xla"):
        gan = GANSpec.from_config(tiny_config(idx_dir, **{"model.conv_transpose": impl}))
        state = create_train_state(gan, seed=0)
        step = jax.jit(functools.partial(steps.train_steps, gan=gan, num_steps=3, unroll=True))
        results[impl] = step(state, train_data(images, state))
    assert_same_training(to_host(results["fast"][0]), to_host(results["xla"][0]),
                         gauge_atol=2 * 2e-4 * 3)
    for name, values in results["fast"][1].items():
        np.testing.assert_allclose(values, results["xla"][1][name], atol=1e-5)


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_state_and_finite_losses(idx_dir):
    gan = GANSpec.from_config(tiny_config(idx_dir, **{"model.compute_dtype": "bfloat16"}))
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
