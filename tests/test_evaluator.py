"""Tests of the shipped evaluator networks, their loader and their training command.

Tests marked by the `real` fixture need the real datasets and skip unless the environment names their
folders: GAN_JAX_MNIST_DIR and GAN_JAX_FASHION_MNIST_DIR (each holding the four IDX files). Evaluator
outputs on real data are computed once per dataset and module, so all of them take a few seconds each.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import shutil
import subprocess
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import MNIST_DIR_VAR, PYTHON, REPO
from gan_jax.data.idx import write_idx
from gan_jax import evaluator
from gan_jax.evaluation import quality
from gan_jax.errors import ConfigError, DataError
from gan_jax.evaluator import train as evaluator_train
from gan_jax.evaluator.model import ARCHITECTURE, FEATURE_DIM, NUM_CLASSES
from gan_jax.config import KNOWN_DATASETS as DATASETS
from gan_jax.data.batches import to_model_range

DATA_DIR_VARIABLES = {"mnist": MNIST_DIR_VAR, "fashion_mnist": "GAN_JAX_FASHION_MNIST_DIR"}


def _random_images(n: int, seed: int = 0) -> np.ndarray:
    return np.asarray(jax.random.uniform(jax.random.key(seed), (n, 28, 28, 1), minval=-1.0, maxval=1.0))


# --- Shipped weights -----------------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", DATASETS)
def test_shipped_weights_load_and_match_their_checksum(dataset):
    ev = evaluator.load(dataset)
    params_name, _ = evaluator.weights_files(dataset)
    shipped = importlib.resources.files("gan_jax.evaluator").joinpath("weights", params_name).read_bytes()
    assert len(shipped) < 1_000_000  # small enough to live in the repository
    assert ev.metadata["params_sha256"] == hashlib.sha256(shipped).hexdigest()
    assert ev.metadata["dataset"] == dataset
    assert ev.metadata["architecture"] == ARCHITECTURE
    assert ev.metadata["num_params"] == sum(p.size for p in jax.tree_util.tree_leaves(ev.params))
    assert set(ev.metadata["data_files_sha256"]) == {
        "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"}


def _copy_weights(dataset: str, folder) -> tuple[str, str]:
    paths = []
    for name in evaluator.weights_files(dataset):
        path = os.path.join(folder, name)
        with importlib.resources.files("gan_jax.evaluator").joinpath("weights", name).open("rb") as src, \
                open(path, "wb") as dst:
            shutil.copyfileobj(src, dst)
        paths.append(path)
    return paths[0], paths[1]


def test_corrupted_weights_are_refused(tmp_path):
    params_path, _ = _copy_weights("mnist", tmp_path)
    assert evaluator.load("mnist", weights_dir=str(tmp_path)).dataset == "mnist"
    data = bytearray(open(params_path, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(params_path, "wb").write(bytes(data))
    with pytest.raises(DataError, match="sha256"):
        evaluator.load("mnist", weights_dir=str(tmp_path))


def test_weights_of_another_dataset_are_refused(tmp_path):
    params_path, meta_path = _copy_weights("mnist", tmp_path)
    os.rename(params_path, tmp_path / "fashion_mnist.msgpack")
    os.rename(meta_path, tmp_path / "fashion_mnist.json")
    with pytest.raises(DataError, match="dataset 'mnist'"):
        evaluator.load("fashion_mnist", weights_dir=str(tmp_path))


def test_unknown_dataset_and_missing_weights_are_user_errors(tmp_path):
    with pytest.raises(ConfigError, match="cifar10"):
        evaluator.load("cifar10")
    with pytest.raises(DataError, match="missing"):
        evaluator.load("mnist", weights_dir=str(tmp_path))


# --- Forward passes ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_evaluator() -> evaluator.Evaluator:
    return evaluator.load("mnist")


def test_output_shapes_dtypes_and_determinism(mnist_evaluator):
    images = _random_images(37)
    logits, features = mnist_evaluator.outputs(images)
    assert logits.shape == (37, NUM_CLASSES) and logits.dtype == np.float32
    assert features.shape == (37, FEATURE_DIM) and features.dtype == np.float32
    again_logits, again_features = mnist_evaluator.outputs(images)
    np.testing.assert_array_equal(logits, again_logits)  # bitwise
    np.testing.assert_array_equal(features, again_features)
    probs = mnist_evaluator.probs(images)
    assert probs.shape == (37, NUM_CLASSES) and probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(mnist_evaluator.features(images), features)
    np.testing.assert_array_equal(mnist_evaluator.logits(images), logits)


def test_batching_does_not_change_the_outputs(mnist_evaluator):
    images = _random_images(37, seed=1)
    small_batches = evaluator.Evaluator(mnist_evaluator.params, batch_size=16)  # 16 + 16 + 5 padded
    np.testing.assert_allclose(small_batches.features(images), mnist_evaluator.features(images),
                               rtol=1e-5, atol=1e-5)


def test_apply_is_the_same_function_inside_a_callers_jit(mnist_evaluator):
    images = _random_images(8, seed=2)
    logits, features = jax.jit(mnist_evaluator.apply)(mnist_evaluator.params, jnp.asarray(images))
    np.testing.assert_allclose(logits, mnist_evaluator.logits(images), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(features, mnist_evaluator.features(images), rtol=1e-5, atol=1e-5)


def test_uint8_images_are_converted_and_bad_images_refused(mnist_evaluator):
    pixels = np.asarray(jax.random.randint(jax.random.key(3), (5, 28, 28, 1), 0, 256), np.uint8)
    np.testing.assert_array_equal(mnist_evaluator.features(pixels),
                                  mnist_evaluator.features(np.asarray(to_model_range(pixels))))
    np.testing.assert_array_equal(mnist_evaluator.features(pixels[..., 0]),  # no channel axis
                                  mnist_evaluator.features(pixels))
    # The same checks as every image a user hands in (gan_jax.evaluation.images.as_images).
    with pytest.raises(DataError, match=r"\[-1, 1\]"):
        mnist_evaluator.features(pixels.astype(np.float32))  # uint8 range in a float array
    with pytest.raises(DataError, match="N x 28 x 28 or N x 28 x 28 x 1"):
        mnist_evaluator.features(np.zeros((5, 28, 27), np.float32))
    with pytest.raises(DataError, match="0 image"):
        mnist_evaluator.features(np.zeros((0, 28, 28, 1), np.float32))


def test_reference_stats_are_float64_feature_moments(mnist_evaluator):
    images = _random_images(50, seed=4)
    mu, sigma = evaluator.reference_stats(mnist_evaluator, images)
    assert mu.shape == (FEATURE_DIM,) and sigma.shape == (FEATURE_DIM, FEATURE_DIM)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, mnist_evaluator.features(images).astype(np.float64).mean(axis=0))


# --- Training command ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> str:
    """A 256-image IDX dataset: class c is a bright square at a position of its own, so 1 epoch learns it."""
    folder = tmp_path_factory.mktemp("tiny_idx")
    rng = np.random.default_rng(0)
    for split, n in (("train", 256), ("test", 64)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, c in enumerate(labels):
            row, col = 2 + 8 * (c // 3), 2 + 8 * (c % 3)
            images[i, row:row + 6, col:col + 6] = 255
        image_name, label_name = evaluator_train.IDX_FILES[split]
        write_idx(os.path.join(folder, image_name + ".gz"), images)
        write_idx(os.path.join(folder, label_name + ".gz"), labels)
    return str(folder)


def _train_tiny(data_dir: str, out_dir: str) -> dict:
    return evaluator_train.run("mnist", data_dir, out_dir, epochs=1, seed=0, batch_size=32,
                               learning_rate=3e-3, date="2000-01-01", command="test", log=lambda line: None)


@pytest.mark.slow
def test_training_writes_loadable_weights_and_is_deterministic(tiny_dataset, tmp_path):
    first = _train_tiny(tiny_dataset, str(tmp_path / "a"))
    second = _train_tiny(tiny_dataset, str(tmp_path / "b"))
    assert first["params_sha256"] == second["params_sha256"]  # same seed, same weights, bitwise
    assert first["date"] == "2000-01-01" and first["epochs"] == 1 and first["seed"] == 0
    assert first["data_files_sha256"]["train-images-idx3-ubyte.gz"] == evaluator_train.sha256_file(
        os.path.join(tiny_dataset, "train-images-idx3-ubyte.gz"))
    with open(tmp_path / "a" / "mnist.json") as f:
        assert json.load(f) == first
    ev = evaluator.load("mnist", weights_dir=str(tmp_path / "a"))
    assert ev.metadata == first


def test_training_rejects_bad_input(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset"):
        evaluator_train.run("svhn", str(tmp_path), str(tmp_path), None, 0, 128, 1e-3, None, "test")
    nowhere = str(tmp_path / "nowhere")
    with pytest.raises(DataError, match="not a folder"):
        evaluator_train.run("mnist", nowhere, str(tmp_path), None, 0, 128, 1e-3, None, "test")
    with pytest.raises(DataError, match="missing data file"):
        evaluator_train.run("mnist", str(tmp_path), str(tmp_path), None, 0, 128, 1e-3, None, "test")


@pytest.mark.slow
def test_training_command_prints_one_error_line(tmp_path, python_env):
    result = subprocess.run(
        [PYTHON, "-m", "gan_jax.evaluator.train", "--dataset", "mnist", "--data_dir",
         str(tmp_path / "nowhere"), "--out", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=python_env)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [f"error: --data_dir {str(tmp_path / 'nowhere')!r} is not a folder"]


# --- Real data -----------------------------------------------------------------------------------------

# Bounds, set from what the shipped weights measure (in brackets), with margin:
# - accuracy: the targets the evaluators were trained to (mnist 0.9956, fashion_mnist 0.9225).
# - classifier score of the real test split, ceiling 10 (mnist 9.79; fashion_mnist 8.16, lower because
#   shirts, T-shirts, pullovers and coats are confused, so p(y|x) keeps more entropy).
# - FID between a 10k training subset and the 10k test split. The features are post-ReLU activations
#   with total variance tr(sigma) of 855 (mnist) and 363 (fashion_mnist), so distances are on a larger
#   scale than with Inception features. Two disjoint 10k training subsets already give 0.49 (mnist) and
#   0.28 (fashion_mnist) from sampling noise alone; train vs test gives 1.21 and 0.24; one class alone
#   gives about 1000 and 600. The bounds are about twice and four times the train/test values.
MIN_ACCURACY = {"mnist": 0.993, "fashion_mnist": 0.91}
CLASSIFIER_SCORE_RANGE = {"mnist": (9.6, 10.0), "fashion_mnist": (7.5, 10.0)}
MAX_TRAIN_TEST_FID = {"mnist": 2.5, "fashion_mnist": 1.0}


class RealOutputs(NamedTuple):
    dataset: str
    test_labels: np.ndarray
    test_logits: np.ndarray
    test_features: np.ndarray
    train_features: np.ndarray  # of a 10k subset of the training split


@pytest.fixture(scope="module", params=DATASETS)
def real(request) -> RealOutputs:
    """Evaluator outputs on the real test split and a 10k training subset, once per dataset."""
    from gan_jax.data.idx import load_split as load_idx_split

    dataset = request.param
    data_dir = os.environ.get(DATA_DIR_VARIABLES[dataset])
    if not data_dir:
        pytest.skip(f"{DATA_DIR_VARIABLES[dataset]} is not set")
    ev = evaluator.load(dataset)
    test = load_idx_split(data_dir, "test")
    train = load_idx_split(data_dir, "train")
    subset = np.sort(np.random.default_rng(0).choice(len(train.images), 10_000, replace=False))
    test_logits, test_features = ev.outputs(test.images)
    return RealOutputs(dataset, test.labels, test_logits, test_features, ev.features(train.images[subset]))


@pytest.mark.slow
def test_real_test_accuracy(real):
    accuracy = float(np.mean(np.argmax(real.test_logits, axis=1) == real.test_labels))
    assert accuracy >= MIN_ACCURACY[real.dataset]


@pytest.mark.slow
def test_real_classifier_score(real):
    mean, _ = quality.classifier_score(evaluator.softmax(real.test_logits))
    low, high = CLASSIFIER_SCORE_RANGE[real.dataset]
    assert low <= mean <= high


@pytest.mark.slow
def test_real_train_vs_test_fid_is_small_and_kid_near_zero(real):
    assert quality.fid(real.train_features, real.test_features) < MAX_TRAIN_TEST_FID[real.dataset]
    kid_mean, kid_std = quality.kid(real.train_features, real.test_features, num_subsets=20)
    assert kid_mean < 3 * kid_std + 1e-3


@pytest.mark.slow
def test_real_mode_collapse_lowers_coverage_and_recall(real):
    one_class = real.test_labels == 1
    collapsed_features = real.test_features[one_class]
    collapsed_probs = evaluator.softmax(real.test_logits[one_class])
    # A healthy "generator" of the same size: training images, which the evaluator did see but which
    # are a fair sample of the data.
    healthy_features = real.train_features[:len(collapsed_features)]

    real_entropy = quality.class_coverage(real.test_logits).entropy
    collapsed_entropy = quality.class_coverage(collapsed_probs).entropy
    assert real_entropy > 0.99 * np.log(NUM_CLASSES)
    assert collapsed_entropy < 0.25 * real_entropy

    healthy = quality.precision_recall(real.test_features, healthy_features)
    collapsed = quality.precision_recall(real.test_features, collapsed_features)
    assert collapsed.recall < 0.5 * healthy.recall
    assert quality.fid(collapsed_features, real.test_features) > 20 * quality.fid(
        real.train_features, real.test_features)
