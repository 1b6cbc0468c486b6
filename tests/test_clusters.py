"""Self-conditioning (gan_jax.training.clusters): k-means and the matching of new clusters to old,
reclustering in the loop, and runs that stay pure functions of their seed: deterministic, resumable,
the same on 4 devices as on 1, in a sweep, and blind to the data's labels."""

from __future__ import annotations

import os
import re

import jax
import numpy as np
import pytest

from helpers import interrupt_after, tiny_config, trees_equal, write_idx_dataset
from gan_jax import sweep, train
from gan_jax.data import idx
from gan_jax.errors import ConfigError
from gan_jax.reporting.metrics_log import read_metrics
from gan_jax.training import clusters
from gan_jax.training.control import Interrupted
from gan_jax.training.spec import GANSpec
from gan_jax.training.state import create_train_state

SELF_CONDITIONED = {"self_condition.clusters": 4, "self_condition.every": 2,
                    "model.g_condition": "cbn", "model.d_condition": "projection",
                    "model.d_minibatch_std": 2, "augment": "translation,cutout"}


def test_lloyd_finds_well_separated_clusters_and_the_match_keeps_their_ids():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], np.float32)
    truth = np.repeat(np.arange(4), 50)
    points = centres[truth] + rng.normal(0, 0.5, (200, 2)).astype(np.float32)
    seeds = clusters._kmeans_plus_plus(points, jax.random.key(0), 4)
    _, found = clusters._lloyd(points, seeds)
    found = np.asarray(found)
    assert clusters.purity(found, truth) == 1.0
    permutation = clusters.match(found, truth, 4)
    np.testing.assert_array_equal(permutation[found], truth)  # renamed to the old ids exactly
    # A relabelled copy of the old clustering is matched back onto it.
    np.testing.assert_array_equal(clusters.match((truth + 1) % 4, truth, 4)[(truth + 1) % 4], truth)


@pytest.fixture(scope="module")
def clustered_data(tmp_path_factory):
    """Images in 10 kinds (each brighter in its own rows) whose labels are shuffled on disk below."""
    return write_idx_dataset(str(tmp_path_factory.mktemp("kinds")), num_train=80, num_test=16,
                             class_images=True)


def test_recluster_is_a_function_of_d_the_key_and_the_step(clustered_data):
    config = tiny_config(clustered_data, **SELF_CONDITIONED)
    spec = GANSpec.from_config(config)
    images = idx.load_split(clustered_data, "train").images
    state = create_train_state(spec, seed=0, num_train_images=len(images))
    d = state.discriminator.variables()
    first = clusters.recluster(spec.discriminator, d, state.clusters, images, state.key, 0)
    again = clusters.recluster(spec.discriminator, d, state.clusters, images, state.key, 0)
    assert trees_equal(first, again) and int(first.counts.sum()) == len(images)
    assert first.assignments.shape == (80,) and first.counts.shape == (4,)
    # Reclustering with the same D from its own clusters keeps them: the means are its centres.
    kept = clusters.recluster(spec.discriminator, d, first, images, state.key, 2)
    assert np.mean(kept.assignments == first.assignments) > 0.9


def test_the_reclustering_schedule_doubles_from_first_every_up_to_every():
    schedule = lambda every, first=0: [s for s in range(12000) if clusters.is_reclustering_step(s, every, first)]  # noqa: E731
    assert schedule(2000) == list(range(0, 12000, 2000))
    assert schedule(2000, 250) == [0, 250, 750, 1750, 3750, 5750, 7750, 9750, 11750]
    assert schedule(2000, 2000) == schedule(2000)  # no shorter interval: the plain cadence


def test_a_run_reclusters_on_the_schedule(clustered_data, tmp_path, caplog):
    config = tiny_config(clustered_data, **{**SELF_CONDITIONED, "self_condition.every": 4,
                                            "self_condition.first_every": 1, "num_steps": 6})
    with caplog.at_level("INFO", logger="gan_jax"):
        train.train_and_evaluate(config, str(tmp_path / "run"))
    steps = [int(m.group(1)) for m in (re.search(r"reclustered at step (\d+)", r.getMessage())
                                       for r in caplog.records) if m]
    assert steps == [1, 3]  # after the first clustering at 0: intervals 1, 2, then 4 (step 7: past the end)


@pytest.fixture(scope="module")
def self_conditioned_run(clustered_data, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("self_conditioned"))
    return workdir, train.train_and_evaluate(tiny_config(clustered_data, **SELF_CONDITIONED), workdir)


def test_a_self_conditioned_run_clusters_every_few_steps_and_keeps_the_clusters(self_conditioned_run):
    workdir, state = self_conditioned_run
    assert int(state.clusters.counts.sum()) == 80
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4", "6"]
    assert all(np.isfinite(r["d_loss"]) for r in read_metrics(os.path.join(workdir, "metrics.jsonl")))


