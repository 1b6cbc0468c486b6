"""The tutorial's Generator and Discriminator in flax.linen (NHWC), with its shape bug fixed.

Generator: z (latent_dim) -> 1x1 -> ConvT k7 -> 7x7x(2w) -> ConvT k4 s2 -> 14x14x(w) -> ConvT k4 s2 ->
28x28x1, tanh. Discriminator: 28x28x1 -> Conv k4 s2 -> 14x14x(w) -> Conv k4 s2 -> 7x7x(2w) -> Dense -> one
logit per image (no sigmoid: the loss takes logits). With the default widths (64) the parameter counts
equal the PyTorch peer's: generator 759,873, discriminator 138,817.

Initialization mirrors the tutorial by default: PyTorch's layer defaults, uniform(-1/sqrt(fan_in),
1/sqrt(fan_in)) for weights and biases, where a transposed convolution's fan-in is out_features * kh * kw
(PyTorch reads it from dim 1 of its (in, out, kh, kw) weight). `init_scheme="dcgan"` gives the DCGAN paper's
N(0, 0.02) weights, zero biases and N(1, 0.02) BatchNorm scales.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from gan_jax.conv_transpose import conv as canonical_conv
from gan_jax.conv_transpose import conv_transpose

D_NORMS = ("batch", "spectral", "none")

# PyTorch's ConvTranspose2d(k=4, s=2, p=1) doubles the size; lax.conv_transpose pads the dilated input
# by k - 1 - p on each side for the same result.
_UPSAMPLE_PADDING = ((2, 2), (2, 2))
_DOWNSAMPLE_PADDING = ((1, 1), (1, 1))
# PyTorch's BatchNorm2d(momentum=0.1, eps=1e-5) in flax's terms (momentum is the decay of the average).
_BATCH_NORM = dict(momentum=0.9, epsilon=1e-5)


def _uniform(bound: float) -> nn.initializers.Initializer:
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def layer_initializers(init_scheme: str, fan_in: int) -> dict[str, nn.initializers.Initializer]:
    """kernel_init and bias_init for a conv, transposed conv or dense layer with the given fan-in."""
    if init_scheme == "pytorch":
        bound = 1.0 / math.sqrt(fan_in)
        return dict(kernel_init=_uniform(bound), bias_init=_uniform(bound))
    if init_scheme == "dcgan":
        return dict(kernel_init=nn.initializers.normal(0.02), bias_init=nn.initializers.zeros)
    raise ValueError(f"unknown init_scheme {init_scheme!r}")


def batch_norm_scale_init(init_scheme: str) -> nn.initializers.Initializer:
    if init_scheme == "dcgan":
        return lambda key, shape, dtype=jnp.float32: 1.0 + 0.02 * jax.random.normal(key, shape, dtype)
    return nn.initializers.ones


class ConvTranspose(nn.Module):
    """`nn.ConvTranspose` with the same parameters ("kernel" HWIO, "bias"), computed by `impl`."""

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int]
    padding: Any
    init_scheme: str = "pytorch"
    impl: str = "xla"
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        inits = layer_initializers(self.init_scheme, fan_in=self.features * kh * kw)
        kernel = self.param("kernel", inits["kernel_init"], (kh, kw, x.shape[-1], self.features))
        bias = self.param("bias", inits["bias_init"], (self.features,))
        x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
        return conv_transpose(x, kernel, self.strides, self.padding, self.impl) + bias


class Conv(nn.Module):
    """`nn.Conv` (same parameters "kernel" HWIO and "bias", explicit padding) with canonical gradients."""

    features: int
    kernel_size: Sequence[int]
    strides: Sequence[int]
    padding: Any
    kernel_init: Any
    bias_init: Any
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kh, kw = self.kernel_size
        kernel = self.param("kernel", self.kernel_init, (kh, kw, x.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.features,))
        x, kernel, bias = x.astype(self.dtype), kernel.astype(self.dtype), bias.astype(self.dtype)
        padding = tuple((int(lo), int(hi)) for lo, hi in self.padding)
        return canonical_conv(x, kernel, tuple(self.strides), padding) + bias


class Generator(nn.Module):
    """z (batch, latent_dim) -> images (batch, 28, 28, 1) in [-1, 1]."""

    width: int = 64
    init_scheme: str = "pytorch"
    conv_transpose: str = "xla"
    axis_name: str | None = None  # BatchNorm statistics are averaged over this pmap/shard_map axis
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, z: jax.Array, train: bool) -> jax.Array:
        layer = dict(init_scheme=self.init_scheme, impl=self.conv_transpose, dtype=self.dtype)
        norm = dict(use_running_average=not train, axis_name=self.axis_name, dtype=self.dtype,
                    scale_init=batch_norm_scale_init(self.init_scheme), **_BATCH_NORM)
        x = z.reshape(z.shape[0], 1, 1, z.shape[-1])
        x = ConvTranspose(2 * self.width, (7, 7), (1, 1), "VALID", **layer)(x)  # tutorial: k4 gave 4x4
        x = nn.relu(nn.BatchNorm(**norm)(x))
        x = ConvTranspose(self.width, (4, 4), (2, 2), _UPSAMPLE_PADDING, **layer)(x)
        x = nn.relu(nn.BatchNorm(**norm)(x))
        x = ConvTranspose(1, (4, 4), (2, 2), _UPSAMPLE_PADDING, **layer)(x)
        return jnp.tanh(x.astype(jnp.float32))


class Discriminator(nn.Module):
    """images (batch, 28, 28, 1) in [-1, 1] -> logits (batch,).

    `norm` is how D is normalized: "batch" (the tutorial's BatchNorm after the second convolution),
    "spectral" (every layer's weight divided by its largest singular value, estimated by one power
    iteration per call; Miyato et al. 2018) or "none". Spectral normalization keeps its power-iteration
    vectors in the `batch_stats` collection and updates them in training mode only. Without BatchNorm
    each image's logit depends on that image alone, which the gradient penalties need.
    """

    width: int = 64
    init_scheme: str = "pytorch"
    norm: str = "batch"
    axis_name: str | None = None
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        def layer(module: nn.Module, x: jax.Array) -> jax.Array:
            if self.norm == "spectral":
                return nn.SpectralNorm(module)(x, update_stats=train)
            return module(x)

        def conv(features, x):
            inits = layer_initializers(self.init_scheme, fan_in=x.shape[-1] * 4 * 4)
            return layer(Conv(features, (4, 4), (2, 2), _DOWNSAMPLE_PADDING, dtype=self.dtype, **inits), x)

        x = nn.leaky_relu(conv(self.width, x), 0.2)
        x = conv(2 * self.width, x)
        if self.norm == "batch":
            x = nn.BatchNorm(use_running_average=not train, axis_name=self.axis_name, dtype=self.dtype,
                             scale_init=batch_norm_scale_init(self.init_scheme), **_BATCH_NORM)(x)
        x = nn.leaky_relu(x, 0.2)
        x = x.reshape(x.shape[0], -1)
        inits = layer_initializers(self.init_scheme, fan_in=x.shape[-1])
        logits = layer(nn.Dense(1, dtype=self.dtype, **inits), x)
        # The loss is computed in float32 at least, whatever the layers compute in (bfloat16).
        return logits[:, 0].astype(jnp.promote_types(self.dtype, jnp.float32))
