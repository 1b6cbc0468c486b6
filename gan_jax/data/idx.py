"""The IDX files MNIST and Fashion-MNIST are published as: reading (gzip or raw) and writing.

Both data sources end here: `idx` reads a folder of the four files directly, and `tfds` decodes the
same files inside its builders (`gan_jax.data.tfds_builders`). IDX: a big-endian header (magic 0x08 << 8 | ndim
for unsigned bytes, then each dimension's size as uint32), then the bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from typing import NamedTuple

import numpy as np

from gan_jax.errors import DataError

IMAGE_SHAPE = (28, 28, 1)
SPLITS = ("train", "test")

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


# sha256 of each canonical split's decoded images then labels (the bytes `load_split` returns): the
# published MNIST and Fashion-MNIST files, gzipped or raw, give these and nothing else does.
CANONICAL_SHA256 = {
    ("mnist", "train"): "edc0d1098aa497be14ace79ddd5171e5a3dcf9c4d196c015389203eb3ba1f59b",
    ("mnist", "test"): "c3f9adf9c66efb572b1f9326c3a511b45910c7173b97be66ceceeeeaef6b802b",
    ("fashion_mnist", "train"): "16d82e2b505296aa2b78bd5ea0992634f30419a4c97def7c907d154a35ac6157",
    ("fashion_mnist", "test"): "9f1ec356a747bfe4ebab3cfb722d3694c9ca737e2570f6f90cf31d7b6fd689d4",
}


def content_sha256(split: Split) -> str:
    """sha256 of a split's images then labels, as `CANONICAL_SHA256` holds them."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(split.images).tobytes())
    digest.update(np.ascontiguousarray(split.labels).tobytes())
    return digest.hexdigest()


class Advice(NamedTuple):
    """How `check_canonical`'s refusals end: what to change, in the settings of the command at hand."""

    other: str  # the files are another known dataset's: "but ...: ..." ({dataset}, {other}: their names)
    unknown: str  # the files are no known dataset's ({dataset}: the one asked for)


# The training commands' (the config's keys); other commands phrase their own (gan_jax.evaluate).
TRAINING_ADVICE = Advice(
    other="but config.data.name={dataset!r}: set config.data.name={other!r} or point data.dir at "
          "{dataset}'s files",
    unknown="for your own IDX files set config.data.check_dataset=False")


def check_canonical(split: Split, dataset: str, which: str, where: str,
                    allow_unknown: bool = False, advice: Advice = TRAINING_ADVICE) -> None:
    """Refuses a split that is not the published `dataset`'s (`which` is "train" or "test"); with
    `allow_unknown`, only one that is another known dataset's. `advice` ends the message.

    Raises:
      DataError: naming the other dataset when the files are its, else saying they are no copy of
        `dataset`.
    """
    digest = content_sha256(split)
    if digest == CANONICAL_SHA256.get((dataset, which)):
        return
    others = [name for (name, part), value in CANONICAL_SHA256.items() if value == digest]
    if others:
        raise DataError(f"{where} holds {others[0]}'s {which} split, "
                        + advice.other.format(dataset=dataset, other=others[0]))
    if allow_unknown:
        return
    raise DataError(f"{where}: the {which} split is not the published {dataset} (its contents differ); "
                    + advice.unknown.format(dataset=dataset))


def has_split(data_dir: str, split: str) -> bool:
    """Whether `data_dir` holds the two IDX files of `split`, gzipped or raw (not read)."""
    return all(any(os.path.isfile(os.path.join(data_dir, stem + suffix)) for suffix in (".gz", ""))
               for stem in IDX_FILES[split])


def load_split(data_dir: str, split: str) -> Split:
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




def write_idx(path: str, array: np.ndarray, compress: bool = True) -> None:
    """Writes a uint8 array as an IDX file, gzipped unless `compress` is False."""
    header = ((_IDX_UBYTE << 8) | array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with (gzip.open(path, "wb") if compress else open(path, "wb")) as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


def write_split(data_dir: str, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Writes one split's images (N, 28, 28[, 1]) and labels (N,) as its two gzipped IDX files."""
    os.makedirs(data_dir, exist_ok=True)
    image_stem, label_stem = IDX_FILES[split]
    write_idx(os.path.join(data_dir, image_stem + ".gz"), np.asarray(images).reshape(-1, *IMAGE_SHAPE[:2]))
    write_idx(os.path.join(data_dir, label_stem + ".gz"), np.asarray(labels))
