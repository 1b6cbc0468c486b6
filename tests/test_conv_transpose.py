"""Tests for gan_jax.model.conv_transpose: every impl against XLA's and against a naive scatter-add reference.

Tolerances: float32 results are compared with `atol = 1e-5 * max|expected|` (and rtol 1e-5). Different
implementations sum the same products in a different order; at these sizes that moves results by
at most ~1e-6 of the largest value (measured: 8.3e-7, a kernel gradient), while an indexing or
orientation bug moves them by O(1) of it. The float64 reference is exact by comparison.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gan_jax.model.conv_transpose import IMPLEMENTATIONS, conv_transpose

# The generator's three layers: (input shape without batch, kernel shape, strides, padding).
LAYERS = {
    "1x1_to_7x7": ((1, 1, 100), (7, 7, 100, 128), (1, 1), "VALID"),
    "7x7_to_14x14": ((7, 7, 128), (4, 4, 128, 64), (2, 2), ((2, 2), (2, 2))),
    "14x14_to_28x28": ((14, 14, 64), (4, 4, 64, 1), (2, 2), ((2, 2), (2, 2))),
}
BATCH = 4


def assert_close(actual: jax.Array, expected: jax.Array | np.ndarray) -> None:
    """Equal up to float32 summation-order differences, measured against the largest |expected|."""
    expected = np.asarray(expected)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=1e-5,
                               atol=1e-5 * float(np.abs(expected).max()))


def random_inputs(seed: int, x_shape: tuple, kernel_shape: tuple) -> tuple[jax.Array, jax.Array]:
    """Standard-normal input and a kernel scaled like flax's default init, float32."""
    kx, kk = jax.random.split(jax.random.key(seed))
    x = jax.random.normal(kx, x_shape, jnp.float32)
    fan_in = kernel_shape[0] * kernel_shape[1] * kernel_shape[2]
    return x, jax.random.normal(kk, kernel_shape, jnp.float32) / np.sqrt(fan_in)


def scatter_add_reference(x: np.ndarray, kernel: np.ndarray, strides: tuple[int, int],
                          pads: tuple[tuple[int, int], tuple[int, int]]) -> np.ndarray:
    """Transposed conv the textbook way, in float64, for explicit `lax.conv_transpose` padding.

    Each input pixel adds value * kernel into the output window at stride * position, then the
    result is cropped. Found empirically (and matching lax's definition as a conv of the dilated
    input): with `transpose_kernel=False`, lax scatters the *spatially flipped* kernel, and its
    padding `lo` means "crop K - 1 - lo at the start" (negative crop = zero rows), so one input pixel
    at i with a one-hot kernel tap k lands at output s*i + lo - k.
    """
    batch, h, w, _ = x.shape
    kh, kw, _, out_features = kernel.shape
    (sh, sw), ((lo_h, hi_h), (lo_w, hi_w)) = strides, pads
    full = np.zeros((batch, sh * (h - 1) + kh, sw * (w - 1) + kw, out_features))
    flipped = kernel[::-1, ::-1].astype(np.float64)
    for i in range(h):
        for j in range(w):
            window = np.einsum("bc,hwco->bhwo", x[:, i, j, :].astype(np.float64), flipped)
            full[:, sh * i:sh * i + kh, sw * j:sw * j + kw, :] += window
    # Crop (or, for negative amounts, zero-pad) K - 1 - lo at the start and K - 1 - hi at the end.
    crop = [(kh - 1 - lo_h, kh - 1 - hi_h), (kw - 1 - lo_w, kw - 1 - hi_w)]
    full = np.pad(full, [(0, 0)] + [(max(-a, 0), max(-b, 0)) for a, b in crop] + [(0, 0)])
    (a, b), (c, d) = [(max(a, 0), full.shape[1 + n] - max(b, 0)) for n, (a, b) in enumerate(crop)]
    return full[:, a:b, c:d, :]


