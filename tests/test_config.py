"""The config contract: the shipped configs are valid, and bad values fail in one clear line."""

import os
import subprocess
import sys

import ml_collections
import pytest

from helpers import REPO, load_experiment, set_key
from gan_jax import config as config_lib
from gan_jax.errors import ConfigError


def test_shipped_configs_are_valid_and_the_tutorials_setup():
    config = load_experiment("mnist")
    config_lib.validate(config)
    assert (config.batch_size, config.num_epochs, config.latent_dim) == (64, 20, 100)
    assert (config.g_lr, config.d_lr, config.b1, config.b2) == (2e-4, 2e-4, 0.5, 0.999)
    assert config.data.source == "tfds" and config.cycle_weight == 0
    fashion = load_experiment("fashion_mnist")
    config_lib.validate(fashion)
    changed = {k for k, v in config_lib.flatten(fashion).items() if config_lib.flatten(config)[k] != v}
    assert changed == {"data.name"}
    config_lib.validate(load_experiment("mnist", "tiny"))


def test_the_tuned_and_conditional_configs_change_only_what_they_say():
    base = config_lib.flatten(load_experiment("mnist"))

    def changed(name):
        config = load_experiment(name)
        config_lib.validate(config)
        return {k: v for k, v in config_lib.flatten(config).items() if base[k] != v}
    assert changed("mnist_tuned") == {"g_lr": 2e-3, "ema_decay": 0.999, "ema_start": 5000,
                                      "self_condition.clusters": 20,
                                      "model.g_condition": "cbn"}  # d_condition's default: projection
    # Fashion-MNIST keeps the 0.1.0 tuning measured there (self-conditioning was measured on MNIST).
    assert changed("fashion_mnist_tuned") == {"g_lr": 2e-3, "ema_decay": 0.999, "ema_start": 5000,
                                              "data.name": "fashion_mnist"}
    # The conditional configs: the tuned rates and average, the labels in the clusters' place.
    assert changed("mnist_conditional") == {"g_lr": 2e-3, "ema_decay": 0.999, "ema_start": 5000,
                                            "model.num_classes": 10, "model.g_condition": "cbn"}
    conditional = changed("mnist_conditional")
    assert changed("fashion_mnist_conditional") == {**conditional, "data.name": "fashion_mnist"}
    for name in ("mnist_tuned", "fashion_mnist_tuned", "mnist_conditional", "fashion_mnist_conditional"):
        config_lib.validate(load_experiment(name, "tiny"))


def test_the_folder_config_is_the_tuned_one_on_ones_own_images():
    tuned = config_lib.flatten(load_experiment("mnist_tuned"))
    for variant, source in (("", "folder"), ("npz", "npz"), ("npz,tiny", "npz")):
        config = load_experiment("folder", variant)
        changed = {k: v for k, v in config_lib.flatten(config).items() if tuned[k] != v}
        assert {k: changed.pop(k) for k in ("data.source", "data.name")} == {
            "data.source": source, "data.name": "custom"}
        assert set(changed) <= ({"num_steps", "log_every", "sample_every", "checkpoint_every"}
                                if "tiny" in variant else set())
        # Where the images are is the user's to say: without it, one line names the key.
        with pytest.raises(ConfigError, match=f"config.data.source='{source}' needs config.data.dir"):
            config_lib.validate(config)
    with pytest.raises(ValueError, match="unknown variant"):
        load_experiment("folder", "png")


def test_a_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no config file at"):
        config_lib.load_config_file(str(tmp_path / "nope.py"))


def test_every_contract_key_is_in_the_shipped_config():
    contract = {"seed", "batch_size", "num_epochs", "num_steps", "latent_dim", "data.source",
                "data.name", "data.dir", "log_every", "sample_every", "checkpoint_every",
                "keep_checkpoints"}
    assert contract <= set(config_lib.flatten(load_experiment("mnist")))


@pytest.mark.parametrize("key, value, message", [
    ("batch_size", 0, "batch_size=0 is invalid"),
    ("batch_size", 2.5, "wrong type"),
    ("batch_size", True, "wrong type"),
    ("data.source", "ftp", "data.source='ftp' is invalid"),
    ("data.name", "cifar10", "data.name='cifar10' is invalid"),
    ("b1", 1.0, "b1=1.0 is invalid"),
    ("g_lr", -1e-4, "g_lr=-0.0001 is invalid"),
    ("model.init_scheme", "xavier", "init_scheme='xavier' is invalid"),
    ("keep_checkpoints", 0, "keep_checkpoints=0 is invalid"),
])
def test_bad_values(key, value, message):
    config = load_experiment("mnist")
    set_key(config, key, value)
    with pytest.raises(ConfigError, match=message):
        config_lib.validate(config)


