"""Arithmetic of one training step, counted from the config, and the device's measured matmul rate.

`gan_jax.bench` divides the one by the step time and sets it beside the other, so the distance of a
step from what the device can do is visible. The count is of the config's networks (the tutorial's,
or DCGAN's for other image sizes) at its widths: their convolutions and dense layer.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections

from gan_jax import config as config_lib
from gan_jax.model.networks import depth, generator_layers


def _conv_macs(out_size: int, kernel: int, in_features: int, out_features: int) -> int:
    return out_size * out_size * kernel * kernel * in_features * out_features


def _conv_transpose_macs(in_size: int, kernel: int, in_features: int, out_features: int) -> int:
    # Every input pixel meets every kernel tap (the scatter form), including taps that the
    # transposed convolution's padding crops away again.
    return in_size * in_size * kernel * kernel * in_features * out_features


def network_macs(config: ml_collections.ConfigDict) -> dict[str, list[int]]:
    """Multiply-adds per image of each layer's forward pass, for G and D (convs and dense only), for
    the config's image shape (`config.image_shape`).

    Dense counts, as a direct convolution executes them: taps over the zero padding count too
    (without them one step is about 13% less). BatchNorm, activations, the losses and Adam are left
    out: together they are well under 1% here.
    """
    size, _, channels = config_lib.image_shape(config)
    generator, side, in_features = [], 1, config.latent_dim
    for features, kernel, stride, _ in generator_layers(config.model.g_width, size, channels):
        generator.append(_conv_transpose_macs(side, kernel, in_features, features))
        side, in_features = (side * stride if stride > 1 else side + kernel - 1), features
    discriminator, side, in_features = [], size, channels
    for index in range(depth(size)):
        side, features = side // 2, config.model.d_width * 2 ** index
        discriminator.append(_conv_macs(side, 4, in_features, features))
        in_features = features
    discriminator.append(side * side * in_features)  # the dense layer to one logit
    return {"generator": generator, "discriminator": discriminator}


def train_step_flops_per_image(config: ml_collections.ConfigDict) -> int:
    """Analytic FLOPs (2 per multiply-add) of one training step, per image of the batch.

    D step: G forward; for the real and the fake batch, D forward, its weight gradients and its input
    gradients below the first layer. G step: G forward, D forward, D's input gradients all the way to
    the image, G's weight gradients and its input gradients below the first layer.
    """
    macs = network_macs(config)
    g_fwd, d_fwd = sum(macs["generator"]), sum(macs["discriminator"])
    g_first, d_first = macs["generator"][0], macs["discriminator"][0]
    d_step = g_fwd + 2 * (d_fwd + d_fwd + (d_fwd - d_first))
    g_step = g_fwd + d_fwd + d_fwd + g_fwd + (g_fwd - g_first)
    return 2 * (d_step + g_step)


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    """Measured float32 matmul rate of the default device, in GFLOP/s (median of `repeats`)."""
    a = jax.random.normal(jax.random.key(0), (size, size), jnp.float32)
    matmul = jax.jit(jnp.dot)
    matmul(a, a).block_until_ready()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9
