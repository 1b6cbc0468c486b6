"""The GAN's convolutions in forms XLA runs fast: G's transposed convolution (with a choice of
implementation) and D's strided convolution (`conv`), both with canonical-layout gradients.

`impl="xla"` is exactly what `flax.linen.ConvTranspose` computes (`lax.conv_transpose`, kernel HWIO, no
kernel flip). Other implementations compute the same function of the same parameters, so a checkpoint
loads under any of them; they exist because XLA's CPU backend is slow on transposed convolutions.

Convention (checked against a scatter-add reference in tests/test_conv_transpose.py): per spatial
dimension, with stride `s`, kernel size `K` and transposed-conv padding `(lo, hi)`,

    y[s*i + lo - k] += x[i] @ kernel[k]        for every input position i and kernel tap k,

keeping outputs `0 <= o < s*(L-1) + 1 + lo + hi - K + 1`. That is PyTorch's `ConvTranspose2d` with a
spatially flipped kernel and `padding = K - 1 - lo` (the generator's `((2, 2), (2, 2))` with K=4 is
PyTorch's `padding=1`).

`impl="fast"` computes the same thing in forms XLA's CPU backend runs quickly:
  - 1x1 spatial input (the generator's first layer): a single matmul with the flipped, padded kernel,
    instead of a convolution over mostly padding.
  - anything else: a stride-1 convolution whose output features are the stride's phases, then a
    depth-to-space (`_upsample`), with a `jax.custom_vjp` because the weight gradient jax derives
    (a convolution of the dilated input with the whole cotangent as the window) is far slower on
    CPU than the equivalent below (docs/speed.md, "Why the code is as it is").
It supports every stride, kernel size, "SAME"/"VALID" and explicit (even negative) padding that "xla"
does, but only reverse-mode differentiation (grad/vjp): `jax.jvp`/`jacfwd` raise on its custom_vjp.
With padding beyond K - 1 or below 0 its gradients stay right where XLA:CPU gets jax's own wrong
(see `_convolve`).
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
from jax import lax

from gan_jax.config import CONV_TRANSPOSE

IMPLEMENTATIONS = CONV_TRANSPOSE  # config.model.conv_transpose's choices

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")

Padding = tuple[tuple[int, int], tuple[int, int]]

# Below this many output features `_upsample` keeps the dilated convolution, which is faster there
# (docs/speed.md, "Why the code is as it is").
_MIN_PHASE_FEATURES = 8


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
      (batch, out_height, out_width, out_features), of dtype promote(x.dtype, kernel.dtype).

    Raises:
      ValueError: unknown `impl`, or a padding string other than "SAME"/"VALID" with impl="fast".
    """
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown conv_transpose impl {impl!r}; expected one of {IMPLEMENTATIONS}")
    # lax rejects mixed dtypes; promote as flax.linen.ConvTranspose does, so impls stay interchangeable.
    dtype = jnp.promote_types(x.dtype, kernel.dtype)
    x, kernel = x.astype(dtype), kernel.astype(dtype)
    strides = tuple(int(s) for s in strides)
    if impl == "xla":
        return lax.conv_transpose(x, kernel, strides, padding, dimension_numbers=_DIMENSION_NUMBERS)
    pads = tuple(_transpose_padding(k, s, p) for k, s, p in
                 zip(kernel.shape[:2], strides, _per_dim(padding)))
    if x.shape[1:3] == (1, 1):
        return _one_pixel(x, kernel, pads)
    return _strided(x, kernel, strides, pads)


