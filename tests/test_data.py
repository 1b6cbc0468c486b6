"""gan_jax.data: the IDX reader on good and malformed files, and the on-device batch order."""

import gzip
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import MNIST_DIR_VAR, write_idx_dataset
from gan_jax.data import idx
from gan_jax.data import batches
from gan_jax.data.idx import write_idx
from gan_jax.errors import DataError


def test_gzip_and_raw_give_the_same_arrays(tmp_path):
    gz = idx.load_split(write_idx_dataset(str(tmp_path / "gz"), compress=True), "train")
    raw = idx.load_split(write_idx_dataset(str(tmp_path / "raw"), compress=False), "train")
    assert gz.images.shape == (64, 28, 28, 1) and gz.images.dtype == np.uint8
    assert gz.labels.shape == (64,)
    np.testing.assert_array_equal(gz.images, raw.images)
    np.testing.assert_array_equal(gz.labels, raw.labels)
    test = idx.load_split(str(tmp_path / "gz"), "test")
    assert test.images.shape == (16, 28, 28, 1)


def _corrupt(folder, name, data):
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data)


@pytest.mark.parametrize("case, message", [
    ("wrong_magic", "magic number"),
    ("truncated", "truncated"),
    ("short_header", "too short"),
    ("missing", "missing data file"),
    ("bad_gzip", "cannot read"),
    ("label_mismatch", "labels"),
    ("wrong_image_size", r"images are \(32, 32\)"),
])
def test_malformed_files_raise_one_line_data_errors(tmp_path, case, message):
    folder = write_idx_dataset(str(tmp_path / "d"))
    images = os.path.join(folder, "train-images-idx3-ubyte.gz")
    if case == "wrong_magic":
        write_idx(images, np.zeros((4, 28), np.uint8))  # a 2-D file where 3-D images belong
    elif case == "truncated":
        with gzip.open(images, "rb") as f:
            data = f.read()
        _corrupt(folder, "train-images-idx3-ubyte.gz", gzip.compress(data[:-100]))
    elif case == "short_header":
        _corrupt(folder, "train-images-idx3-ubyte.gz", gzip.compress(b"\x00\x00\x08"))
    elif case == "missing":
        os.remove(images)
    elif case == "bad_gzip":
        _corrupt(folder, "train-images-idx3-ubyte.gz", b"\x1f\x8b" + b"not gzip at all")
    elif case == "label_mismatch":
        write_idx(os.path.join(folder, "train-labels-idx1-ubyte.gz"), np.zeros(10, np.uint8))
    elif case == "wrong_image_size":
        write_idx(images, np.zeros((64, 32, 32), np.uint8))
    with pytest.raises(DataError, match=message) as info:
        idx.load_split(folder, "train")
    assert "\n" not in str(info.value)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not a folder"):
        idx.load_split(str(tmp_path / "nope"), "train")


def test_batch_order_is_a_pure_function_of_key_and_epoch():
    key, n, batch = jax.random.key(0), 50, 8
    per_epoch = n // batch  # 6 steps, 2 images of the tail dropped each epoch
    order = lambda step: np.asarray(batches.batch_indices(key, jnp.int32(step), n, batch))  # noqa
    epoch0 = np.concatenate([order(s) for s in range(per_epoch)])
    assert len(set(epoch0.tolist())) == per_epoch * batch  # no image twice within an epoch
    epoch1 = np.concatenate([order(s) for s in range(per_epoch, 2 * per_epoch)])
    assert not np.array_equal(epoch0, epoch1)  # reshuffled each epoch
    # Step 9 is step 3 of epoch 1: its slice of that epoch's permutation, drawn from fold_in(key, 1).
    expected = np.asarray(jax.random.permutation(jax.random.fold_in(key, 1), n))[3 * batch:4 * batch]
    np.testing.assert_array_equal(order(9), expected)
    other = np.asarray(batches.batch_indices(jax.random.key(1), jnp.int32(0), n, batch))
    assert not np.array_equal(order(0), other)


def test_orders_give_the_same_batches_as_the_permutation_of_each_epoch():
    """The loop's once-per-epoch orders (two epochs by parity) reproduce batch_indices exactly."""
    key, n, batch = jax.random.key(3), 50, 8
    per_epoch = n // batch
    for first_epoch in (0, 1, 4):
        orders = jnp.asarray(batches.epoch_orders(key, first_epoch, n))
        for step in range(first_epoch * per_epoch, (first_epoch + 2) * per_epoch):
            np.testing.assert_array_equal(
                batches.batch_from_orders(orders, jnp.int32(step), batch),
                batches.batch_indices(key, jnp.int32(step), n, batch))


