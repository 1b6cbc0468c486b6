"""Class-conditional generation: the models' conditioning, labels from the data to the step, the class
G is asked for, and conditional sampling and evaluation."""

from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import (MNIST_DIR_VAR, assert_same_training, load_experiment, parallel_step, put_data,
                     tiny_config, trees_equal, write_idx_dataset)
from gan_jax import sample, sweep, train
from gan_jax.data import batches, idx, sources
from gan_jax.errors import UserError
from gan_jax.evaluation import scoring
from gan_jax.model import inference, losses
from gan_jax.model.networks import split_output
from gan_jax.reporting.metrics_log import read_metrics
from gan_jax.training import devices, steps
from gan_jax.training.runs import read_sweep
from gan_jax.training.spec import GANSpec
from gan_jax.training.state import count_params, create_train_state

# (g_condition, d_condition) -> (G's, D's parameter count) with the default widths, 10 classes.
PARAMETER_COUNTS = {
    ("concat", "concat"): (759_873 + 10 * 10 + 10 * 7 * 7 * 128, 138_817 + 10 * 4 * 4 * 64),
    ("cbn", "projection"): (759_873 - 2 * (128 + 64) + 2 * 10 * (128 + 64), 138_817 + 10 * 6272),
    ("concat", "acgan"): (759_873 + 10 * 10 + 10 * 7 * 7 * 128, 138_817 + 6272 * 10 + 10),
}


def conditional(config, g="cbn", d="acgan"):
    config.model.num_classes, config.model.g_condition, config.model.d_condition = 10, g, d
    return config


@pytest.fixture(scope="module")
def labelled_dir(tmp_path_factory):
    """Tiny data whose labels cycle through the classes, each class brighter in its own rows."""
    return write_idx_dataset(str(tmp_path_factory.mktemp("labelled")), num_train=80, num_test=40,
                             class_images=True)


@pytest.mark.slow
@pytest.mark.parametrize("conditions", PARAMETER_COUNTS)
def test_each_conditioning_method_has_its_parameters_and_shapes(conditions):
    gan = GANSpec.from_config(conditional(load_experiment("mnist"), *conditions))
    shapes = jax.eval_shape(functools.partial(create_train_state, gan, 0))  # the real widths, no work
    assert (count_params(shapes.generator.params), count_params(shapes.discriminator.params)) == (
        PARAMETER_COUNTS[conditions])
    gan = GANSpec.from_config(conditional(tiny_config(""), *conditions))  # the shapes: narrow is enough
    state = create_train_state(gan, seed=0)
    labels = jnp.array([3, 7])
    images = gan.generator.apply(state.generator.variables(), jnp.zeros((2, gan.latent_dim)),
                                 train=False, labels=labels)
    assert images.shape == (2, 28, 28, 1)
    output = gan.discriminator.apply(state.discriminator.variables(), images, train=False, labels=labels)
    logits, classes = split_output(output)
    assert logits.shape == (2,)
    assert (classes is None) == (conditions[1] != "acgan")
    if classes is not None:
        assert classes.shape == (2, 10)


@pytest.mark.slow
@pytest.mark.parametrize("conditions", PARAMETER_COUNTS)
def test_the_label_changes_what_each_network_computes(conditions):
    gan = GANSpec.from_config(conditional(load_experiment("mnist"), *conditions))
    state = create_train_state(gan, seed=0)
    # Class-conditional BatchNorm starts as plain BatchNorm (scale 1, shift 0 for every class):
    # move every label embedding a little, as training does.
    moved = jax.tree_util.tree_map_with_path(
        lambda path, p: p + 0.1 * jax.random.normal(jax.random.key(1), p.shape)
        if "embedding" in jax.tree_util.keystr(path) else p, state.generator.params)
    z = jnp.tile(jax.random.normal(jax.random.key(0), (1, 100)), (2, 1))
    a, b = gan.generator.apply({**state.generator.variables(), "params": moved}, z, train=False,
                               labels=jnp.array([0, 1]))
    assert not np.allclose(a, b)
    image = jnp.tile(a[None], (2, 1, 1, 1))
    output = gan.discriminator.apply(state.discriminator.variables(), image, train=False,
                                     labels=jnp.array([0, 1]))
    logits, classes = split_output(output)
    # An ACGAN's D scores the image alone and classifies it: its logit ignores the label.
    assert (logits[0] != logits[1]) == (conditions[1] != "acgan")


