"""Transposed convolution for the generator, with a choice of implementation.

`impl="xla"` is exactly what `flax.linen.ConvTranspose` computes (`lax.conv_transpose`, kernel HWIO, no
kernel flip). Other implementations compute the same function of the same parameters, so a checkpoint
loads under any of them; they exist because XLA's CPU backend is slow on transposed convolutions.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

IMPLEMENTATIONS = ("xla",)

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def conv_transpose(x: jax.Array, kernel: jax.Array, strides: Sequence[int],
                   padding: Sequence[tuple[int, int]] | str, impl: str = "xla") -> jax.Array:
    """Transposed convolution of NHWC `x` with an HWIO `kernel`, as `flax.linen.ConvTranspose` does it.

    Args:
      x: input, (batch, height, width, in_features).
      kernel: (kh, kw, in_features, out_features).
      strides: (sh, sw).
      padding: "VALID"/"SAME" or explicit (low, high) pairs, with `lax.conv_transpose`'s meaning.
      impl: one of IMPLEMENTATIONS.

    Returns:
      (batch, out_height, out_width, out_features).
    """
    if impl == "xla":
        return jax.lax.conv_transpose(x, kernel, tuple(strides), padding,
                                      dimension_numbers=_DIMENSION_NUMBERS)
    raise ValueError(f"unknown conv_transpose impl {impl!r}; expected one of {IMPLEMENTATIONS}")
