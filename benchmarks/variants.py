"""The configurations the quality tables compare: the tutorial's, each tool alone on top of it, the tuned
config, and the unconditional-quality study's variants. One place, read by `quality.py` and `study.py`
(sample quality) and `step_cost.py` (step time).

Each variant is a config file and the `--config.KEY=VALUE` overrides it adds. The penalties need a D
without BatchNorm (`config.validate` refuses them with it), so their rows change `model.d_norm` too.
"""

from __future__ import annotations

import os

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (config file relative to the repository, overrides); "{dataset}" is filled in per dataset.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "tutorial": ("experiments/{dataset}.py", []),
    "ema": ("experiments/{dataset}.py", ["--config.ema_decay=0.995"]),
    "hinge": ("experiments/{dataset}.py", ["--config.loss=hinge"]),
    "ls": ("experiments/{dataset}.py", ["--config.loss=ls"]),
    "wgan_gp": ("experiments/{dataset}.py", ["--config.loss=wgan_gp", "--config.model.d_norm=none"]),
    "r1": ("experiments/{dataset}.py", ["--config.r1_gamma=1.0", "--config.model.d_norm=none"]),
    "spectral": ("experiments/{dataset}.py", ["--config.model.d_norm=spectral"]),
    "d_steps2": ("experiments/{dataset}.py", ["--config.d_steps=2"]),
    "tuned": ("experiments/{dataset}_tuned.py", []),
}

# The unconditional-quality study (study.py): each technique alone on top of the tuned config of
# gan_jax 0.1.0 ("base", written out so the variants stay what they were when experiments/*_tuned.py
# changes), and all of them at once.
BASE = ["--config.g_lr=2e-3", "--config.ema_decay=0.999", "--config.ema_start=5000"]
SELF_CONDITION = ["--config.self_condition.clusters=20", "--config.model.g_condition=cbn",
                  "--config.model.d_condition=projection"]
STUDY: dict[str, tuple[str, list[str]]] = {
    "base": ("experiments/{dataset}.py", BASE),
    "augment": ("experiments/{dataset}.py", BASE + ["--config.augment=translation,cutout"]),
    "mbstd": ("experiments/{dataset}.py", BASE + ["--config.model.d_minibatch_std=4"]),
    "lr_decay": ("experiments/{dataset}.py", BASE + ["--config.lr_decay=linear"]),
    "self_condition": ("experiments/{dataset}.py", BASE + SELF_CONDITION),
    # Self-conditioning reclustered early and often (after 250 steps, the intervals doubling up to
    # 2000: a one-epoch probe reclustering every 250 steps scored FID 79 against 94 at 2000), with the
    # rates decayed to 0 over the run.
    "sc_decay": ("experiments/{dataset}.py", BASE + SELF_CONDITION + [
        "--config.self_condition.first_every=250", "--config.lr_decay=linear"]),
    "combined": ("experiments/{dataset}.py", BASE + SELF_CONDITION + [
        "--config.augment=translation,cutout", "--config.model.d_minibatch_std=4",
        "--config.lr_decay=linear"]),
}
VARIANTS.update(STUDY)


def config_args(name: str, dataset: str) -> list[str]:
    """`--config FILE [--config.KEY=VALUE ...]` of a variant for a dataset ("mnist", "fashion_mnist")."""
    path, overrides = VARIANTS[name]
    return ["--config", os.path.join(REPO_ROOT, path.format(dataset=dataset)), *overrides]
