"""experiments/mnist_tuned.py on Fashion-MNIST: the same tools and settings, another dataset.

    python -m gan_jax.train --config experiments/fashion_mnist_tuned.py

What to expect (measured on a 2-core CPU, 10,000 samples, the shipped evaluator): after one epoch FID
64.1 +- 8.1 (3 seeds) against the tutorial config's 102.5 +- 7.2; after 20 epochs FID 9.12 +- 0.04,
classifier score 6.38 (seeds 0 and 1, EMA generator) against the tutorial config's 14.14 and 6.15
(seed 0).
"""

import os

import ml_collections

from gan_jax.config import load_config_file

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = load_config_file(os.path.join(_HERE, "mnist_tuned.py"), variant)
    config.data.name = "fashion_mnist"
    return config