def test_labels_outside_the_classes_are_refused(tmp_path):
    folder = write_idx_dataset(str(tmp_path / "d"))
    split = idx.load_split(folder, "train")
    with pytest.raises(Exception, match="the data has label 9, but model.num_classes is 5"):
        sources.check_labels(split, 5)
    sources.check_labels(split, 10)


def test_g_is_asked_for_labels_drawn_uniformly_from_the_steps_key(labelled_dir):
    gan = GANSpec.from_config(conditional(tiny_config(labelled_dir, batch_size=1000)))
    a = steps.draw_labels(gan, jax.random.key(0))
    assert a.shape == (1000,) and int(a.min()) == 0 and int(a.max()) == 9
    np.testing.assert_array_equal(a, steps.draw_labels(gan, jax.random.key(0)))
    assert not np.array_equal(a, steps.draw_labels(gan, jax.random.key(1)))
    assert np.bincount(np.asarray(a), minlength=10).min() > 60  # 100 expected per class
    assert steps.draw_labels(GANSpec.from_config(tiny_config(labelled_dir)), jax.random.key(0)) is None


@pytest.mark.slow
def test_the_step_gathers_each_batchs_labels_with_its_images(labelled_dir, monkeypatch):
    """d_step gets the labels at the very indices of its real images (d_steps=2: two batches)."""
    config = conditional(tiny_config(labelled_dir, d_steps=2), g="concat", d="concat")
    gan = GANSpec.from_config(config)
    split = idx.load_split(labelled_dir, "train")
    state = create_train_state(gan, seed=0).replace(step=jnp.int32(1))
    data = batches.TrainData(split.images, steps.data_orders(state.key, 0, len(split.images)),
                                    split.labels)
    seen = []
    d_step = steps.d_step

    def recording(state, real, key, **kwargs):
        jax.debug.callback(lambda *arrays: seen.append([np.asarray(a) for a in arrays]), real,
                           kwargs["real_labels"], ordered=True)
        return d_step(state, real, key, **kwargs)
    monkeypatch.setattr(steps, "d_step", recording)
    jax.block_until_ready(jax.jit(functools.partial(steps.train_step, gan=gan))(state, data))
    indices = np.asarray(batches.batch_from_orders(data.orders, state.step, 16)).reshape(2, 8)
    for (real, labels), batch in zip(seen, indices):
        np.testing.assert_array_equal(labels, split.labels[batch])
        np.testing.assert_allclose(real, batches.to_model_range(split.images[batch]), atol=1e-6)


@pytest.mark.slow
def test_acgan_adds_its_classifier_losses_to_both_networks(labelled_dir):
    gan = GANSpec.from_config(conditional(tiny_config(labelled_dir, ac_weight=0.5), g="concat", d="acgan"))
    state = create_train_state(gan, seed=0)
    real = jax.random.uniform(jax.random.key(7), (gan.batch_size, 28, 28, 1), minval=-1, maxval=1)
    real_labels = jnp.arange(gan.batch_size) % 10
    key = jax.random.key(1)
    _, d_metrics = jax.jit(functools.partial(steps.d_step, gan=gan))(state, real, key,
                                                                     real_labels=real_labels)
    _, g_metrics = jax.jit(functools.partial(steps.g_step, gan=gan))(state, real, key)
    fake_labels = steps.draw_labels(gan, key)
    fake, _ = gan.generator.apply(state.generator.variables(), steps.sample_noise(gan, key), train=True,
                                  labels=fake_labels, mutable=["batch_stats"])
    (logits, classes), _ = gan.discriminator.apply(state.discriminator.variables(), fake, train=True,
                                                   labels=fake_labels, mutable=["batch_stats"])
    g_ac = float(losses.auxiliary_classifier_loss(classes, fake_labels))
    assert float(g_metrics["g_ac"]) == pytest.approx(g_ac, rel=1e-5)
    assert float(g_metrics["g_loss"]) == pytest.approx(
        float(losses.generator_loss("ns", logits)) + 0.5 * g_ac, rel=1e-5)
    assert float(d_metrics["d_ac"]) > 0 and {"d_loss", "d_real", "d_fake", "d_ac"} == set(d_metrics)


