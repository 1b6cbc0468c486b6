"""The objectives against their formulas, and the gradient penalties against closed forms and finite
differences, through the real discriminator and its custom convolution gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.model import losses
from gan_jax.model.networks import Discriminator

REAL = np.array([2.0, -1.0, 0.3], np.float32)
FAKE = np.array([0.5, -3.0, 1.2], np.float32)


def _bce(logits, label):
    p = 1 / (1 + np.exp(-logits.astype(np.float64)))
    return -(label * np.log(p) + (1 - label) * np.log(1 - p))


# (kind, D's loss, G's loss) written out in numpy from the papers' definitions.
FORMULAS = {
    "ns": ((_bce(REAL, 1).mean() + _bce(FAKE, 0).mean()) / 2, _bce(FAKE, 1).mean()),
    "hinge": (np.maximum(0, 1 - REAL).mean() + np.maximum(0, 1 + FAKE).mean(), -FAKE.mean()),
    "ls": ((((REAL - 1) ** 2).mean() + (FAKE ** 2).mean()) / 2, ((FAKE - 1) ** 2).mean() / 2),
    "wgan_gp": (FAKE.mean() - REAL.mean(), -FAKE.mean()),
}


@pytest.mark.parametrize("kind", losses.LOSSES)
def test_each_loss_is_its_formula(kind):
    d_expected, g_expected = FORMULAS[kind]
    np.testing.assert_allclose(losses.discriminator_loss(kind, jnp.asarray(REAL), jnp.asarray(FAKE)),
                               d_expected, rtol=1e-6)
    np.testing.assert_allclose(losses.generator_loss(kind, jnp.asarray(FAKE)), g_expected, rtol=1e-6)


def test_every_loss_has_a_formula_here():
    assert set(FORMULAS) == set(losses.LOSSES)


def test_ns_takes_logits_so_a_confident_d_gives_finite_losses():
    assert np.isfinite(float(losses.generator_loss("ns", jnp.array([-200.0]))))
    assert np.isfinite(float(losses.discriminator_loss("ns", jnp.array([-200.0]), jnp.array([200.0]))))


def test_unknown_loss():
    with pytest.raises(ValueError, match="unknown loss 'wgan'"):
        losses.generator_loss("wgan", jnp.zeros(2))


def _images(seed, n=3):
    return jax.random.uniform(jax.random.key(seed), (n, 4, 4, 1), minval=-1, maxval=1)


def test_penalties_on_critics_with_closed_form_gradients():
    real, fake, weights = _images(0), _images(1), jnp.array([0.0, 0.25, 1.0])
    # Linear critic D(x) = <w, x>: the gradient is w for every image.
    w = jax.random.normal(jax.random.key(2), (4, 4, 1))
    linear = lambda x: (x * w).sum(axis=(1, 2, 3))  # noqa: E731
    norm = float(jnp.sqrt((w ** 2).sum()))
    np.testing.assert_allclose(losses.gradient_penalty(linear, real, fake, weights), (norm - 1) ** 2,
                               rtol=1e-5)
    np.testing.assert_allclose(losses.r1_penalty(linear, real), norm ** 2, rtol=1e-5)
    # Quadratic critic D(x) = ||x||^2 / 2: the gradient at x is x itself.
    quadratic = lambda x: 0.5 * (x ** 2).sum(axis=(1, 2, 3))  # noqa: E731
    interpolates = np.asarray(weights)[:, None, None, None] * real + (1 - np.asarray(weights))[:, None, None, None] * fake
    norms = np.sqrt((np.asarray(interpolates, np.float64) ** 2).sum(axis=(1, 2, 3)))
    np.testing.assert_allclose(losses.gradient_penalty(quadratic, real, fake, weights),
                               ((norms - 1) ** 2).mean(), rtol=1e-5)
    np.testing.assert_allclose(losses.r1_penalty(quadratic, real),
                               (np.asarray(real, np.float64) ** 2).sum(axis=(1, 2, 3)).mean(), rtol=1e-5)


@pytest.fixture(scope="module")
def tiny_d64():
    """A 2-channel D without normalization, computing in float64, and its parameters."""
    with jax.enable_x64(True):
        d = Discriminator(width=2, norm="none", dtype=jnp.float64)
        params = d.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)), train=False)["params"]
        params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
    return d, params


def _directional_check(penalty, params, seed):
    """The gradient of penalty(params) along a random direction, against central differences."""
    direction = jax.tree.map(lambda p, k: jax.random.normal(k, p.shape, p.dtype), params,
                             jax.tree.unflatten(jax.tree.structure(params),
                                                list(jax.random.split(jax.random.key(seed),
                                                                      len(jax.tree.leaves(params))))))
    grads = jax.grad(penalty)(params)
    analytic = sum(float((g * v).sum()) for g, v in zip(jax.tree.leaves(grads), jax.tree.leaves(direction)))
    eps = 1e-6
    shifted = lambda sign: jax.tree.map(lambda p, v: p + sign * eps * v, params, direction)  # noqa: E731
    numeric = (float(penalty(shifted(1))) - float(penalty(shifted(-1)))) / (2 * eps)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5)
    return analytic


@pytest.mark.slow
def test_r1_and_gradient_penalty_through_the_real_discriminator(tiny_d64):
    """The penalties' values against finite differences of D in its input, and their parameter
    gradients (a gradient of a gradient through the custom conv VJPs) against finite differences."""
    d, params = tiny_d64
    with jax.enable_x64(True):
        real = jax.random.uniform(jax.random.key(1), (2, 28, 28, 1), jnp.float64, -1, 1)
        fake = jax.random.uniform(jax.random.key(2), (2, 28, 28, 1), jnp.float64, -1, 1)
        weights = jnp.array([0.3, 0.8])
        critic_of = lambda p: functools.partial(d.apply, {"params": p}, train=False)  # noqa: E731

        # grad_x D by central differences, one pixel at a time on a few pixels: R1's summand.
        critic = critic_of(params)
        grad_x = jax.grad(lambda x: critic(x).sum())(real)
        for index in [(0, 3, 5, 0), (1, 14, 14, 0), (0, 27, 0, 0)]:
            bump = jnp.zeros_like(real).at[index].set(1e-6)
            numeric = (critic(real + bump) - critic(real - bump))[index[0]] / 2e-6
            np.testing.assert_allclose(grad_x[index], numeric, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(losses.r1_penalty(critic, real),
                                   (np.asarray(grad_x) ** 2).sum(axis=(1, 2, 3)).mean(), rtol=1e-12)

        r1 = _directional_check(lambda p: losses.r1_penalty(critic_of(p), real), params, seed=3)
        gp = _directional_check(lambda p: losses.gradient_penalty(critic_of(p), real, fake, weights),
                                params, seed=4)
        assert r1 != 0 and gp != 0
