"""experiments/mnist_tuned.py on Fashion-MNIST: the same tools and settings, another dataset.

    python -m gan_jax.train --config experiments/fashion_mnist_tuned.py
"""

import os

import ml_collections

from gan_jax.config import load_config_file

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = load_config_file(os.path.join(_HERE, "mnist_tuned.py"), variant)
    config.data.name = "fashion_mnist"
    return config