def conditional_config(labelled_dir, **overrides):
    """A tiny class-conditional run (concat G, projection D) that learns its classes in 60 steps."""
    config = tiny_config(labelled_dir, num_steps=60, sample_every=30, checkpoint_every=30,
                         log_every=30, eval_every=60, g_lr=2e-3, d_lr=2e-3)
    config = conditional(config, g="concat", d="projection")
    for key, value in overrides.items():
        config[key] = value
    return config


@pytest.fixture(scope="module")
def conditional_run(labelled_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("conditional"))
    return workdir, train.train_and_evaluate(conditional_config(labelled_dir), workdir)


@pytest.mark.slow
def test_a_conditional_run_draws_each_class_as_the_data_has_it(conditional_run, tmp_path):
    """Class c of the data is bright in rows 2c..2c+8: G's samples of class c are too, brighter
    there than the other classes' samples (a class grid, the same noise in every row)."""
    workdir, _ = conditional_run
    sample.sample(workdir=workdir, class_grid=True, num=20, out=str(tmp_path / "grid.png"),
                  npy=str(tmp_path / "grid.npy"))
    images = np.load(tmp_path / "grid.npy")[..., 0].astype(np.float32) / 127.5 - 1
    labels = np.load(tmp_path / "grid.labels.npy")
    np.testing.assert_array_equal(labels, np.repeat(np.arange(10), 20))
    for c in range(10):
        band = images[:, 2 * c:2 * c + 8]
        assert band[labels == c].mean() > band[labels != c].mean() + 0.3, c
    sample.sample(workdir=workdir, label=7, num=4, npy=str(tmp_path / "sevens.npy"))
    np.testing.assert_array_equal(np.load(tmp_path / "sevens.labels.npy"), [7, 7, 7, 7])
    # The run's own grid is a class grid: 10 rows of 8.
    from PIL import Image
    assert Image.open(os.path.join(workdir, "samples", "step_0000060.png")).size == (8 * 28, 10 * 28)
    records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
    assert 0 <= records[-1]["eval_cond_acc"] <= 1


@pytest.mark.slow
@pytest.mark.parametrize("kwargs, message", [
    (dict(label=10), "--label=10; the run has the classes 0 to 9"),
    (dict(interpolate=True), "--interpolate of a conditional run needs --label: it interpolates "
                             "within a class"),
])
def test_bad_class_requests_are_one_line(conditional_run, tmp_path, kwargs, message):
    workdir, _ = conditional_run
    with pytest.raises(UserError) as info:
        sample.sample(workdir=workdir, out=str(tmp_path / "x.png"), **kwargs)
    assert str(info.value) == message


def test_an_unconditional_run_refuses_labels_and_class_grids(tmp_path):
    workdir = os.path.join(os.path.dirname(__file__), "data", "run_v0.1.0")  # any unconditional run
    with pytest.raises(UserError, match="--label needs a conditional run"):
        sample.sample(workdir=workdir, label=3, out=str(tmp_path / "x.png"))
    with pytest.raises(UserError, match="--class_grid needs a conditional run"):
        sample.sample(workdir=workdir, class_grid=True, out=str(tmp_path / "x.png"))


