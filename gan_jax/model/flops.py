"""Arithmetic of one training step, counted from the config, and the device's measured matmul rate.

`gan_jax.bench` divides the one by the step time and sets it beside the other, so the distance of a
step from what the device can do is visible. The count is of the tutorial's network at the config's
widths: its convolutions and its dense layer.
"""

from __future__ import annotations

import statistics
import time

import jax
import jax.numpy as jnp
import ml_collections


def _conv_macs(out_size: int, kernel: int, in_features: int, out_features: int) -> int:
    return out_size * out_size * kernel * kernel * in_features * out_features


def _conv_transpose_macs(in_size: int, kernel: int, in_features: int, out_features: int) -> int:
    # Every input pixel meets every kernel tap (the scatter form), including taps that the
    # transposed convolution's padding crops away again.
    return in_size * in_size * kernel * kernel * in_features * out_features


def network_macs(config: ml_collections.ConfigDict) -> dict[str, list[int]]:
    """Multiply-adds per image of each layer's forward pass, for G and D (convs and dense only).

    Dense counts, as a direct convolution executes them: taps over the zero padding count too
    (without them one step is about 13% less). BatchNorm, activations, the losses and Adam are left
    out: together they are well under 1% here.
    """
    g, d, z = config.model.g_width, config.model.d_width, config.latent_dim
    return {
        "generator": [
            _conv_transpose_macs(1, 7, z, 2 * g),  # 1x1 -> 7x7
            _conv_transpose_macs(7, 4, 2 * g, g),  # -> 14x14
            _conv_transpose_macs(14, 4, g, 1),  # -> 28x28
        ],
        "discriminator": [
            _conv_macs(14, 4, 1, d),  # 28x28 -> 14x14
            _conv_macs(7, 4, d, 2 * d),  # -> 7x7
            7 * 7 * 2 * d,  # the dense layer to one logit
        ],
    }


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
