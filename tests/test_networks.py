"""Model shapes, the pinned parameter counts, and the two initialization schemes."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import load_experiment
from gan_jax.training.spec import GANSpec
from gan_jax.training.state import count_params, create_train_state


@pytest.fixture(scope="module")
def default_state():
    gan = GANSpec.from_config(load_experiment("mnist"))
    return gan, create_train_state(gan, seed=0)


def test_parameter_counts_match_the_pytorch_peer(default_state):
    _, state = default_state
    assert count_params(state.generator.params) == 759_873
    assert count_params(state.discriminator.params) == 138_817


def test_shapes_and_ranges(default_state):
    gan, state = default_state
    z = jax.random.normal(jax.random.key(1), (5, 100))
    images = gan.generator.apply(state.generator.variables(), z, train=False)
    assert images.shape == (5, 28, 28, 1)
    logits = gan.discriminator.apply(state.discriminator.variables(), images, train=False)
    assert logits.shape == (5,) and logits.dtype == jnp.float32


def test_generator_output_is_squashed_into_minus_one_one(default_state):
    """With the last layer's weights scaled up, pre-activations reach far beyond +-1: the output
    saturates at +-1 (tanh) instead of following them."""
    gan, state = default_state
    params = dict(state.generator.params)
    params["ConvTranspose_2"] = {"kernel": params["ConvTranspose_2"]["kernel"] * 1000,
                                 "bias": params["ConvTranspose_2"]["bias"]}
    z = jax.random.normal(jax.random.key(1), (5, 100))
    images = gan.generator.apply({**state.generator.variables(), "params": params}, z, train=False)
    assert float(jnp.abs(images).max()) <= 1.0
    assert float(jnp.abs(images).max()) > 0.999  # saturated: the pre-activations were far larger


def test_pytorch_init_uses_pytorch_fan_in(default_state):
    """Transposed convs take fan-in from the output channels (PyTorch's dim 1), convs from the input."""
    _, state = default_state
    g, d = state.generator.params, state.discriminator.params
    bounds = {
        ("g", "ConvTranspose_0"): 1 / math.sqrt(128 * 7 * 7),
        ("g", "ConvTranspose_1"): 1 / math.sqrt(64 * 4 * 4),
        ("g", "ConvTranspose_2"): 1 / math.sqrt(1 * 4 * 4),
        ("d", "Conv_0"): 1 / math.sqrt(1 * 4 * 4),
        ("d", "Conv_1"): 1 / math.sqrt(64 * 4 * 4),
        ("d", "Dense_0"): 1 / math.sqrt(6272),
    }
    for (net, layer), bound in bounds.items():
        kernel = np.asarray((g if net == "g" else d)[layer]["kernel"])
        assert np.abs(kernel).max() <= bound
        # Uniform on [-b, b] has std b/sqrt(3): a wrong fan-in axis would be off by a large factor.
        assert kernel.std() == pytest.approx(bound / math.sqrt(3), rel=0.1 if kernel.size > 500 else 0.5)
    assert np.all(np.asarray(g["BatchNorm_0"]["scale"]) == 1)


@pytest.mark.slow
def test_dcgan_init():
    config = load_experiment("mnist")
    config.model.init_scheme = "dcgan"
    state = create_train_state(GANSpec.from_config(config), seed=0)
    kernel = np.asarray(state.generator.params["ConvTranspose_1"]["kernel"])
    assert kernel.std() == pytest.approx(0.02, rel=0.05)
    assert np.all(np.asarray(state.generator.params["ConvTranspose_1"]["bias"]) == 0)
    scale = np.asarray(state.generator.params["BatchNorm_0"]["scale"])
    assert scale.std() == pytest.approx(0.02, rel=0.5) and scale.mean() == pytest.approx(1, abs=0.01)


@pytest.mark.slow
def test_widths_come_from_the_config():
    config = load_experiment("mnist")
    config.model.g_width, config.model.d_width, config.latent_dim = 8, 4, 10
    state = create_train_state(GANSpec.from_config(config), seed=0)
    assert state.generator.params["ConvTranspose_0"]["kernel"].shape == (7, 7, 10, 16)
    assert state.discriminator.params["Conv_1"]["kernel"].shape == (4, 4, 4, 8)


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["spectral", "none"])
def test_discriminator_without_batch_norm(norm):
    """Without BatchNorm, D loses its 2 x 128 scale and shift; spectral normalization keeps one
    power-iteration vector and sigma per weight matrix as statistics."""
    config = load_experiment("mnist")
    config.model.d_norm = norm
    state = create_train_state(GANSpec.from_config(config), seed=0)
    assert count_params(state.discriminator.params) == 138_817 - 256
    assert "BatchNorm_0" not in state.discriminator.params
    stats = jax.tree_util.tree_flatten_with_path(state.discriminator.batch_stats)[0]
    names = sorted("/".join(str(k.key) for k in path) for path, _ in stats)
    if norm == "none":
        assert names == []
    else:
        assert names == [f"SpectralNorm_{i}/{layer}/kernel/{v}" for i, layer in
                         enumerate(["Conv_0", "Conv_1", "Dense_0"]) for v in ("sigma", "u")]