@pytest.mark.slow
def test_a_self_conditioned_run_resumes_bit_identically(self_conditioned_run, clustered_data, tmp_path,
                                                       monkeypatch):
    """Stopped at step 3 (between the reclusterings at 2 and 4), resumed: the same state."""
    workdir = str(tmp_path / "stopped")
    with monkeypatch.context() as patched:
        interrupt_after(patched, 3)
        with pytest.raises(Interrupted):
            train.train_and_evaluate(tiny_config(clustered_data, **SELF_CONDITIONED), workdir)
    resumed = train.train_and_evaluate(tiny_config(clustered_data, **SELF_CONDITIONED), workdir)
    assert trees_equal(resumed, self_conditioned_run[1])


@pytest.fixture(scope="module")
def shuffled_labels(clustered_data, tmp_path_factory):
    """clustered_data with its labels shuffled on disk: the same images, other labels."""
    shuffled = write_idx_dataset(str(tmp_path_factory.mktemp("shuffled")), num_train=80, num_test=16,
                                 class_images=True)
    for split in ("train", "t10k"):
        path = os.path.join(shuffled, f"{split}-labels-idx1-ubyte.gz")
        labels = idx.read_idx_file(path, ndim=1)
        idx.write_idx(path, np.random.default_rng(1).permutation(labels))
    assert not np.array_equal(idx.load_split(shuffled, "train").labels,
                              idx.load_split(clustered_data, "train").labels)
    return shuffled


@pytest.mark.slow
def test_the_labels_on_disk_are_never_read(self_conditioned_run, shuffled_labels, tmp_path):
    """The same images with their labels shuffled train the very same run."""
    again = train.train_and_evaluate(tiny_config(shuffled_labels, **SELF_CONDITIONED),
                                     str(tmp_path / "run"))
    assert trees_equal(again, self_conditioned_run[1])


@pytest.mark.slow
def test_the_tuned_config_never_reads_labels(clustered_data, shuffled_labels, tmp_path):
    """experiments/mnist_tuned.py (shrunk, reclustering at steps 0, 1 and 3) trains the very same run
    from shuffled labels: it is unconditional, its clusters come from D."""
    def tuned(data_dir, name):
        config = tiny_config(data_dir, "mnist_tuned", **{"self_condition.first_every": 1,
                                                         "self_condition.every": 4})
        assert config.self_condition.clusters > 0 and config.model.num_classes == 0
        return train.train_and_evaluate(config, str(tmp_path / name))
    assert trees_equal(tuned(shuffled_labels, "shuffled"), tuned(clustered_data, "labelled"))


@pytest.mark.slow
def test_four_devices_and_a_sweep_cluster_as_one_device_does(self_conditioned_run, clustered_data,
                                                              tmp_path):
    """The clusters of 4 devices and of a sweep's run are the lone one-device run's (the first
    clustering, from the same D, exactly; the later ones from states equal up to float rounding)."""
    one = train.train_and_evaluate(tiny_config(clustered_data, num_steps=2, **SELF_CONDITIONED),
                                   str(tmp_path / "one"))
    four = train.train_and_evaluate(tiny_config(clustered_data, num_steps=2, num_devices=4,
                                                **SELF_CONDITIONED), str(tmp_path / "four"))
    swept = sweep.run_sweep(tiny_config(clustered_data, num_steps=2, **SELF_CONDITIONED),
                            str(tmp_path / "sweep"), [0, 1], {})
    for other in (four, swept[0]):
        assert np.mean(other.clusters.assignments == one.clusters.assignments) >= 0.95
    assert not trees_equal(swept[0].clusters, swept[1].clusters)  # another seed, other clusters


@pytest.mark.parametrize("overrides, message", [
    ({"model.num_classes": 10}, "conditions on clusters instead of labels"),
    ({"model.d_condition": "concat"}, "needs D's features without the label"),
    ({"self_condition.every": 3, "steps_per_call": 2, "sample_every": 2},
     "self_condition.every=3 is not a multiple"),
    ({"self_condition.first_every": 4}, "first_every=4 is more than config.self_condition.every=2"),
])
def test_self_conditioning_refuses_what_it_cannot_do(idx_dir, overrides, message):
    from gan_jax import config as config_lib
    with pytest.raises(ConfigError, match=message):
        config_lib.validate(tiny_config(idx_dir, **{**SELF_CONDITIONED, **overrides}))


def test_share_labels_follow_the_clusters_proportions_in_every_stretch():
    from gan_jax.model import inference
    counts = np.array([600, 300, 100, 0])
    labels = inference.share_labels(counts, 1000)
    np.testing.assert_array_equal(np.bincount(labels, minlength=4), [600, 300, 100, 0])
    for chunk in np.split(labels, 10):  # a classifier score's split sees every cluster
        assert set(chunk) == {0, 1, 2}
    np.testing.assert_array_equal(labels, inference.share_labels(counts, 1000))  # fixed order
    assert list(inference.share_labels(counts, 10, grouped=True)) == [0] * 6 + [1] * 3 + [2]
