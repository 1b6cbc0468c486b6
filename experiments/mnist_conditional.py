"""Class-conditional MNIST: experiments/mnist_tuned.py with G and D given the digit instead of a cluster.

    python -m gan_jax.train --config experiments/mnist_conditional.py
    python -m gan_jax.sample --workdir runs/mnist_conditional --label 7 --num 64 --out sevens.png

G takes the label through class-conditional BatchNorm and D through a projection: of the methods
compared after one epoch (3 seeds each, README "Class-conditional generation") this one led by far at
this config's G rate (2e-3), FID 37.9 +- 12.1 and conditional accuracy 90.9% against 84.2 / 85.0% for
concat / acgan and 249.6 / 64.0% for concat / concat. The ranking depends on the rate: at the
tutorial's 2e-4 cbn / projection fails (220.4 / 12.9%) and concat / concat leads (98.0 / 80.5%), still
well behind this pair at 2e-3.

What to expect (measured on a 2-core CPU, seed 0 unless said, 10,000 class-balanced samples, the shipped
evaluator): after 20 epochs FID 6.6, intra-class FID 22.2, conditional accuracy 99.69% (the
evaluator's own test accuracy: 99.56%), classifier score 9.92; 97.4% conditional accuracy after 4.
Seed 1: FID 5.85, intra-class FID 21.5, conditional accuracy 99.69%, score 9.92.
"""

import os

import ml_collections

from gan_jax.config import load_config_file

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    config = load_config_file(os.path.join(_HERE, "mnist_tuned.py"), variant)
    # The labels take the clusters' place: G and D are conditioned on the digit, through the same
    # class-conditional BatchNorm and projection, with the tuned config's rates and average.
    config.self_condition.clusters = 0
    config.model.num_classes = 10
    config.model.g_condition = "cbn"
    config.model.d_condition = "projection"
    return config
