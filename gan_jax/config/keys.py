"""The config contract's table: every key a run reads, with its default, type, allowed values, meaning,
whether it defines the run and whether a sweep may vary it (`KEYS`), and the allowed values of each
choice. This module imports no JAX: the modules that implement the choices (losses, networks, data
sources) take them from here.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import ml_collections

from gan_jax.errors import ConfigError

# The allowed values of each choice.
SOURCES = ("tfds", "idx", "folder", "npz")
# The datasets gan_jax knows (tfds builders, canonical IDX contents, shipped evaluators), and "custom"
# for a user's own images.
KNOWN_DATASETS = ("mnist", "fashion_mnist")
DATASETS = (*KNOWN_DATASETS, "custom")
DATASET_CLASSES = {"mnist": 10, "fashion_mnist": 10}  # what a conditional run's num_classes must be
IMAGE_SIZES = (28, 32, 64, 128)  # the networks' image sides (28: the tutorial's; others: DCGAN's)
CHANNELS = (1, 3)
INIT_SCHEMES = ("pytorch", "dcgan")
CONV_TRANSPOSE = ("fast", "xla")
COMPUTE_DTYPES = ("float32", "bfloat16")
D_NORMS = ("batch", "spectral", "none")
G_CONDITIONS = ("concat", "cbn")
D_CONDITIONS = ("projection", "concat", "acgan")
LOSSES = ("ns", "hinge", "ls", "wgan_gp")
LR_DECAYS = ("none", "linear", "cosine")
AUGMENTATIONS = ("color", "translation", "cutout")
PARALLEL_MODES = ("jit", "pmap", "shard_map")


@dataclasses.dataclass(frozen=True)
class Key:
    """One config key.

    Attributes:
      name: dotted for nested fields ("model.g_width").
      default: the tutorial's value; its type is the key's type (a float key also takes an int).
      meaning: what it does, one line (docs/config.md's table shows it).
      allowed: what values pass, in words; `check` tests them.
      check: value -> bool.
      defines_run: resuming with another value would continue as neither the old run nor a new one,
        so `gan_jax.training.workdir.check_same_run` refuses it. Every other key (learning rates,
        weights, cadences, lengths, devices, where the data is read from) may change between starts.
      sweepable: a number the train step reads without its program changing, so one sweep's runs may
        differ in it (`--vary`).
      switch: "" or how 0 acts: "term" (0 leaves a term out of the program, so a sweep's values are
        all 0 or all non-zero), "state" (likewise, and it adds to the state, so a resume may not turn
        it on or off).
      absent_means: for keys added after gan_jax 0.1.0, the value that reproduces what runs did
        before them; a config.json of an older run lacks the key and gets this value.
    """

    name: str
    default: Any
    meaning: str
    allowed: str = ""
    check: Callable[[Any], bool] = lambda value: True
    defines_run: bool = False
    sweepable: bool = False
    switch: str = ""
    absent_means: Any = None  # None: a key of gan_jax 0.1.0, in every run's config.json

    @property
    def kind(self) -> type | tuple[type, ...]:
        return (int, float) if isinstance(self.default, float) else type(self.default)


def _positive(v) -> bool:
    return v > 0


def _non_negative(v) -> bool:
    return v >= 0


def _one_of(choices: tuple[str, ...]) -> dict[str, Any]:
    return dict(allowed=f"one of {', '.join(choices)}", check=lambda v: v in choices)


def augment_policy(text: str) -> tuple[str, ...]:
    """"translation,cutout" -> ("translation", "cutout"): config.augment's names, in AUGMENTATIONS'
    order (the order they are applied in).

    Raises:
      ConfigError: an unknown or repeated name.
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(AUGMENTATIONS))
    if unknown or len(set(names)) != len(names):
        raise ConfigError(f"config.augment={text!r}: expected a comma-separated subset of "
                          f"{', '.join(AUGMENTATIONS)}, each once")
    return tuple(name for name in AUGMENTATIONS if name in names)


def _profile_window(text: str) -> bool:
    parts = text.split(",") if text else ["0", "1"]
    return len(parts) == 2 and all(p.strip().isdigit() for p in parts) and int(parts[1]) >= 1


def _augment_check(text: str) -> bool:
    try:
        augment_policy(text)
    except ConfigError:
        return False
    return True


_POSITIVE = dict(allowed=">= 1", check=_positive)
_COUNT = dict(allowed=">= 0", check=_non_negative)
_RATE = dict(allowed="> 0", check=_positive)
_WEIGHT = dict(allowed=">= 0", check=_non_negative)
_BETA = dict(allowed="in [0, 1)", check=lambda v: 0 <= v < 1)