def reference_vjp(reference, x: np.ndarray, kernel: np.ndarray,
                  cotangent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of sum(cotangent * reference(x, kernel)) for a `reference` linear in each argument,
    in float64: each gradient entry is the reference applied to one basis element (fine at test sizes)."""
    def gradient(arg: np.ndarray, apply) -> np.ndarray:
        grad = np.zeros(arg.shape)
        for index in np.ndindex(arg.shape):
            basis = np.zeros(arg.shape)
            basis[index] = 1.0
            grad[index] = np.sum(cotangent * apply(basis))
        return grad
    x, kernel = x.astype(np.float64), kernel.astype(np.float64)
    return (gradient(x, lambda e: reference(e, kernel)), gradient(kernel, lambda e: reference(x, e)))


def assert_matches_reference(fn, reference, x: jax.Array, kernel: jax.Array, seed: int) -> None:
    """fn(x, kernel) and its gradients for a random cotangent equal the float64 `reference`'s."""
    expected = reference(np.asarray(x), np.asarray(kernel))
    cotangent = np.asarray(jax.random.normal(jax.random.key(seed), expected.shape))
    y, pullback = jax.vjp(fn, x, kernel)
    assert_close(y, expected)
    wanted = reference_vjp(reference, np.asarray(x), np.asarray(kernel), cotangent)
    for got, want in zip(pullback(jnp.asarray(cotangent, jnp.float32)), wanted):
        assert_close(got, want)


def value_and_grads(impl: str, x: jax.Array, kernel: jax.Array, strides: tuple, padding,
                    seed: int = 1) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Output and the (x, kernel) gradients for a random cotangent (the same one for every impl)."""
    f = lambda x, k: conv_transpose(x, k, strides, padding, impl)
    y, pullback = jax.vjp(jax.jit(f), x, kernel)
    return y, *pullback(jax.random.normal(jax.random.key(seed), y.shape, y.dtype))


def assert_fast_matches_xla(x: jax.Array, kernel: jax.Array, strides: tuple, padding) -> None:
    expected = value_and_grads("xla", x, kernel, strides, padding)
    for got, want in zip(value_and_grads("fast", x, kernel, strides, padding), expected):
        assert got.shape == want.shape
        assert_close(got, want)


@pytest.mark.slow
@pytest.mark.parametrize("layer", LAYERS)
def test_fast_matches_xla_on_generator_layers(layer: str) -> None:
    in_shape, kernel_shape, strides, padding = LAYERS[layer]
    assert_fast_matches_xla(*random_inputs(0, (BATCH, *in_shape), kernel_shape), strides, padding)


@pytest.mark.slow
@pytest.mark.parametrize("x_hw, kernel_hw, strides, padding", [
    ((5, 4), (2, 3), (2, 3), "SAME"),  # stride > K - 1: lax pads low by K - 1
    ((5, 4), (3, 4), (2, 3), "SAME"),  # uneven (low, high) padding
    ((5, 4), (3, 4), (2, 3), "VALID"),
    ((4, 3), (4, 2), (2, 3), ((0, 3), (1, -1))),  # asymmetric, over-wide and negative padding
    ((1, 1), (3, 2), (2, 1), ((1, 3), (0, 1))),  # 1x1 input, not "VALID"
    ((3, 2), (2, 1), (3, 3), ((1, 2), (0, 0))),  # kernel smaller than the stride: phases no tap reaches
])
@pytest.mark.parametrize("out_features", [2, 8])  # the dilated form, and the phase form (>= 8)
def test_fast_matches_xla_on_other_shapes(x_hw: tuple, kernel_hw: tuple, strides: tuple,
                                          padding, out_features: int) -> None:
    x, kernel = random_inputs(3, (2, *x_hw, 3), (*kernel_hw, 3, out_features))
    assert_fast_matches_xla(x, kernel, strides, padding)


@pytest.mark.slow
@pytest.mark.parametrize("x_hw, kernel_hw, strides, padding", [
    ((1, 1), (3, 3), (1, 1), ((2, 2), (2, 2))),  # the generator's 1x1 case; lo=K-1 is "VALID"
    ((1, 1), (3, 2), (2, 1), ((1, 3), (0, 1))),  # 1x1 input, crop on one side, pad on the other
    ((3, 3), (4, 4), (2, 2), ((2, 2), (2, 2))),  # PyTorch ConvTranspose2d(k=4, s=2, p=1)
    ((3, 2), (3, 2), (3, 2), ((0, 3), (1, -1))),  # uneven strides, negative and over-wide padding
    ((3, 2), (2, 1), (3, 3), ((1, 2), (0, 0))),  # kernel smaller than the stride: phases no tap reaches
    ((3, 4), (2, 2), (2, 2), ((-5, 6), (1, 1))),  # padding cropping past the input: all-zero rows
    ((4, 5), (5, 5), (3, 3), ((0, 3), (0, 3))),  # K not a multiple of s, no low padding: phases start past x[0]
])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("out_features", [2, 8])
def test_matches_scatter_add_reference(impl: str, x_hw: tuple, kernel_hw: tuple, strides: tuple,
                                       padding: tuple, out_features: int) -> None:
    x, kernel = random_inputs(2, (2, *x_hw, 3), (*kernel_hw, 3, out_features))
    expected = scatter_add_reference(np.asarray(x), np.asarray(kernel), strides, padding)
    assert_close(conv_transpose(x, kernel, strides, padding, impl), expected)


@pytest.mark.slow
@pytest.mark.parametrize("x_hw, kernel_hw, strides, padding", [
    ((5, 3), (4, 2), (3, 1), ((5, 1), (1, 1))),  # low padding beyond K - 1
    ((3, 2), (2, 1), (2, 1), ((5, -2), (0, 0))),  # beyond K - 1 on one side, negative on the other
    ((4, 2), (1, 1), (1, 1), ((-4, 3), (0, 0))),  # cropping more than the kernel covers
    ((3, 4), (2, 2), (2, 2), ((-5, 6), (1, 1))),  # padding cropping past the input: all-zero rows
])
def test_gradients_match_the_reference_with_unusual_padding(x_hw: tuple, kernel_hw: tuple,
                                                            strides: tuple, padding: tuple) -> None:
    """Their gradients involve convolutions padded negatively on one side and positively on the other,
    which XLA:CPU gets wrong (garbage values) unless the crop is a separate op; jax's own gradient of
    lax.conv_transpose ("xla") can be wrong on these, so the reference is the float64 scatter-add."""
    x, kernel = random_inputs(8, (2, *x_hw, 3), (*kernel_hw, 3, 8))
    assert_matches_reference(lambda x, k: conv_transpose(x, k, strides, padding, "fast"),
                             lambda x, k: scatter_add_reference(x, k, strides, padding), x, kernel, 9)


def test_vmap_of_grad_matches_xla() -> None:
    in_shape, kernel_shape, strides, padding = LAYERS["14x14_to_28x28"]
    xs, kernel = random_inputs(4, (3, 2, *in_shape), kernel_shape)  # vmapped over the leading 3

    def grads(impl: str) -> tuple[jax.Array, jax.Array]:
        loss = lambda x, k: jnp.sum(jnp.sin(conv_transpose(x, k, strides, padding, impl)))
        return jax.jit(jax.vmap(jax.grad(loss, argnums=(0, 1)), in_axes=(0, None)))(xs, kernel)

    for got, want in zip(grads("fast"), grads("xla")):
        assert_close(got, want)


@pytest.mark.slow
@pytest.mark.parametrize("layer", LAYERS)
def test_bfloat16_in_bfloat16_out(layer: str) -> None:
    in_shape, kernel_shape, strides, padding = LAYERS[layer]
    x, kernel = random_inputs(5, (BATCH, *in_shape), kernel_shape)
    x16, kernel16 = x.astype(jnp.bfloat16), kernel.astype(jnp.bfloat16)

    def loss(x: jax.Array, k: jax.Array) -> jax.Array:
        return jnp.sum(conv_transpose(x, k, strides, padding, "fast").astype(jnp.float32) ** 2)

    y = conv_transpose(x16, kernel16, strides, padding, "fast")
    grads = jax.grad(loss, argnums=(0, 1))(x16, kernel16)
    assert y.dtype == grads[0].dtype == grads[1].dtype == jnp.bfloat16
    for value in (y, *grads):
        assert bool(jnp.all(jnp.isfinite(value)))
    # bfloat16 keeps 8 significant bits: a few percent of the largest value, not float32's 1e-5.
    expected = conv_transpose(x, kernel, strides, padding, "xla")
    np.testing.assert_allclose(np.asarray(y, np.float32), expected,
                               atol=0.05 * float(jnp.abs(expected).max()))
    # Mixed inputs promote, as flax does: a float32 kernel makes a float32 output.
    for impl in IMPLEMENTATIONS:
        assert conv_transpose(x16, kernel, strides, padding, impl).dtype == jnp.float32


def test_unknown_impl_or_padding_raises() -> None:
    x, kernel = random_inputs(6, (1, 2, 2, 1), (2, 2, 1, 1))
    with pytest.raises(ValueError, match="unknown conv_transpose impl"):
        conv_transpose(x, kernel, (1, 1), "VALID", impl="cudnn")
    with pytest.raises(ValueError, match="padding"):
        conv_transpose(x, kernel, (1, 1), "FULL", impl="fast")


@pytest.mark.slow
@pytest.mark.parametrize("shape, kernel_shape", [((4, 28, 28, 1), (4, 4, 1, 8)),
                                                 ((4, 14, 14, 8), (4, 4, 8, 16)),
                                                 ((3, 9, 9, 2), (3, 3, 2, 5)),
                                                 # input gradients with >= 8 features take the
                                                 # phase form; odd sizes and K not a multiple of s
                                                 ((3, 9, 9, 8), (3, 3, 8, 5)),
                                                 ((2, 11, 10, 8), (4, 3, 8, 4))])
def test_conv_matches_lax_with_its_gradients(shape, kernel_shape):
    """D's `conv`: lax's strided conv, with gradients written as canonical convolutions."""
    from gan_jax.model.conv_transpose import conv
    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, shape)
    kernel = jax.random.normal(kk, kernel_shape)
    padding = ((1, 1), (1, 1))
    reference = lambda x, k: jax.lax.conv_general_dilated(  # noqa: E731
        x, k, (2, 2), padding, dimension_numbers=("NHWC", "HWIO", "NHWC"))
    ours = lambda x, k: conv(x, k, (2, 2), padding)  # noqa: E731
    np.testing.assert_array_equal(ours(x, kernel), reference(x, kernel))
    cotangent = jax.random.normal(kg, reference(x, kernel).shape)
    grads = [jax.vjp(f, x, kernel)[1](cotangent) for f in (ours, reference)]
    for got, want in zip(*grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))


def correlation_reference(x: np.ndarray, kernel: np.ndarray, strides: tuple[int, int],
                          padding: tuple) -> np.ndarray:
    """Strided NHWC x HWIO correlation in float64; negative padding crops the input."""
    for axis, (lo, hi) in zip((1, 2), padding):
        x = np.pad(x, [(max(lo, 0), max(hi, 0)) if a == axis else (0, 0) for a in range(4)])
        x = np.take(x, range(max(-lo, 0), x.shape[axis] - max(-hi, 0)), axis=axis)
    (kh, kw), (sh, sw) = kernel.shape[:2], strides
    rows, cols = (x.shape[1] - kh) // sh + 1, (x.shape[2] - kw) // sw + 1
    return np.stack([np.stack([np.einsum("bhwc,hwco->bo", x[:, sh * i:sh * i + kh, sw * j:sw * j + kw],
                                         kernel.astype(np.float64)) for j in range(cols)], axis=1)
                     for i in range(rows)], axis=1)


@pytest.mark.slow
@pytest.mark.parametrize("x_hw, kernel_hw, strides, padding", [
    ((6, 4), (3, 2), (1, 1), ((-4, 3), (0, 0))),
    ((8, 1), (4, 1), (3, 1), ((-4, 3), (0, 0))),
    ((4, 1), (3, 1), (1, 1), ((5, 1), (0, 0))),  # its input gradient crops on one side
])
def test_conv_with_negative_padding_matches_the_reference(x_hw, kernel_hw, strides, padding):
    """D's `conv` with crops and over-wide padding, forward and gradients, against float64; lax's own
    convolution returns garbage on such padding on XLA:CPU (see conv_transpose._convolve)."""
    from gan_jax.model.conv_transpose import conv
    x, kernel = random_inputs(10, (2, *x_hw, 8), (*kernel_hw, 8, 9))
    assert_matches_reference(lambda x, k: conv(x, k, strides, padding),
                             lambda x, k: correlation_reference(x, k, strides, padding), x, kernel, 11)


@pytest.mark.slow
def test_every_convolution_of_a_rolled_training_loop_is_canonical(idx_dir):
    """XLA:CPU canonicalizes convolutions only outside loops; a non-canonical one left inside a
    rolled lax.scan runs as a naive loop (~100x slower). The model's convolutions and their
    gradients must all be NHWC x HWIO -> NHWC already."""
    import functools
    import re

    from helpers import tiny_config
    from gan_jax.training import steps
    from gan_jax.training.spec import GANSpec
    from gan_jax.training.state import create_train_state
    gan = GANSpec.from_config(tiny_config(idx_dir))
    state = create_train_state(gan, seed=0)
    from gan_jax.data.batches import TrainData
    data = TrainData(jnp.zeros((32, 28, 28, 1), jnp.uint8), jnp.zeros((2, 32), jnp.int32))
    rolled = jax.jit(functools.partial(steps.train_steps, gan=gan, num_steps=2, unroll=False))
    hlo = rolled.lower(state, data).compile().as_text()
    labels = re.findall(r"convolution\(.*?dim_labels=(\S+?)[,\s]", hlo)
    assert len(labels) >= 10
    assert set(labels) == {"b01f_01io->b01f"}, sorted(set(labels))
