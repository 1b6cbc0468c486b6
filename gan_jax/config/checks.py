"""`validate`: a config against the table (`gan_jax.config.keys`), key by key, then the rules across
keys: settings that are each valid but make no sense together. It runs before any data is read or
any function is compiled, so a typo in a key or a bad value fails in one line.
"""

from __future__ import annotations

import ml_collections

from gan_jax.config.keys import BY_NAME, DATASET_CLASSES, KEYS, flatten
from gan_jax.errors import ConfigError


def validate(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError naming the first unknown, missing or invalid key.

    Args:
      config: a run config, e.g. from experiments/mnist.py, with command-line overrides applied.
    """
    flat = flatten(config)
    unknown = sorted(set(flat) - set(BY_NAME))
    if unknown:
        raise ConfigError(f"unknown config key(s): {', '.join(unknown)}")
    missing = sorted(set(BY_NAME) - set(flat))
    if missing:
        raise ConfigError(f"missing config key(s): {', '.join(missing)}")
    for key in KEYS:
        value = flat[key.name]
        # bool is an int in Python: do not let `batch_size=True` through.
        if not isinstance(value, key.kind) or (isinstance(value, bool) and key.kind is not bool):
            raise ConfigError(f"config.{key.name}={value!r} has the wrong type; expected "
                              f"{key.allowed or type(key.default).__name__}")
        if not key.check(value):
            raise ConfigError(f"config.{key.name}={value!r} is invalid; expected {key.allowed}")
    if config.num_steps == 0 and config.num_epochs == 0:
        raise ConfigError("config.num_epochs and config.num_steps are both 0: nothing to train")
    for cadence in ("log_every", "sample_every", "checkpoint_every", "eval_every",
                    "self_condition.every", "self_condition.first_every"):
        *parents, leaf = cadence.split(".")
        value = (config[parents[0]] if parents else config)[leaf]
        if value % config.steps_per_call:
            raise ConfigError(f"config.{cadence}={value} is not a multiple of "
                              f"config.steps_per_call={config.steps_per_call}")
    data = config.data
    if data.source in ("idx", "folder", "npz") and not data.dir:
        raise ConfigError(f"config.data.source={data.source!r} needs config.data.dir, its "
                          f"{'file' if data.source == 'npz' else 'folder'}")
    if data.source == "tfds" and data.name == "custom":
        raise ConfigError("config.data.source='tfds' reads MNIST or Fashion-MNIST only: for your own "
                          "images use the folder or npz source")
    if data.source in ("tfds", "idx") and not (data.image_size in (0, 28) and data.channels in (0, 1)):
        raise ConfigError(f"config.data.source={data.source!r} gives 28x28 grayscale images: "
                          f"config.data.image_size and config.data.channels go with the folder and "
                          f"npz sources")
    _check_penalties(config)
    _check_conditioning(config)


def _check_penalties(config: ml_collections.ConfigDict) -> None:
    """Refuses settings that are each valid but make no sense together."""
    # The penalties take the gradient of each image's logit with respect to that image; BatchNorm and
    # the minibatch standard deviation make every logit depend on other images of the batch, so
    # there is no per-image gradient to penalize.
    penalty = "config.loss='wgan_gp'" if config.loss == "wgan_gp" else (
        "config.r1_gamma > 0" if config.r1_gamma else None)
    if penalty and config.model.d_norm == "batch":
        raise ConfigError(f"{penalty} needs a D without BatchNorm (its penalty is per image): set "
                          f"config.model.d_norm to 'none' or 'spectral'")
    group = config.model.d_minibatch_std
    if penalty and group:
        raise ConfigError(f"{penalty} needs a D whose logits are per image (its penalty is), and "
                          f"config.model.d_minibatch_std={group} mixes each group's: set it to 0")
    if group and config.batch_size % group:
        raise ConfigError(f"config.model.d_minibatch_std={group} does not divide "
                          f"config.batch_size={config.batch_size} into whole groups")
    if config.ema_start and not config.ema_decay:
        raise ConfigError(f"config.ema_start={config.ema_start} has no effect without an EMA: set "
                          f"config.ema_decay > 0, or ema_start to 0")
    if config.gp_weight != BY_NAME["gp_weight"].default and config.loss != "wgan_gp":
        raise ConfigError(f"config.gp_weight={config.gp_weight} has no effect with "
                          f"config.loss={config.loss!r}; it weights the wgan_gp penalty")


def _check_conditioning(config: ml_collections.ConfigDict) -> None:
    """A conditional run's class count is its dataset's; conditioning options need a conditional or
    self-conditioned run; self-conditioning needs a D whose features do not take the label."""
    model, clusters = config.model, config.self_condition.clusters
    schedule = config.self_condition
    if schedule.first_every > schedule.every:
        raise ConfigError(f"config.self_condition.first_every={schedule.first_every} is more than "
                          f"config.self_condition.every={schedule.every}: the intervals grow up to it")
    if clusters:
        if model.num_classes:
            raise ConfigError(f"config.self_condition.clusters={clusters} conditions on clusters "
                              f"instead of labels: set config.model.num_classes=0")
        if model.d_condition == "concat":
            raise ConfigError("config.self_condition.clusters needs D's features without the label "
                              "(they make the clusters): set config.model.d_condition to 'projection' "
                              "or 'acgan'")
    elif model.num_classes:
        # A custom dataset's classes are its class folders or labels: checked when it is read.
        classes = DATASET_CLASSES.get(config.data.name, model.num_classes)
        if model.num_classes != classes:
            raise ConfigError(f"config.model.num_classes={model.num_classes} does not match "
                              f"{config.data.name}, which has {classes} classes (0: unconditional)")
    else:
        for name in ("model.g_condition", "model.d_condition"):
            if model[name.split(".")[1]] != BY_NAME[name].default:
                classes = DATASET_CLASSES.get(config.data.name, "K")
                raise ConfigError(f"config.{name} has no effect on an unconditional run: set "
                                  f"config.model.num_classes={classes} or config.self_condition.clusters")
    if config.ac_weight != BY_NAME["ac_weight"].default and not (
            (model.num_classes or clusters) and model.d_condition == "acgan"):
        raise ConfigError(f"config.ac_weight={config.ac_weight} has no effect without "
                          f"config.model.d_condition='acgan' on a conditional run")