KEYS: tuple[Key, ...] = (
    Key("seed", 0, "the one seed; split once into G init, D init, training, sample noise", **_COUNT,
        defines_run=True),
    Key("data.source", "tfds", "`tfds` (tensorflow-datasets), `idx` (the four IDX files in `data.dir`), "
        "`folder` (your images, `data.dir/train/...`) or `npz` (`data.dir` is an .npz)",
        **_one_of(SOURCES)),
    Key("data.name", "mnist", "the dataset: `mnist`, `fashion_mnist` (shipped evaluators) or `custom`",
        **_one_of(DATASETS), defines_run=True),
    Key("data.image_size", 0, "the images' side: 28, 32, 64 or 128 (0: as stored); a folder's or an npz's "
        "are resized to it",
        allowed=f"0 or one of {', '.join(map(str, IMAGE_SIZES))}",
        check=lambda v: v == 0 or v in IMAGE_SIZES, defines_run=True, absent_means=28),
    Key("data.channels", 0, "1 (grayscale) or 3 (RGB); 0: as stored", allowed="0, 1 or 3",
        check=lambda v: v in (0, *CHANNELS), defines_run=True, absent_means=1),
    Key("data.check_dataset", True, "`idx`: refuse files that are not the published `data.name` "
        "(false for your own IDX files)", allowed="true or false", absent_means=False),
    Key("data.dir", "", "`idx`: the folder of the IDX files; `folder`: the images' folder; `npz`: the "
        "file; `tfds`: its data folder (`\"\"`: tfds's default)", allowed="a path or ''"),
    Key("model.g_width", 64, "G's channel widths: latent -> 2w -> w -> channels at 28 pixels; DCGAN's "
        "... 4w, 2w, w at 32, 64, 128", **_POSITIVE, defines_run=True),
    Key("model.d_width", 64, "D's channel widths: channels -> w -> 2w -> logit at 28 pixels; w, 2w, 4w "
        "... at 32, 64, 128", **_POSITIVE, defines_run=True),
    Key("model.init_scheme", "pytorch", "`pytorch` (the tutorial's layer defaults) or `dcgan` "
        "(N(0, 0.02))", **_one_of(INIT_SCHEMES), defines_run=True),
    Key("model.conv_transpose", "fast", "how G's transposed convolutions are computed: `fast` or `xla` "
        "(same function and parameters)", **_one_of(CONV_TRANSPOSE)),
    Key("model.compute_dtype", "float32", "`bfloat16` computes layers in bf16; parameters and Adam "
        "states stay float32", **_one_of(COMPUTE_DTYPES), defines_run=True),
    Key("model.d_norm", "batch", "D's normalization: `batch` (the tutorial's), `spectral` or `none`",
        **_one_of(D_NORMS), defines_run=True, absent_means="batch"),
    Key("model.num_classes", 0, "0: unconditional (the tutorial's); 10: class-conditional",
        allowed=">= 0 (0: unconditional)", check=_non_negative, defines_run=True, absent_means=0),
    Key("model.g_condition", "concat", "how a conditional G takes the label: `concat` (an embedding "
        "joined to z) or `cbn` (class-conditional BatchNorm)", **_one_of(G_CONDITIONS),
        defines_run=True, absent_means="concat"),
    Key("model.d_condition", "projection", "how a conditional D takes it: `projection`, `concat` "
        "(one-hot maps) or `acgan` (a classifier head)", **_one_of(D_CONDITIONS), defines_run=True,
        absent_means="projection"),
    Key("model.d_minibatch_std", 0, "D's minibatch standard deviation feature (ProGAN): its group size "
        "(0: off)", allowed=">= 0 (0: off)", check=_non_negative, defines_run=True, absent_means=0),
    Key("latent_dim", 100, "size of z", **_POSITIVE, defines_run=True),
    Key("batch_size", 64, "the global batch", **_POSITIVE, defines_run=True),
    Key("num_epochs", 20, "epochs to train; an epoch is one pass over the data, its ragged tail "
        "dropped", **_COUNT),
    Key("num_steps", 0, "steps to train; > 0 wins over num_epochs", **_COUNT),
    Key("g_lr", 2e-4, "G's Adam learning rate", **_RATE, sweepable=True),
    Key("d_lr", 2e-4, "D's Adam learning rate", **_RATE, sweepable=True),
    Key("b1", 0.5, "Adam's beta1, both networks (the tutorial used 0.9; DCGAN practice 0.5)", **_BETA,
        sweepable=True),
    Key("b2", 0.999, "Adam's beta2, both networks", **_BETA, sweepable=True),
    Key("lr_decay", "none", "how both rates fall over the run: `none`, `linear` or `cosine` (to 0 at "
        "the last step)", **_one_of(LR_DECAYS), absent_means="none"),
    Key("cycle_weight", 0.0, "weight of the tutorial's L1(real, fake) term, added to G's loss",
        **_WEIGHT, sweepable=True, switch="term"),
    Key("loss", "ns", "the objective: `ns`, `hinge`, `ls`, `wgan_gp` (gan_jax/model/losses.py)",
        **_one_of(LOSSES), defines_run=True, absent_means="ns"),
    Key("gp_weight", 10.0, "weight of WGAN-GP's gradient penalty (loss `wgan_gp` only)", **_WEIGHT,
        sweepable=True, absent_means=10.0),
    Key("r1_gamma", 0.0, "R1 penalty on D's gradient at real images, (gamma / 2) E||grad D(x)||^2 "
        "(0: off)", allowed=">= 0 (0: off)", check=_non_negative, sweepable=True, switch="term",
        absent_means=0.0),
    Key("d_steps", 1, "D updates per G update, each on its own batch; a step is one G update",
        **_POSITIVE, defines_run=True, absent_means=1),
    Key("ema_decay", 0.0, "moving average of G's weights, used for samples and evaluation (0: off)",
        allowed="in [0, 1] (0: off)", check=lambda v: 0 <= v <= 1, sweepable=True, switch="state",
        absent_means=0.0),
    Key("ema_start", 0, "until this step the average copies G", **_COUNT, sweepable=True,
        absent_means=0),
    Key("ac_weight", 1.0, "weight of ACGAN's classifier loss (`d_condition` `acgan` only)", **_WEIGHT,
        sweepable=True, absent_means=1.0),
    Key("augment", "", "DiffAugment before D, real and fake alike: a comma-separated subset of "
        "`color`, `translation`, `cutout` (`\"\"`: off)", allowed=f"'' or a comma-separated subset of "
        f"{', '.join(AUGMENTATIONS)}", check=_augment_check, defines_run=True, absent_means=""),
    Key("self_condition.clusters", 0, "self-conditioning: G and D conditioned on k clusters of D's "
        "features of the real images, no labels read (0: off)", allowed=">= 0 (0: off)",
        check=_non_negative, defines_run=True, absent_means=0),
    Key("self_condition.every", 2000, "steps between reclusterings (self-conditioning only)",
        **_POSITIVE, absent_means=2000),
    Key("self_condition.first_every", 0, "the first interval between reclusterings, each next one "
        "twice as long until it is `every` (0: `every` throughout)", **_COUNT, absent_means=0),
    Key("log_every", 200, "cadence of metrics.jsonl records, in steps (the last step always logs)",
        **_POSITIVE),
    Key("sample_every", 200, "cadence of sample grids, in steps", **_POSITIVE),
    Key("checkpoint_every", 1000, "cadence of checkpoints, in steps", **_POSITIVE),
    Key("keep_checkpoints", 3, "how many checkpoints to keep", **_POSITIVE),
    Key("eval_every", 0, "log FID, KID and score of 2,000 samples every N steps (0: off)",
        allowed=">= 0 (0: off)", check=_non_negative),
    Key("steps_per_call", 1, "training steps per compiled call (cadences must be multiples of it)",
        **_POSITIVE),
    Key("parallel", "jit", "how several devices share a run: `jit` (the step for the global batch, "
        "sharded), `pmap` or `shard_map` (the per-device step)", **_one_of(PARALLEL_MODES)),
    Key("num_devices", 0, "devices to use of each process (0: all)", allowed=">= 0 (0: every local "
        "device)", check=_non_negative),
    Key("data_devices", 0, "a sweep's devices per run, its batch split over them (0: devices / "
        "gcd(runs, devices))", allowed=">= 0 (0: chosen)", check=_non_negative, absent_means=0),
    Key("evaluator", "", "the evaluator that scores the run (`eval_every`, `gan_jax.evaluate`): a folder "
        "`python -m gan_jax.evaluator.train` wrote (`\"\"`: the shipped one of `data.name`)",
        allowed="a folder path or ''", absent_means=""),
    Key("deterministic", True, "ask XLA for deterministic GPU kernels", allowed="true or false"),
    Key("profile_steps", "", "`START,COUNT`: a `jax.profiler` trace of those steps in the workdir's "
        "`profile/` (`\"\"`: none)", allowed="'' or START,COUNT (integers, COUNT >= 1)",
        check=_profile_window, absent_means=""),
)
BY_NAME = {key.name: key for key in KEYS}
# What a sweep may vary: each run's values of these go to its step as arrays (`Hyperparams`).
SWEEPABLE = tuple(key.name for key in KEYS if key.sweepable)


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
