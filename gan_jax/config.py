"""The config contract: every key a run reads, its type and its allowed values, checked before compiling.

Config files (experiments/*.py) hold the values; this module only says what is valid, so a typo in a
key or a bad value fails in one line before any data is read or any function is compiled.
"""

from __future__ import annotations

from typing import Any, Callable

import ml_collections

from gan_jax import conv_transpose, parallel
from gan_jax.errors import ConfigError
from gan_jax.input_pipeline import DATASETS, SOURCES

INIT_SCHEMES = ("pytorch", "dcgan")
COMPUTE_DTYPES = ("float32", "bfloat16")


def _positive(value) -> bool:
    return value > 0


def _non_negative(value) -> bool:
    return value >= 0


def _unit_interval(value) -> bool:
    return 0 <= value < 1


def _one_of(*choices) -> Callable[[Any], bool]:
    check = lambda value: value in choices  # noqa: E731
    check.__doc__ = f"one of {choices}"
    return check


# key -> (type, check, what the check means). Dotted keys are nested ConfigDict fields.
SCHEMA: dict[str, tuple[type | tuple[type, ...], Callable[[Any], bool], str]] = {
    "seed": (int, _non_negative, ">= 0"),
    "data.source": (str, _one_of(*SOURCES), f"one of {SOURCES}"),
    "data.name": (str, _one_of(*DATASETS), f"one of {DATASETS}"),
    "data.dir": (str, lambda v: True, "a folder path or ''"),
    "model.g_width": (int, _positive, ">= 1"),
    "model.d_width": (int, _positive, ">= 1"),
    "model.init_scheme": (str, _one_of(*INIT_SCHEMES), f"one of {INIT_SCHEMES}"),
    "model.conv_transpose": (str, _one_of(*conv_transpose.IMPLEMENTATIONS),
                             f"one of {conv_transpose.IMPLEMENTATIONS}"),
    "model.compute_dtype": (str, _one_of(*COMPUTE_DTYPES), f"one of {COMPUTE_DTYPES}"),
    "latent_dim": (int, _positive, ">= 1"),
    "batch_size": (int, _positive, ">= 1"),
    "num_epochs": (int, _non_negative, ">= 0"),
    "num_steps": (int, _non_negative, ">= 0"),
    "g_lr": ((int, float), _positive, "> 0"),
    "d_lr": ((int, float), _positive, "> 0"),
    "b1": ((int, float), _unit_interval, "in [0, 1)"),
    "b2": ((int, float), _unit_interval, "in [0, 1)"),
    "cycle_weight": ((int, float), _non_negative, ">= 0"),
    "log_every": (int, _positive, ">= 1"),
    "sample_every": (int, _positive, ">= 1"),
    "checkpoint_every": (int, _positive, ">= 1"),
    "keep_checkpoints": (int, _positive, ">= 1"),
    "eval_every": (int, _non_negative, ">= 0 (0: off)"),
    "steps_per_call": (int, _positive, ">= 1"),
    "deterministic": (bool, lambda v: True, "true or false"),
    "parallel": (str, _one_of(*parallel.MODES), f"one of {parallel.MODES}"),
    "num_devices": (int, _non_negative, ">= 0 (0: every local device)"),
}


def flatten(config: ml_collections.ConfigDict, prefix: str = "") -> dict[str, Any]:
    """{"data.name": "mnist", ...}: the config's leaves under dotted keys, in a stable order."""
    flat = {}
    for key in sorted(config.keys()):
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            flat.update(flatten(value, prefix + key + "."))
        else:
            flat[prefix + key] = value
    return flat


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first unknown, missing or invalid key.

    Args:
      config: a run config, e.g. from experiments/mnist.py, with command-line overrides applied.
    """
    flat = flatten(config)
    unknown = sorted(set(flat) - set(SCHEMA))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
    missing = sorted(set(SCHEMA) - set(flat))
    if missing:
        raise ConfigError(f"missing config key(s): {', '.join(missing)}")
    for key, (kind, check, meaning) in SCHEMA.items():
        value = flat[key]
        # bool is an int in Python: do not let `batch_size=True` through.
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ConfigError(f"config.{key}={value!r} has the wrong type; expected {meaning}")
        if not check(value):
            raise ConfigError(f"config.{key}={value!r} is invalid; expected {meaning}")
    if config.num_steps == 0 and config.num_epochs == 0:
        raise ConfigError("config.num_epochs and config.num_steps are both 0: nothing to train")
    for cadence in ("log_every", "sample_every", "checkpoint_every", "eval_every"):
        if config[cadence] % config.steps_per_call:
            raise ConfigError(f"config.{cadence}={config[cadence]} is not a multiple of "
                              f"config.steps_per_call={config.steps_per_call}")
    if config.data.source == "idx" and not config.data.dir:
        raise ConfigError("config.data.source='idx' needs config.data.dir, the folder of IDX files")


def total_steps(config: ml_collections.ConfigDict, num_examples: int) -> int:
    """Steps the run trains for: num_steps if set, else num_epochs full passes (ragged tail dropped)."""
    if config.num_steps > 0:
        return config.num_steps
    return config.num_epochs * steps_per_epoch(config, num_examples)


def steps_per_epoch(config: ml_collections.ConfigDict, num_examples: int) -> int:
    if config.batch_size > num_examples:
        raise ConfigError(f"config.batch_size={config.batch_size} is larger than the "
                          f"{num_examples} training images")
    steps_per_epoch = num_examples // config.batch_size
    if config.steps_per_call > steps_per_epoch:  # a call's steps may span two epochs, not three
        raise ConfigError(f"config.steps_per_call={config.steps_per_call} is more than the "
                          f"{steps_per_epoch} steps of an epoch")
    return steps_per_epoch