def _per_dim(padding: Sequence[tuple[int, int]] | str) -> tuple:
    """Padding for each of the two spatial dimensions (a string applies to both)."""
    if isinstance(padding, str):
        if padding not in ("SAME", "VALID"):
            raise ValueError(f"conv_transpose padding {padding!r}: expected 'SAME', 'VALID' or pairs")
        return (padding, padding)
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def _transpose_padding(k: int, s: int, padding: tuple[int, int] | str) -> tuple[int, int]:
    """The (low, high) padding `lax.conv_transpose` applies to the stride-dilated input.

    Explicit pairs are used as they are; "SAME"/"VALID" follow `lax.conv_transpose`'s formulas (they
    describe the forward convolution whose shapes the transposed one inverts).
    """
    if padding == "SAME":
        total = k + s - 2
        lo = k - 1 if s > k - 1 else -(-total // 2)
        return lo, total - lo
    if padding == "VALID":
        return k - 1, s - 1 + max(k - s, 0)
    return padding


def _one_pixel(x: jax.Array, kernel: jax.Array, pads: Padding) -> jax.Array:
    """Transposed conv of a 1x1 input: each output pixel is x @ one kernel tap, or zero.

    With one input pixel, y[o] = x @ kernel[lo - o] (taps outside the kernel give 0); as a function of o
    that is the flipped kernel shifted by lo - (K - 1), so pad (or crop) the flipped kernel by that and
    do one matmul. Plain autodiff of this is already a pair of matmuls, no custom rule needed.
    """
    (kh, kw), ((lo_h, hi_h), (lo_w, hi_w)) = kernel.shape[:2], pads
    placed = lax.pad(kernel[::-1, ::-1], jnp.zeros((), kernel.dtype),
                     [(lo_h - (kh - 1), hi_h - (kh - 1), 0), (lo_w - (kw - 1), hi_w - (kw - 1), 0),
                      (0, 0, 0), (0, 0, 0)])
    return jnp.einsum("bi,hwio->bhwo", x[:, 0, 0, :], placed)


def _forward(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Padding) -> jax.Array:
    """The forward pass exactly as `lax.conv_transpose` does it: a conv of the stride-dilated input."""
    return lax.conv_general_dilated(x, kernel, (1, 1), pads, lhs_dilation=strides,
                                    dimension_numbers=_DIMENSION_NUMBERS)


def _convolve(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Padding,
              rhs_dilation: tuple[int, int] = (1, 1)) -> jax.Array:
    """`lax.conv_general_dilated` (NHWC, HWIO) whose padding may be negative, i.e. a crop.

    XLA:CPU (jax 0.10.2) returns garbage from some convolutions padded negatively on one side and
    positively on the other (in a probe: 37 of 236 random shapes for lax's strided conv and its
    gradients, and 38 of 339 for jax's own gradients of `lax.conv_transpose` with padding beyond K - 1
    or below 0). Negative padding is applied as a separate `lax.pad` here, so the convolution itself
    never crops; the model's convolutions pad by non-negative amounts and take the plain path.
    """
    if min(min(pair) for pair in pads) < 0:
        x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), (*pads[0], 0), (*pads[1], 0), (0, 0, 0)])
        pads = ((0, 0), (0, 0))
    return lax.conv_general_dilated(x, kernel, strides, pads, rhs_dilation=rhs_dilation,
                                    dimension_numbers=_DIMENSION_NUMBERS)