def test_model_range():
    pixels = jnp.array([0, 255, 128], jnp.uint8)
    np.testing.assert_allclose(batches.to_model_range(pixels), [-1.0, 1.0, 128 / 127.5 - 1],
                               atol=1e-7)


@pytest.mark.skipif(not os.environ.get(MNIST_DIR_VAR), reason=f"set {MNIST_DIR_VAR} to real MNIST")
def test_real_mnist_matches_its_published_statistics():
    split = idx.load_split(os.environ[MNIST_DIR_VAR], "train")
    assert split.images.shape == (60000, 28, 28, 1)
    assert split.images.mean() == pytest.approx(33.318, abs=1e-3)
    assert split.images.std() == pytest.approx(78.567, abs=1e-3)
    counts = np.bincount(split.labels, minlength=10).tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert idx.load_split(os.environ[MNIST_DIR_VAR], "test").images.shape[0] == 10000


FASHION_DIR_VAR = "GAN_JAX_FASHION_MNIST_DIR"


@pytest.mark.skipif(not (os.environ.get(MNIST_DIR_VAR) and os.environ.get(FASHION_DIR_VAR)),
                    reason=f"set {MNIST_DIR_VAR} and {FASHION_DIR_VAR} to the real datasets")
def test_the_files_of_another_dataset_are_refused_and_named():
    import ml_collections
    from gan_jax.data import sources

    def data(name, folder, check=True):
        return ml_collections.ConfigDict({"source": "idx", "name": name, "dir": folder,
                                          "check_dataset": check})
    mnist, fashion = os.environ[MNIST_DIR_VAR], os.environ[FASHION_DIR_VAR]
    assert sources.load_split(data("mnist", mnist), "test").images.shape == (10000, 28, 28, 1)
    with pytest.raises(DataError, match="holds fashion_mnist's train split, but config.data.name='mnist'"):
        sources.load_split(data("mnist", fashion), "train")
    with pytest.raises(DataError, match="holds mnist's test split"):  # even when not checking
        sources.load_split(data("fashion_mnist", mnist, check=False), "test")


def test_unknown_files_pass_only_when_the_check_is_off(idx_dir):
    import ml_collections
    from gan_jax.data import sources
    config = ml_collections.ConfigDict({"source": "idx", "name": "mnist", "dir": idx_dir,
                                        "check_dataset": True})
    with pytest.raises(DataError, match="not the published mnist.*check_dataset=False"):
        sources.load_split(config, "train")
    config.check_dataset = False
    assert len(sources.load_split(config, "train").images) == 64


def test_a_refusal_ends_with_the_advice_of_the_command_at_hand(idx_dir, monkeypatch):
    """The small written files stand in for the published MNIST test split (their hash recorded as
    its): read as Fashion-MNIST they are refused, by default in the config's keys (the training
    commands'), or in the words a caller gives (the evaluate command's flags)."""
    split = idx.load_split(idx_dir, "test")
    monkeypatch.setitem(idx.CANONICAL_SHA256, ("mnist", "test"), idx.content_sha256(split))
    idx.check_canonical(split, "mnist", "test", idx_dir)  # the published files pass
    with pytest.raises(DataError) as default:
        idx.check_canonical(split, "fashion_mnist", "test", idx_dir, allow_unknown=True)
    assert str(default.value) == (f"{idx_dir} holds mnist's test split, but config.data.name="
                                  f"'fashion_mnist': set config.data.name='mnist' or point data.dir at "
                                  f"fashion_mnist's files")
    advice = idx.Advice(other="but --dataset={dataset}: give --dataset={other}",
                        unknown="point --data_dir at {dataset}'s files")
    with pytest.raises(DataError, match=r"holds mnist's test split, but --dataset=fashion_mnist: give "
                                        r"--dataset=mnist$"):
        idx.check_canonical(split, "fashion_mnist", "test", idx_dir, advice=advice)
    with pytest.raises(DataError, match=r"not the published mnist \(its contents differ\); "
                                        r"point --data_dir at mnist's files$"):
        idx.check_canonical(idx.load_split(idx_dir, "train"), "mnist", "train", idx_dir, advice=advice)


def test_has_split_finds_gzipped_and_raw_files(tmp_path):
    assert idx.has_split(write_idx_dataset(str(tmp_path / "gz")), "test")
    assert idx.has_split(write_idx_dataset(str(tmp_path / "raw"), compress=False), "test")
    os.remove(tmp_path / "raw" / "t10k-labels-idx1-ubyte")
    assert not idx.has_split(str(tmp_path / "raw"), "test")
    assert not idx.has_split(str(tmp_path / "nowhere"), "test")
