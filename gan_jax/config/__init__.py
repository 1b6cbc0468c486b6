"""The config contract, in one place: every key a run reads, with its default, type, allowed values,
meaning, whether it defines the run and whether a sweep may vary it (`keys.KEYS`), and the checks
that run on a config before anything else (`checks.validate`).

`defaults()` is the tutorial's setup (experiments/mnist.py returns it). The config table of docs/config.md is
`markdown_table()` (a test keeps them equal: `python -m gan_jax.config` prints it). This package imports
no JAX.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

import ml_collections

from gan_jax.config.checks import validate
from gan_jax.config.keys import (AUGMENTATIONS, BY_NAME, CHANNELS, COMPUTE_DTYPES, CONV_TRANSPOSE,
                                 D_CONDITIONS, D_NORMS, DATASET_CLASSES, DATASETS, G_CONDITIONS,
                                 IMAGE_SIZES, INIT_SCHEMES, KEYS, KNOWN_DATASETS, LOSSES, LR_DECAYS,
                                 PARALLEL_MODES, SOURCES, SWEEPABLE, Key, augment_policy, flatten)
from gan_jax.errors import ConfigError

__all__ = ["AUGMENTATIONS", "BY_NAME", "CHANNELS", "COMPUTE_DTYPES", "CONV_TRANSPOSE", "D_CONDITIONS",
           "D_NORMS", "DATASETS", "DATASET_CLASSES", "G_CONDITIONS", "IMAGE_SIZES", "INIT_SCHEMES",
           "KEYS", "KNOWN_DATASETS", "LOSSES", "LR_DECAYS", "PARALLEL_MODES", "SOURCES", "SWEEPABLE",
           "Key", "augment_policy", "defaults", "defines_the_run", "flatten", "image_shape",
           "load_config_file", "markdown_table", "steps_per_epoch", "total_steps", "validate",
           "with_defaults_for_older_runs", "with_image_shape"]


def defaults() -> ml_collections.ConfigDict:
    """Every key at its default: the tutorial's setup, batch 64 for 20 epochs with Adam 2e-4."""
    config = ml_collections.ConfigDict()
    for key in KEYS:
        *parents, leaf = key.name.split(".")
        target = config
        for parent in parents:
            if parent not in target:
                target[parent] = ml_collections.ConfigDict()
            target = target[parent]
        target[leaf] = key.default
    return config


def markdown_table() -> str:
    """The config table of docs/config.md: key, default, meaning."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    for key in KEYS:
        default = ('""' if key.default == "" else str(key.default).lower() if isinstance(key.default, bool)
                   else f"`{key.default}`" if isinstance(key.default, str) else f"{key.default:g}")
        rows.append(f"| `{key.name}` | {default} | {key.meaning} |")
    return "\n".join(rows)


def defines_the_run(name: str, old: Any, new: Any) -> bool:
    """Whether changing key `name` from `old` to `new` makes another run (see `Key.defines_run`)."""
    key = BY_NAME.get(name)
    if key is None:
        return False
    if key.switch == "state":  # its value may change; turning it on or off changes the state
        return (old == 0) != (new == 0)
    return key.defines_run


def with_defaults_for_older_runs(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with every key added since gan_jax 0.1.0 that it lacks set to its `absent_means`."""
    config = ml_collections.ConfigDict(config.to_dict())
    for key in KEYS:
        if key.absent_means is None:
            continue
        *parents, leaf = key.name.split(".")
        target = config
        for parent in parents:
            if parent not in target:
                target[parent] = ml_collections.ConfigDict()
            target = target[parent]
        if leaf not in target:
            target[leaf] = key.absent_means
    return config


def load_config_file(path: str, variant: str = "") -> ml_collections.ConfigDict:
    """`get_config(variant)` of a config file (experiments/*.py), loaded by path as the CLI does.

    Config files are not a package, so one that builds on another (experiments/mnist_tuned.py on
    mnist.py) loads it with this: `load_config_file(os.path.join(os.path.dirname(__file__), ...))`.
    """
    name = "gan_jax_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or not os.path.isfile(path):
        raise ConfigError(f"no config file at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


def image_shape(config: ml_collections.ConfigDict) -> tuple[int, int, int]:
    """(height, width, channels) of the config's images: MNIST's for tfds and idx; for folder and
    npz, what `data.image_size` and `data.channels` say, once set or read from the data
    (`with_image_shape`)."""
    data = config.data
    size = data.image_size or (28 if data.source in ("tfds", "idx") else 0)
    channels = data.channels or (1 if data.source in ("tfds", "idx") else 0)
    if not size or not channels:
        raise ConfigError(f"the image shape of config.data.source={data.source!r} comes from the data: "
                          f"set config.data.image_size and config.data.channels, or read the data first")
    return size, size, channels


def with_image_shape(config: ml_collections.ConfigDict,
                     images_shape: tuple[int, ...]) -> ml_collections.ConfigDict:
    """A copy of `config` whose data.image_size and data.channels are those of the images read
    ((N, H, W, C)), so that a run's record says what its networks take and a resume with other images
    is refused as another run."""
    config = ml_collections.ConfigDict(config.to_dict())
    config.data.image_size, config.data.channels = int(images_shape[1]), int(images_shape[3])
    validate(config)
    return config


def total_steps(config: ml_collections.ConfigDict, num_examples: int) -> int:
    """Steps the run trains for: num_steps if set, else num_epochs full passes (ragged tail dropped)."""
    if config.num_steps > 0:
        return config.num_steps
    return config.num_epochs * steps_per_epoch(config, num_examples)


def steps_per_epoch(config: ml_collections.ConfigDict, num_examples: int) -> int:
    """Steps in one pass over the data. A step takes d_steps batches (one per D update), so an epoch
    has num_examples // (batch_size * d_steps) steps; the ragged tail is dropped."""
    images_per_step = config.batch_size * config.d_steps
    if images_per_step > num_examples:
        per_step = f" x config.d_steps={config.d_steps}" if config.d_steps > 1 else ""
        raise ConfigError(f"config.batch_size={config.batch_size}{per_step} is larger than the "
                          f"{num_examples} training images")
    if config.self_condition.clusters > num_examples:  # k-means needs an image per cluster at least
        raise ConfigError(f"config.self_condition.clusters={config.self_condition.clusters} is more "
                          f"than the {num_examples} training images")
    steps_per_epoch = num_examples // images_per_step
    if config.steps_per_call > steps_per_epoch:  # a call's steps may span two epochs, not three
        raise ConfigError(f"config.steps_per_call={config.steps_per_call} is more than the "
                          f"{steps_per_epoch} steps of an epoch")
    return steps_per_epoch