@pytest.mark.slow
def test_evaluate_reports_the_conditional_metrics(conditional_run, tmp_path):
    workdir, _ = conditional_run
    step, result, _ = scoring.evaluate_checkpoint(workdir, num_samples=100)
    assert 0 <= result["cond_acc"] <= 1 and result["intra_fid"] > 0
    assert len(result["intra_fid_per_class"]) == 10
    assert result["intra_fid"] == pytest.approx(np.mean(result["intra_fid_per_class"]))
    assert result["evaluator_accuracy"] == 0.9956
    assert result["class_histogram"] and "d_acc" in result
    # The same numbers from the samples and their labels written by gan_jax.sample.
    sample.sample(workdir=workdir, num=100, npy=str(tmp_path / "s.npy"))
    labels = np.load(tmp_path / "s.labels.npy")
    np.testing.assert_array_equal(labels, inference.balanced_labels(100, 10))


@pytest.mark.skipif(not os.environ.get(MNIST_DIR_VAR), reason=f"set {MNIST_DIR_VAR} to real MNIST")
@pytest.mark.slow
def test_the_test_split_against_itself_is_perfectly_conditional():
    """The evaluator classifies the test split with its own accuracy, and each class's images have
    the statistics of that class: intra-class FID 0."""
    test = idx.load_split(os.environ[MNIST_DIR_VAR], "test")
    result = scoring.evaluate_samples(test.images, "mnist", test.images, labels=test.labels,
                                       real_test_labels=test.labels)
    assert result["cond_acc"] == pytest.approx(result["evaluator_accuracy"], abs=1e-9)
    assert result["cond_acc"] == 0.9956
    assert result["intra_fid"] == pytest.approx(0, abs=1e-3)


@pytest.mark.slow
def test_a_conditional_run_resumes_bit_identically_and_trains_alike_on_4_devices(conditional_run,
                                                                                 labelled_dir, tmp_path):
    _, reference = conditional_run
    workdir = str(tmp_path / "resumed")
    train.train_and_evaluate(conditional_config(labelled_dir, num_steps=30), workdir)
    resumed = train.train_and_evaluate(conditional_config(labelled_dir), workdir)
    assert trees_equal(resumed, reference)
    # One step on 4 devices from the same state gives the one-device step (every method at once).
    one = parallel_step(conditional(tiny_config(labelled_dir), g="cbn", d="acgan"))
    four = parallel_step(conditional(tiny_config(labelled_dir, num_devices=4), g="cbn", d="acgan"))
    split = idx.load_split(labelled_dir, "train")
    host = devices.to_host(create_train_state(one.spec, 0))
    expected, _ = one.train_steps(1)(one.put_states([host]), put_data(one, split.images, host, split.labels))
    got, _ = four.train_steps(1)(four.put_states([host]), put_data(four, split.images, host, split.labels))
    assert_same_training(four.get_states(got)[0], one.get_states(expected)[0], gauge_atol=1e-3)


@pytest.mark.slow
def test_a_sweep_of_a_conditional_config(labelled_dir, tmp_path):
    config = conditional(tiny_config(labelled_dir, num_steps=2), g="concat", d="acgan")
    states = sweep.run_sweep(config, str(tmp_path), [1], {"ac_weight": [0.5, 2.0]})
    assert len(states) == 2 and all(int(s.step) == 2 for s in states)
    assert not trees_equal(states[0].generator.params, states[1].generator.params)
    # A sweep's report summarizes the conditional metrics too.
    rows, groups = scoring.evaluate_sweep(str(tmp_path), read_sweep(str(tmp_path)),
                                           num_samples=100)
    assert [g["values"] for g in groups] == [{"ac_weight": 0.5}, {"ac_weight": 2.0}]
    for row, group in zip(rows, groups):
        assert group["cond_acc"]["mean"] == row["cond_acc"]
        assert group["intra_fid"]["mean"] == row["intra_fid"]
