"""The tutorial's setup: a DCGAN-style GAN on MNIST, batch 64, 20 epochs, Adam 2e-4 with beta1 0.5.

    python -m gan_jax.train --config experiments/mnist.py
    python -m gan_jax.train --config experiments/mnist.py:tiny          # a few-step smoke run
    python -m gan_jax.train --config experiments/mnist.py \
        --config.data.source=idx --config.data.dir=/path/to/mnist     # offline, from IDX files

Every key is at its default (`gan_jax.config.defaults()`; docs/config.md lists them with
their meaning). What to expect (measured, one epoch = 937 steps, about 80 s on a 2-core CPU): the 8x8
grid in samples/ shows clearly recognizable digits; D loss around 0.2-0.3, G loss 1.3-1.9, mean D(x)
about 0.75 and D(G(z)) 0.1-0.3 (D stays ahead, G keeps improving); FID about 160 with the shipped
evaluator.
"""

import ml_collections

from gan_jax.config import defaults


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """Returns the run config; `variant="tiny"` shrinks it to a few steps for smoke tests."""
    config = defaults()
    if variant == "tiny":
        config.num_steps = 6
        config.log_every = 2
        config.sample_every = 3
        config.checkpoint_every = 4
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of experiments/mnist.py; known: 'tiny'")
    return config
