"""Per-layer times of gan_jax's convolutions: forward and backward of each layer, alone.

The train step's time is the sum of these (and small element-wise work), so this is where a change to
`gan_jax/conv_transpose.py` or to the XLA options shows first. Each layer runs jitted on random data of
the default model's shapes; the forward and the vjp (both gradients, for a cotangent of ones) are timed
separately, as the median of `--repeats` calls after one warm-up.

    python benchmarks/layers.py --batch_sizes 64,256
    python benchmarks/layers.py --batch_sizes 256 --xla_defaults            # without the step's options
    python benchmarks/layers.py --batch_sizes 256 --conv_transpose xla      # flax's nn.ConvTranspose math
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp

from gan_jax.model.conv_transpose import IMPLEMENTATIONS, conv, conv_transpose
from gan_jax.training import devices

UPSAMPLE = ((2, 2), (2, 2))  # the generator's k4 s2 transposed-conv padding
DOWNSAMPLE = ((1, 1), (1, 1))  # the discriminator's k4 s2 conv padding


def layers(impl: str) -> dict:
    """name -> (function of (x, kernel), input shape without batch, kernel shape)."""
    def transposed(strides, padding):
        return lambda x, k: conv_transpose(x, k, strides, padding, impl)

    def strided(x, k):
        return conv(x, k, (2, 2), DOWNSAMPLE)

    return {
        "G 1x1x100 -> 7x7x128": (transposed((1, 1), "VALID"), (1, 1, 100), (7, 7, 100, 128)),
        "G 7x7x128 -> 14x14x64": (transposed((2, 2), UPSAMPLE), (7, 7, 128), (4, 4, 128, 64)),
        "G 14x14x64 -> 28x28x1": (transposed((2, 2), UPSAMPLE), (14, 14, 64), (4, 4, 64, 1)),
        "D 28x28x1 -> 14x14x64": (strided, (28, 28, 1), (4, 4, 1, 64)),
        "D 14x14x64 -> 7x7x128": (strided, (14, 14, 64), (4, 4, 64, 128)),
    }


def median_ms(fn, args, options: dict, repeats: int) -> float:
    compiled = jax.jit(fn, compiler_options=options or None)
    jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_sizes", default="64,256")
    parser.add_argument("--conv_transpose", default="fast", choices=IMPLEMENTATIONS)
    parser.add_argument("--xla_defaults", action="store_true",
                        help="compile without gan_jax.devices.compiler_options()")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    options = {} if args.xla_defaults else devices.compiler_options()
    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}, conv_transpose={args.conv_transpose}, "
          f"XLA options: {options or 'defaults'}")
    keys = iter(jax.random.split(jax.random.key(0), 100))
    for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
        print(f"batch {batch_size}:          {'forward ms':>10} {'backward ms':>11}")
        for name, (fn, in_shape, kernel_shape) in layers(args.conv_transpose).items():
            x = jax.random.normal(next(keys), (batch_size, *in_shape))
            kernel = jax.random.normal(next(keys), kernel_shape)
            out = jax.eval_shape(fn, x, kernel)

            def backward(x, kernel, fn=fn, out=out):
                return jax.vjp(fn, x, kernel)[1](jnp.ones(out.shape, out.dtype))

            print(f"  {name:22s} {median_ms(fn, (x, kernel), options, args.repeats):10.2f} "
                  f"{median_ms(backward, (x, kernel), options, args.repeats):11.2f}", flush=True)


if __name__ == "__main__":
    main()
