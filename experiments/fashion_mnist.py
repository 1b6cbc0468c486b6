"""The tutorial's GAN on Fashion-MNIST: experiments/mnist.py with another dataset.

    python -m gan_jax.train --config experiments/fashion_mnist.py

What to expect: after one epoch, recognizable garment shapes (shirts, trousers, shoes), less detailed
than the MNIST digits after the same steps.
"""

import importlib.util
import os

import ml_collections


def _mnist_config(variant: str) -> ml_collections.ConfigDict:
    # Configs are loaded by file path, not as a package, so import the sibling file the same way.
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mnist.py")
    spec = importlib.util.spec_from_file_location("experiments_mnist", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = _mnist_config(variant)
    config.data.name = "fashion_mnist"
    return config
