"""Datasets as uint8 arrays, and the on-device batch gather used inside the train step.

Two sources give the same arrays: `idx` reads the four IDX files (gzip or raw) from a folder, `tfds` goes
through tensorflow-datasets (see `gan_jax.tfds_idx`). The whole split is put on the device once; each
training step gathers its batch on the device from its epoch's permutation, a pure function of (key,
epoch) computed once per epoch, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import gzip
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from gan_jax.errors import DataError

DATASETS = ("mnist", "fashion_mnist")
SOURCES = ("tfds", "idx")
SPLITS = ("train", "test")
IMAGE_SHAPE = (28, 28, 1)

# File stems as published with MNIST and Fashion-MNIST; each may be gzipped (".gz") or raw.
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_UBYTE = 0x08  # the IDX type code for unsigned bytes, the only one these datasets use
_GZIP_MAGIC = b"\x1f\x8b"


class Split(NamedTuple):
    """One split of a dataset: images (N, 28, 28, 1) and labels (N,), both uint8."""

    images: np.ndarray
    labels: np.ndarray


def parse_idx(data: bytes, ndim: int, source: str = "<bytes>") -> np.ndarray:
    """Decodes an IDX byte string holding unsigned bytes with `ndim` dimensions.

    Args:
      data: the file's contents, already decompressed.
      ndim: the number of dimensions the caller expects (3 for images, 1 for labels).
      source: where the bytes came from, for error messages.

    Returns:
      A read-only uint8 array of the shape given in the header.

    Raises:
      DataError: the header is not IDX, holds another type or rank, or the size does not match it.
    """
    expected_magic = (_IDX_UBYTE << 8) | ndim
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{source}: {len(data)} bytes is too short for an IDX header with {ndim} dims")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        raise DataError(f"{source}: IDX magic number {magic}, expected {expected_magic} (uint8, {ndim} dims)")
    shape = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    header = 4 + 4 * ndim
    if len(data) - header != int(np.prod(shape)):
        raise DataError(
            f"{source}: header says shape {shape} ({int(np.prod(shape))} bytes) "
            f"but the file holds {len(data) - header} bytes after it (truncated or corrupt)")
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def read_idx_file(path: str, ndim: int) -> np.ndarray:
    """Reads one IDX file, gzipped or raw (told apart by the gzip magic, not by the name)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
        if data[:2] == _GZIP_MAGIC:
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise DataError(f"{path}: cannot read: {e}") from None
    return parse_idx(data, ndim, source=path)


def find_idx_file(data_dir: str, stem: str) -> str:
    """The path of IDX file `stem` in data_dir, gzipped or raw."""
    for name in (stem + ".gz", stem):
        path = os.path.join(data_dir, name)
        if os.path.isfile(path):
            return path
    raise DataError(f"missing data file: {os.path.join(data_dir, stem)}[.gz] (data.dir={data_dir!r})")


def load_idx_split(data_dir: str, split: str) -> Split:
    """Loads a split from the IDX files in `data_dir`, checking that images and labels agree."""
    if not os.path.isdir(data_dir):
        raise DataError(f"data.dir {data_dir!r} is not a folder")
    image_stem, label_stem = IDX_FILES[split]
    images = read_idx_file(find_idx_file(data_dir, image_stem), ndim=3)
    labels = read_idx_file(find_idx_file(data_dir, label_stem), ndim=1)
    if images.shape[1:] != IMAGE_SHAPE[:2]:
        raise DataError(f"{data_dir}: images are {images.shape[1:]}, expected {IMAGE_SHAPE[:2]}")
    if len(images) != len(labels):
        raise DataError(f"{data_dir}: {len(images)} images but {len(labels)} labels in the {split} split")
    return Split(images[..., None], labels)


def load_split(data_config, split: str = "train") -> Split:
    """Loads `split` of the dataset that `data_config` (the config's `data` block) names."""
    if data_config.source == "idx":
        if not data_config.dir:
            raise DataError("data.source='idx' needs data.dir, the folder holding the IDX files")
        return load_idx_split(data_config.dir, split)
    from gan_jax import tfds_idx  # tensorflow-datasets is a heavy import: only when asked for
    return tfds_idx.load(data_config.name, split, data_dir=data_config.dir or None)


def to_model_range(images: jax.Array) -> jax.Array:
    """uint8 pixels in [0, 255] -> float32 in [-1, 1], the range of the generator's tanh."""
    return images.astype(jnp.float32) / 127.5 - 1.0


class TrainData(NamedTuple):
    """What the train step reads: the whole split and the batch order of the epochs at hand.

    Attributes:
      images: uint8 (num_examples, 28, 28, 1), resident on the device for the whole run.
      orders: int32 (2, num_examples): row `e % 2` is epoch e's permutation, for the epoch of the
        call's first step and the next one, so a call of several steps may cross one epoch boundary.
    """

    images: Any
    orders: Any


def epoch_permutation(key: jax.Array, epoch: int | jax.Array, num_examples: int) -> jax.Array:
    """Epoch `epoch`'s data order: a pure function of (key, epoch), drawn from fold_in(key, epoch)."""
    return jax.random.permutation(jax.random.fold_in(key, epoch), num_examples)


def epoch_orders(key: jax.Array, epoch: int, num_examples: int) -> np.ndarray:
    """TrainData.orders for a call starting in `epoch`: epochs `epoch` and `epoch + 1` by parity."""
    rows = [np.asarray(_epoch_permutation(key, e, num_examples)) for e in (epoch, epoch + 1)]
    return np.stack(rows[::-1] if epoch % 2 else rows)


_epoch_permutation = jax.jit(epoch_permutation, static_argnums=2)


def batch_from_orders(orders: jax.Array, step: jax.Array, batch_size: int) -> jax.Array:
    """Indices of the global batch of `step`, from TrainData.orders (the epoch's ragged tail dropped)."""
    steps_per_epoch = orders.shape[1] // batch_size
    return _batch_of(orders[(step // steps_per_epoch) % 2], step, batch_size, steps_per_epoch)


def batch_indices(key: jax.Array, step: jax.Array, num_examples: int, batch_size: int) -> jax.Array:
    """Indices of the global batch for `step`, computing the epoch's permutation on the spot.

    The same order as `batch_from_orders` gives, for callers that do not keep the permutations.
    """
    steps_per_epoch = num_examples // batch_size
    permutation = epoch_permutation(key, step // steps_per_epoch, num_examples)
    return _batch_of(permutation, step, batch_size, steps_per_epoch)


def _batch_of(order: jax.Array, step: jax.Array, batch_size: int, steps_per_epoch: int) -> jax.Array:
    return jax.lax.dynamic_slice_in_dim(order, (step % steps_per_epoch) * batch_size, batch_size)