def _upsample(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Padding) -> jax.Array:
    """`_forward` (y[s*i + lo - k] += x[i] @ kernel[k]) as a stride-1 conv and a depth-to-space.

    XLA:CPU runs a conv of the stride-dilated input (`lhs_dilation`) more slowly than this form
    (YNNPACK does not take it; figures in docs/speed.md, "Why the code is as it is"). Per dimension,
    write the kernel tap k = s*a + r (the kernel zero-padded to A*s taps) and the output
    o = s*q + t - (s-1) + lo. Then y's phase t at block q is
        Y[q, t] = sum_a x[q + a] @ kernel[s*a + s-1-t],   q in [-(A-1), L-1],
    an ordinary correlation of x (padded by A-1 on both sides) with an A x A kernel whose output
    features are (t_h, t_w, out). Interleaving the phases (depth-to-space) gives y shifted by
    s*A - 1 - lo, which a final pad/crop removes. Same multiply-adds as the dilated form, minus the
    multiplications by the dilation's zeros.

    With few output features (below `_MIN_PHASE_FEATURES`, e.g. the generator's last layer, 64 -> 1)
    the dilated form is the faster one, so it is kept there.
    """
    if kernel.shape[-1] < _MIN_PHASE_FEATURES:
        return _forward(x, kernel, strides, pads)
    batch, length_h, length_w, in_features = x.shape
    kh, kw, _, out_features = kernel.shape
    (sh, sw), ((lo_h, hi_h), (lo_w, hi_w)) = strides, pads
    ah, aw = -(-kh // sh), -(-kw // sw)
    # Zero taps up to A*s, then (a, r) -> (a, t = s-1-r) and the phases into the output features.
    kernel = jnp.pad(kernel, ((0, ah * sh - kh), (0, aw * sw - kw), (0, 0), (0, 0)))
    kernel = kernel.reshape(ah, sh, aw, sw, in_features, out_features)[:, ::-1, :, ::-1]
    kernel = kernel.transpose(0, 2, 4, 1, 3, 5).reshape(ah, aw, in_features, sh * sw * out_features)
    phases = _convolve(x, kernel, (1, 1), ((ah - 1, ah - 1), (aw - 1, aw - 1)))
    blocks_h, blocks_w = phases.shape[1:3]
    y = phases.reshape(batch, blocks_h, blocks_w, sh, sw, out_features).transpose(0, 1, 3, 2, 4, 5)
    y = y.reshape(batch, blocks_h * sh, blocks_w * sw, out_features)
    out_h = sh * (length_h - 1) + 1 + lo_h + hi_h - kh + 1
    out_w = sw * (length_w - 1) + 1 + lo_w + hi_w - kw + 1
    start_h, start_w = sh * ah - 1 - lo_h, sw * aw - 1 - lo_w
    return lax.pad(y, jnp.zeros((), y.dtype),
                   [(0, 0, 0), (-start_h, start_h + out_h - blocks_h * sh, 0),
                    (-start_w, start_w + out_w - blocks_w * sw, 0), (0, 0, 0)])


def _weight_gradient(x: jax.Array, g: jax.Array, pads: Padding, strides: tuple[int, int]) -> jax.Array:
    """Kernel gradient of a strided conv of `x` whose output cotangent is `g`: (kh, kw, in, out).

    One canonical convolution contracting over the batch: x with batch and channels swapped, g as
    the window (batch as its input feature, dilated by the stride), `pads` the forward conv's
    padding extended to cover the window. The same as jax's ("CHWN", "IHWO", "HWCN") dimension
    numbers, with explicit transposes so that the convolution stays canonical inside loops too.
    """
    return _convolve(x.transpose(3, 1, 2, 0), g.transpose(1, 2, 0, 3), (1, 1), pads,
                     rhs_dilation=strides).transpose(1, 2, 0, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _strided(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], pads: Padding) -> jax.Array:
    """`_forward` with gradients in forms that XLA's CPU backend runs fast (see `_strided_bwd`)."""
    return _upsample(x, kernel, strides, pads)


def _strided_fwd(x: jax.Array, kernel: jax.Array, strides: tuple[int, int],
                 pads: Padding) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    return _upsample(x, kernel, strides, pads), (x, kernel)


def _strided_bwd(strides: tuple[int, int], pads: Padding, residuals: tuple[jax.Array, jax.Array],
                 g: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Both gradients of y[s*i + lo - k] += x[i] @ kernel[k], as ordinary convolutions of `g`.

    Substituting k' = K - 1 - k, both gradients read the cotangent padded by (K-1-lo, K-1-hi) at
    gp[s*i + k']:
      dx[i]      = sum_k' gp[s*i + k'] @ flip(kernel)[k']^T  -- a strided conv of g, the adjoint;
      dflip(k)[k'] = sum_{b,i} x[b,i]^T gp[b, s*i + k']     -- a conv of g whose window is x dilated by
                                                                s, contracting over the batch.
    The second is jax's own kernel gradient with the roles of x and g swapped; jax's version
    convolves the dilated x with all of g as the window, which XLA CPU runs ~30x slower.
    """
    x, kernel = residuals
    kh, kw = kernel.shape[:2]
    adjoint_pads = ((kh - 1 - pads[0][0], kh - 1 - pads[0][1]),
                    (kw - 1 - pads[1][0], kw - 1 - pads[1][1]))
    # "HWOI": the kernel's out_features are this conv's input features and vice versa.
    # The kernel's in/out swap is an explicit transpose so that the conv is canonical (NHWC, HWIO,
    # NHWC): XLA:CPU only canonicalizes convs of the entry computation, and a non-canonical conv in a
    # while body (lax.scan) becomes a naive elemental loop, ~100x slower.
    dx = _convolve(g, kernel[::-1, ::-1].transpose(0, 1, 3, 2), strides, adjoint_pads)
    # The roles of x and g swapped: g is the strided conv's input, x its (flipped) output.
    dkernel = _weight_gradient(g, x, adjoint_pads, strides).transpose(0, 1, 3, 2)
    return dx, dkernel[::-1, ::-1]


_strided.defvjp(_strided_fwd, _strided_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv(x: jax.Array, kernel: jax.Array, strides: tuple[int, int], padding: Padding) -> jax.Array:
    """`lax.conv_general_dilated` (NHWC, HWIO, explicit padding) whose gradients are canonical convs.

    jax's own gradients of a convolution use non-canonical dimension numbers (kernel "HWOI" for the
    input gradient; batch and feature swapped for the weight gradient). XLA:CPU rewrites those into
    canonical convolutions (NHWC, HWIO) only in the entry computation; inside a while loop body
    (lax.scan, fori_loop) they stay as they are and run as a naive elemental loop, ~100x slower.
    Here the transposes are explicit, so every convolution is canonical wherever it is.
    """
    return _convolve(x, kernel, strides, padding)


def _conv_fwd(x, kernel, strides, padding):
    return conv(x, kernel, strides, padding), (x, kernel)


def _conv_bwd(strides, padding, residuals, g):
    x, kernel = residuals
    dx_pads, dk_pads = [], []
    for n, k, o, s, (lo, hi) in zip(x.shape[1:3], kernel.shape[:2], g.shape[1:3], strides, padding):
        before = k - 1 - lo
        dx_pads.append((before, n + k - 1 - (s * (o - 1) + 1) - before))
        dk_pads.append((lo, (s * (o - 1) + 1 - n) + (k - 1 - lo)))
    # dx: the adjoint, a transposed conv of g with the kernel flipped and in/out swapped. Through
    # `_strided` (the same computation as `_upsample`) rather than `_upsample` itself, so that a
    # gradient of this gradient (the R1 and WGAN-GP penalties differentiate D's input gradient) takes
    # the fast forms of `_strided_bwd` too, not jax's derivatives of the dilated convolutions.
    dx = _strided(g, kernel[::-1, ::-1].transpose(0, 1, 3, 2), strides, tuple(dx_pads))
    return dx, _weight_gradient(x, g, tuple(dk_pads), strides)


conv.defvjp(_conv_fwd, _conv_bwd)
