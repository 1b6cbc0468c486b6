"""Your own images: the tuned unconditional config (experiments/mnist_tuned.py) on a folder of PNG/JPEG
files, or on an .npz array file (variant "npz").

    python -m gan_jax.train --config experiments/folder.py --config.data.dir=IMAGES --workdir runs/mine
    python -m gan_jax.train --config experiments/folder.py:npz --config.data.dir=FILE.npz

IMAGES holds train/ (and optionally test/), each either class subfolders (their sorted names are the
labels) or the images themselves. Square images of 28, 32, 64 or 128 pixels train as they are
(`--config.data.image_size=N` resizes others), grayscale with one channel and colour with three
(`--config.data.channels` converts). The networks follow the images: the tutorial's at 28 pixels,
DCGAN's at 32, 64 and 128 (README, "Your own images"). No labels are read: the tuned config finds the
classes by itself. For class-conditional generation on labelled images add
`--config.model.num_classes=K --config.model.g_condition=cbn --config.model.d_condition=projection
--config.self_condition.clusters=0`.

Scores need an evaluator trained on the same kind of images (the shipped ones know MNIST and
Fashion-MNIST only), from labelled images:

    python -m gan_jax.evaluator.train --source folder --data_dir IMAGES --out EVALUATOR
    python -m gan_jax.evaluate --workdir runs/mine --evaluator EVALUATOR

or `--config.evaluator=EVALUATOR --config.eval_every=1874` to log FID while training.
"""

import os

import ml_collections

from gan_jax.config import load_config_file

_HERE = os.path.dirname(os.path.abspath(__file__))


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """The tuned config on one's own images; `variant` "npz" reads an .npz, "tiny" (or "npz,tiny")
    shrinks the run to a few steps."""
    names = [name for name in variant.split(",") if name]
    unknown = sorted(set(names) - {"npz", "tiny"})
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown} of experiments/folder.py; known: npz, tiny")
    config = load_config_file(os.path.join(_HERE, "mnist_tuned.py"), "tiny" if "tiny" in names else "")
    config.data.source = "npz" if "npz" in names else "folder"
    config.data.name = "custom"
    config.data.dir = ""  # required: --config.data.dir=IMAGES (a one-line error names it otherwise)
    return config