def test_unknown_and_missing_keys():
    config = load_experiment("mnist")
    config.batchsize = 32
    with pytest.raises(ConfigError, match="unknown config key.*batchsize"):
        config_lib.validate(config)
    config = load_experiment("mnist")
    del config["log_every"]
    with pytest.raises(ConfigError, match="missing config key.*log_every"):
        config_lib.validate(config)


def test_inconsistent_values():
    config = load_experiment("mnist")
    config.data.source = "idx"
    with pytest.raises(ConfigError, match="needs config.data.dir"):
        config_lib.validate(config)
    config = load_experiment("mnist")
    config.num_epochs = 0
    with pytest.raises(ConfigError, match="nothing to train"):
        config_lib.validate(config)
    with pytest.raises(ConfigError, match="larger than the 32 training images"):
        config_lib.steps_per_epoch(load_experiment("mnist"), 32)
    config = load_experiment("mnist")
    config.steps_per_call = 10
    with pytest.raises(ConfigError, match="steps_per_call=10 is more than the 5 steps of an epoch"):
        config_lib.steps_per_epoch(config, 320)


def test_total_steps():
    config = load_experiment("mnist")
    assert config_lib.total_steps(config, 60000) == 20 * 937
    config.num_steps = 5
    assert config_lib.total_steps(config, 60000) == 5


def test_cadences_must_be_multiples_of_steps_per_call():
    config = load_experiment("mnist")
    config.steps_per_call = 50
    config.log_every = 210
    with pytest.raises(ConfigError, match="log_every=210 is not a multiple of config.steps_per_call=50"):
        config_lib.validate(config)
    config.log_every = 200
    config_lib.validate(config)


@pytest.mark.parametrize("overrides, message", [
    ({"loss": "wgan_gp"}, "loss='wgan_gp' needs a D without BatchNorm"),
    ({"r1_gamma": 1.0}, "r1_gamma > 0 needs a D without BatchNorm"),
    ({"ema_start": 100}, "ema_start=100 has no effect without an EMA"),
    ({"gp_weight": 5.0}, "gp_weight=5.0 has no effect with config.loss='ns'"),
    ({"ema_decay": 1.5}, "ema_decay=1.5 is invalid"),
    ({"d_steps": 0}, "d_steps=0 is invalid"),
    ({"loss": "wasserstein"}, "loss='wasserstein' is invalid"),
    ({"model.d_norm": "layer"}, "d_norm='layer' is invalid"),
    ({"model.num_classes": 7}, "num_classes=7 does not match mnist, which has 10 classes"),
    ({"model.d_condition": "acgan"}, "d_condition has no effect on an unconditional run"),
    ({"model.g_condition": "cbn"}, "g_condition has no effect on an unconditional run"),
    ({"ac_weight": 0.5}, "ac_weight=0.5 has no effect without config.model.d_condition='acgan'"),
    ({"augment": "translation,rotation"}, "augment='translation,rotation' is invalid"),
    ({"augment": "cutout,cutout"}, "augment='cutout,cutout' is invalid"),
    ({"lr_decay": "step"}, "lr_decay='step' is invalid"),
    ({"model.d_minibatch_std": 5}, "d_minibatch_std=5 does not divide config.batch_size=64"),
    ({"model.d_minibatch_std": 4, "model.d_norm": "none", "r1_gamma": 1.0},
     "r1_gamma > 0 needs a D whose logits are per image"),
])
def test_combinations_that_make_no_sense_are_refused(overrides, message):
    config = load_experiment("mnist")
    for key, value in overrides.items():
        set_key(config, key, value)
    with pytest.raises(ConfigError, match=message):
        config_lib.validate(config)


def test_the_same_tools_in_sensible_combinations_are_accepted():
    config = load_experiment("mnist")
    config.loss, config.r1_gamma, config.gp_weight, config.model.d_norm = "wgan_gp", 0.5, 5.0, "spectral"
    config.ema_decay, config.ema_start, config.d_steps = 1.0, 100, 5
    config_lib.validate(config)