@pytest.mark.slow
def test_spectral_norm_divides_each_weight_by_its_largest_singular_value():
    """Power iteration in training mode converges to numpy's largest singular value, and D then
    computes with the weights divided by it."""
    d = GANSpec.from_config(_with(load_experiment("mnist"), d_norm="spectral")).discriminator
    x = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1), minval=-1, maxval=1)
    variables = d.init(jax.random.key(1), x, train=False)
    apply = jax.jit(lambda v: d.apply(v, x, train=True, mutable=["batch_stats"]))
    for _ in range(300):  # one power iteration per call; slow when the top singular values are close
        _, updates = apply(variables)
        variables = {**variables, **updates}
    for i, layer in enumerate(["Conv_0", "Conv_1", "Dense_0"]):
        kernel = np.asarray(variables["params"][layer]["kernel"])
        largest = np.linalg.svd(kernel.reshape(-1, kernel.shape[-1]), compute_uv=False)[0]
        sigma = float(variables["batch_stats"][f"SpectralNorm_{i}"][f"{layer}/kernel/sigma"])
        assert sigma == pytest.approx(largest, rel=1e-3), layer
    # The same D with every kernel pre-divided by its sigma and no normalization computes the same.
    plain = GANSpec.from_config(_with(load_experiment("mnist"), d_norm="none")).discriminator
    params = jax.tree.map(lambda p: p, variables["params"])
    for i, layer in enumerate(["Conv_0", "Conv_1", "Dense_0"]):
        sigma = variables["batch_stats"][f"SpectralNorm_{i}"][f"{layer}/kernel/sigma"]
        params[layer] = {**params[layer], "kernel": params[layer]["kernel"] / sigma}
    np.testing.assert_allclose(d.apply(variables, x, train=False), plain.apply({"params": params}, x,
                                                                                train=False),
                               rtol=2e-3, atol=1e-5)


def _with(config, **model):
    for key, value in model.items():
        config.model[key] = value
    return config


def test_minibatch_stddev_adds_each_groups_spread_as_a_channel():
    from gan_jax.model.networks import minibatch_stddev
    x = jax.random.normal(jax.random.key(0), (8, 3, 3, 2))
    out = minibatch_stddev(x, 4)
    assert out.shape == (8, 3, 3, 3)
    np.testing.assert_array_equal(out[..., :2], x)
    for group in (slice(0, 4), slice(4, 8)):  # consecutive groups of 4
        expected = np.sqrt(np.asarray(x[group]).var(axis=0) + 1e-8).mean()
        np.testing.assert_allclose(out[group, ..., 2], expected, rtol=1e-5)
    assert float(out[0, 0, 0, 2]) != float(out[4, 0, 0, 2])
    copies = jnp.broadcast_to(x[:1], x.shape)  # a collapsed batch: no spread
    np.testing.assert_allclose(minibatch_stddev(copies, 4)[..., 2], 1e-4, rtol=1e-3)
    assert minibatch_stddev(x[:6], 4).shape == (6, 3, 3, 3)  # 6 images: groups of gcd(6, 4) = 2


def test_a_discriminator_with_the_minibatch_feature_has_one_more_input_to_its_dense_layer():
    config = load_experiment("mnist")
    config.model.d_minibatch_std = 4
    state = create_train_state(GANSpec.from_config(config), seed=0)
    assert state.discriminator.params["Dense_0"]["kernel"].shape == (7 * 7 * 129, 1)
