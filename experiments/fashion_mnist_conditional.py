"""Class-conditional Fashion-MNIST: experiments/mnist_conditional.py on the garments.

    python -m gan_jax.train --config experiments/fashion_mnist_conditional.py

What to expect (measured on a 2-core CPU, seed 0, 10,000 class-balanced samples, the shipped
evaluator): after 20 epochs FID 2.94, intra-class FID 9.1, conditional accuracy 91.15% (the
evaluator's own test accuracy: 92.25%), classifier score 7.97; 90.5% conditional accuracy after 4.
"""

import os

import ml_collections

from gan_jax.config import load_config_file

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = load_config_file(os.path.join(_HERE, "mnist_conditional.py"), variant)
    config.data.name = "fashion_mnist"
    return config