def test_an_epoch_is_a_pass_over_the_data_whatever_d_steps():
    config = load_experiment("mnist")
    config.d_steps = 2
    assert config_lib.steps_per_epoch(config, 60000) == 468  # 60000 // (64 * 2)
    assert config_lib.total_steps(config, 60000) == 20 * 468
    with pytest.raises(ConfigError, match=r"batch_size=64 x config.d_steps=2 is larger than the 100"):
        config_lib.steps_per_epoch(config, 100)


def test_more_clusters_than_images_is_refused_before_training():
    config = load_experiment("mnist_tuned")
    config.batch_size = 8
    assert config_lib.steps_per_epoch(config, 20) == 2  # one image per cluster is enough
    with pytest.raises(ConfigError, match=r"self_condition.clusters=20 is more than the 19 training"):
        config_lib.steps_per_epoch(config, 19)


def test_older_runs_configs_get_the_defaults_that_reproduce_them():
    """A config.json written before a key existed is read with the value that meant the old behaviour."""
    config = load_experiment("mnist")
    old = config.to_dict()
    for key in (key.name for key in config_lib.KEYS if key.absent_means is not None):
        *parents, leaf = key.split(".")
        target = old
        for parent in parents:
            target = target[parent]
        del target[leaf]
    with pytest.raises(ConfigError, match="missing config key"):
        config_lib.validate(ml_collections.ConfigDict(old))
    upgraded = config_lib.with_defaults_for_older_runs(ml_collections.ConfigDict(old))
    config_lib.validate(upgraded)
    # The shipped defaults, too, except where older runs did otherwise: they checked no dataset, and
    # their images were MNIST's 28x28x1, which a run's record now names (the default: as read).
    differing = {key for key, value in config_lib.flatten(upgraded).items()
                 if value != config_lib.flatten(config)[key]}
    assert differing == {"data.check_dataset", "data.image_size", "data.channels"}
    assert not upgraded.data.check_dataset
    assert (upgraded.data.image_size, upgraded.data.channels) == (28, 1)
    # Keys the config has are kept, not reset.
    config.loss = "hinge"
    assert config_lib.with_defaults_for_older_runs(config).loss == "hinge"


def test_the_documented_config_table_is_the_contracts():
    """docs/config.md's table is `markdown_table()`, between its markers (`python -m gan_jax.config`)."""
    with open(os.path.join(REPO, "docs", "config.md")) as f:
        readme = f.read()
    start = readme.index("<!-- config-table -->") + len("<!-- config-table -->")
    end = readme.index("<!-- /config-table -->")
    assert readme[start:end].strip() == config_lib.markdown_table()


def test_each_key_is_declared_once_with_a_consistent_role():
    names = [key.name for key in config_lib.KEYS]
    assert len(names) == len(set(names))
    for key in config_lib.KEYS:
        assert key.meaning and key.check(key.default), key.name
        assert not (key.defines_run and key.sweepable), key.name  # a sweep varies within one run kind
        assert key.switch in ("", "term", "state") and (not key.switch or key.sweepable), key.name
    assert set(config_lib.SWEEPABLE) == {"g_lr", "d_lr", "b1", "b2", "cycle_weight", "gp_weight",
                                         "r1_gamma", "ema_decay", "ema_start", "ac_weight"}
    assert config_lib.defines_the_run("ema_decay", 0.0, 0.999)  # turning the average on
    assert not config_lib.defines_the_run("ema_decay", 0.99, 0.999)
    assert config_lib.defines_the_run("batch_size", 64, 32) and not config_lib.defines_the_run("g_lr", 1, 2)


@pytest.mark.slow
def test_the_config_module_imports_no_jax():
    code = "import sys, gan_jax.config; print(sorted(m for m in sys.modules if m.split('.')[0] in " \
           "('jax', 'jaxlib', 'flax', 'optax', 'orbax')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=REPO)
    assert result.stdout.strip() == "[]"


def test_an_unknown_override_is_named_with_its_prefix_and_a_suggestion():
    from gan_jax import cli
    assert cli.unknown_override(["--config", "x.py", "--config.model.g_widht=3"]) == (
        "unknown config key 'model.g_widht'. Did you mean 'model.g_width'?")
    assert cli.unknown_override(["--config.zzz=1"]) == "unknown config key 'zzz'."
    assert cli.unknown_override(["--config.model.g_width=3", "--config.data.dir=x"]) is None
