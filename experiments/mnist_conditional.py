"""Class-conditional MNIST: experiments/mnist_tuned.py with G and D given the digit.

    python -m gan_jax.train --config experiments/mnist_conditional.py
    python -m gan_jax.sample --workdir runs/mnist_conditional --label 7 --num 64 --out sevens.png
"""

import os

import ml_collections

from gan_jax.config import load_config_file

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = load_config_file(os.path.join(_HERE, "mnist_tuned.py"), variant)
    config.model.num_classes = 10
    config.model.g_condition = "cbn"
    config.model.d_condition = "projection"
    return config
