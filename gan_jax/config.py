"""The config contract: every key a run reads, its type and its allowed values, checked before compiling.

Config files (experiments/*.py) hold the values; this module only says what is valid, so a typo in a
key or a bad value fails in one line before any data is read or any function is compiled.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import ml_collections

from gan_jax import augment, conv_transpose, parallel
from gan_jax.errors import ConfigError
from gan_jax.input_pipeline import DATASETS, SOURCES
from gan_jax.losses import LOSSES
from gan_jax.models import D_CONDITIONS, D_NORMS, G_CONDITIONS
from gan_jax.state import LR_DECAYS

INIT_SCHEMES = ("pytorch", "dcgan")
COMPUTE_DTYPES = ("float32", "bfloat16")


def _positive(value) -> bool:
    return value > 0


def _non_negative(value) -> bool:
    return value >= 0


def _unit_interval(value) -> bool:
    return 0 <= value < 1


def _closed_unit_interval(value) -> bool:
    return 0 <= value <= 1


def _augment_policy(value) -> bool:
    try:
        augment.parse_policy(value)
    except ValueError:
        return False
    return True


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
    "model.d_norm": (str, _one_of(*D_NORMS), f"one of {D_NORMS}"),
    "model.num_classes": (int, _non_negative, ">= 0 (0: unconditional)"),
    "model.g_condition": (str, _one_of(*G_CONDITIONS), f"one of {G_CONDITIONS}"),
    "model.d_condition": (str, _one_of(*D_CONDITIONS), f"one of {D_CONDITIONS}"),
    "model.d_minibatch_std": (int, _non_negative, ">= 0 (0: off; else the group size)"),
    "latent_dim": (int, _positive, ">= 1"),
    "batch_size": (int, _positive, ">= 1"),
    "num_epochs": (int, _non_negative, ">= 0"),
    "num_steps": (int, _non_negative, ">= 0"),
    "g_lr": ((int, float), _positive, "> 0"),
    "d_lr": ((int, float), _positive, "> 0"),
    "b1": ((int, float), _unit_interval, "in [0, 1)"),
    "b2": ((int, float), _unit_interval, "in [0, 1)"),
    "cycle_weight": ((int, float), _non_negative, ">= 0"),
    "loss": (str, _one_of(*LOSSES), f"one of {LOSSES}"),
    "gp_weight": ((int, float), _non_negative, ">= 0"),
    "r1_gamma": ((int, float), _non_negative, ">= 0 (0: off)"),
    "d_steps": (int, _positive, ">= 1"),
    "ema_decay": ((int, float), _closed_unit_interval, "in [0, 1] (0: off)"),
    "ema_start": (int, _non_negative, ">= 0"),
    "ac_weight": ((int, float), _non_negative, ">= 0"),
    "augment": (str, _augment_policy, f"'' or a comma-separated subset of {augment.POLICIES}"),
    "lr_decay": (str, _one_of(*LR_DECAYS), f"one of {LR_DECAYS}"),
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


# Keys added after gan_jax 0.1.0, with the values that reproduce what runs did before them. A config.json
# written by an older version lacks them; `with_defaults_for_older_runs` fills them in.
ADDED_KEYS = {
    "loss": "ns",
    "gp_weight": 10.0,
    "r1_gamma": 0.0,
    "d_steps": 1,
    "ema_decay": 0.0,
    "ema_start": 0,
    "model.d_norm": "batch",
    "model.num_classes": 0,
    "model.g_condition": "concat",
    "model.d_condition": "projection",
    "ac_weight": 1.0,
    "model.d_minibatch_std": 0,
    "augment": "",
    "lr_decay": "none",
}
# The number of classes of each dataset's labels: what a conditional run's model.num_classes must be.
DATASET_CLASSES = {"mnist": 10, "fashion_mnist": 10}


# What a run is. Resuming with another value of one of these would continue as neither the old run nor a
# new one, so `gan_jax.workdir.check_resume` refuses it; every other key (learning rates, loss weights,
# cadences, lengths, devices, where the data is read from) may change between starts.
RUN_DEFINING = ("seed", "batch_size", "latent_dim", "data.name", "model.g_width", "model.d_width",
                "model.init_scheme", "model.d_norm", "model.compute_dtype", "loss", "d_steps",
                "model.num_classes", "model.g_condition", "model.d_condition",
                "model.d_minibatch_std", "augment")


def defines_the_run(key: str, old: Any, new: Any) -> bool:
    """Whether changing `key` from `old` to `new` makes another run (see RUN_DEFINING)."""
    if key == "ema_decay":  # its value may change; turning the average on or off changes the state
        return (old == 0) != (new == 0)
    return key in RUN_DEFINING


def with_defaults_for_older_runs(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """`config` with every key of ADDED_KEYS it lacks set to the value older versions implied."""
    config = ml_collections.ConfigDict(config.to_dict())
    for key, value in ADDED_KEYS.items():
        *parents, leaf = key.split(".")
        target = config
        for parent in parents:
            target = target[parent]
        if leaf not in target:
            target[leaf] = value
    return config


def load_config_file(path: str, variant: str = "") -> ml_collections.ConfigDict:
    """`get_config(variant)` of a config file (experiments/*.py), loaded by path as the CLI does.

    Config files are not a package, so one that builds on another (experiments/mnist_tuned.py on
    mnist.py) loads it with this: `load_config_file(os.path.join(os.path.dirname(__file__), ...))`.
    """
    import importlib.util
    name = "gan_jax_config_" + os.path.splitext(os.path.basename(path))[0]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or not os.path.isfile(path):
        raise ConfigError(f"no config file at {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(variant)


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
    _check_combinations(config)


def _check_combinations(config: ml_collections.ConfigDict) -> None:
    """Refuses settings that are each valid but make no sense together."""
    # The penalties take the gradient of each image's logit with respect to that image; BatchNorm
    # makes every logit depend on the whole batch, so there is no per-image gradient to penalize.
    if config.model.d_norm == "batch":
        if config.loss == "wgan_gp":
            raise ConfigError("config.loss='wgan_gp' needs a D without BatchNorm (its gradient penalty "
                              "is per image): set config.model.d_norm to 'none' or 'spectral'")
        if config.r1_gamma:
            raise ConfigError("config.r1_gamma > 0 needs a D without BatchNorm (the R1 penalty is per "
                              "image): set config.model.d_norm to 'none' or 'spectral'")
    group = config.model.d_minibatch_std
    if group:
        if config.loss == "wgan_gp" or config.r1_gamma:
            raise ConfigError("the gradient penalties (wgan_gp, r1_gamma) are per image, and "
                              "config.model.d_minibatch_std makes each logit depend on its group: "
                              "set one of them off")
        if config.batch_size % group:
            raise ConfigError(f"config.model.d_minibatch_std={group} does not divide "
                              f"config.batch_size={config.batch_size} into whole groups")
    if config.ema_start and not config.ema_decay:
        raise ConfigError(f"config.ema_start={config.ema_start} has no effect without an EMA: set "
                          f"config.ema_decay > 0, or ema_start to 0")
    if config.gp_weight != ADDED_KEYS["gp_weight"] and config.loss != "wgan_gp":
        raise ConfigError(f"config.gp_weight={config.gp_weight} has no effect with "
                          f"config.loss={config.loss!r}; it weights the wgan_gp penalty")
    _check_conditioning(config)


def _check_conditioning(config: ml_collections.ConfigDict) -> None:
    """A conditional run's class count is its dataset's; conditioning options need a conditional run."""
    model = config.model
    if model.num_classes:
        classes = DATASET_CLASSES[config.data.name]
        if model.num_classes != classes:
            raise ConfigError(f"config.model.num_classes={model.num_classes} does not match "
                              f"{config.data.name}, which has {classes} classes (0: unconditional)")
    else:
        for key in ("model.g_condition", "model.d_condition"):
            if model[key.split(".")[1]] != ADDED_KEYS[key]:
                raise ConfigError(f"config.{key} has no effect on an unconditional run: set "
                                  f"config.model.num_classes={DATASET_CLASSES[config.data.name]}")
    if config.ac_weight != ADDED_KEYS["ac_weight"] and not (model.num_classes and
                                                          model.d_condition == "acgan"):
        raise ConfigError(f"config.ac_weight={config.ac_weight} has no effect without "
                          f"config.model.d_condition='acgan' on a conditional run")


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
    steps_per_epoch = num_examples // images_per_step
    if config.steps_per_call > steps_per_epoch:  # a call's steps may span two epochs, not three
        raise ConfigError(f"config.steps_per_call={config.steps_per_call} is more than the "
                          f"{steps_per_epoch} steps of an epoch")
    return steps_per_epoch
