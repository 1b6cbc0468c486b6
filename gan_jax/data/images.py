"""Users' own images: a folder of PNG/JPEG files (`data.source="folder"`) or one .npz array file
(`data.source="npz"`), as the uint8 (N, H, W, C) arrays every other source gives.

A folder holds `train/` and optionally `test/`; each holds either class subfolders (their names,
sorted, are the labels 0, 1, ..., as torchvision's ImageFolder) or the images themselves (unlabelled).
Grayscale files give 1 channel and colour ones 3 (`data.channels` converts); all must be one size,
or `data.image_size=N` resizes them to N x N. A folder is decoded once, with a progress bar, and
cached beside it as `.gan_jax_cache/<split>.npz`, keyed by every file's name, size and modification
time and by the conversion, so a changed folder is read again and a restart is not.

An .npz holds `images` (N, H, W) or (N, H, W, C) uint8, and optionally `labels` (N,) integers,
`test_images` and `test_labels`.

Bad files are one-line errors naming the file or the numbers: an empty folder, no images, a file
that is not an image or is cut short, mixed sizes without `image_size`, mixed channels without
`channels`, an empty class folder, labels that are not integers or do not fit the images.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile

import numpy as np

from gan_jax.data.idx import Split
from gan_jax.errors import DataError
from gan_jax.files import atomic_write

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CACHE_DIR = ".gan_jax_cache"
_CACHE_VERSION = 1  # bump when the decoding changes, so older caches are read again


def _image_files(folder: str) -> list[str]:
    return sorted(name for name in os.listdir(folder)
                  if name.lower().endswith(IMAGE_SUFFIXES) and os.path.isfile(os.path.join(folder, name)))


def folder_files(split_dir: str) -> tuple[list[str], np.ndarray | None, list[str]]:
    """The image files of a split folder in a fixed order, their labels (None without class
    subfolders) and the class names.

    Raises:
      DataError: no such folder, no images in it, an empty class folder, or images beside classes.
    """
    if not os.path.isdir(split_dir):
        raise DataError(f"{split_dir} is not a folder")
    classes = sorted(name for name in os.listdir(split_dir)
                     if os.path.isdir(os.path.join(split_dir, name)) and not name.startswith("."))
    loose = _image_files(split_dir)
    if classes and loose:
        raise DataError(f"{split_dir} holds both class folders ({', '.join(classes[:3])}...) and "
                        f"images ({loose[0]}...): keep the images in their class folders")
    if not classes:
        if not loose:
            raise DataError(f"{split_dir} holds no images (.png, .jpg or .jpeg)")
        return [os.path.join(split_dir, name) for name in loose], None, []
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = _image_files(os.path.join(split_dir, name))
        if not files:
            raise DataError(f"class folder {os.path.join(split_dir, name)} holds no images")
        paths += [os.path.join(split_dir, name, file) for file in files]
        labels += [label] * len(files)
    return paths, np.asarray(labels, np.int32), classes


def _decode(path: str, channels: int, image_size: int) -> np.ndarray:
    """One file as uint8 (H, W, C): its own channels (1 for grayscale, 3 for colour) unless
    `channels` converts them, its own size unless `image_size` resizes it."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            image.load()
            if channels:
                image = image.convert("L" if channels == 1 else "RGB")
            elif image.mode not in ("L", "RGB"):
                image = image.convert("L" if image.mode in ("1", "I", "I;16", "F", "LA", "P")
                                      and _is_gray(image) else "RGB")
            if image_size and image.size != (image_size, image_size):
                image = image.resize((image_size, image_size), Image.Resampling.LANCZOS)
            array = np.asarray(image, np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({' '.join(str(e).split())[:120]})") from None
    return array[..., None] if array.ndim == 2 else array


def _is_gray(image) -> bool:
    """Whether a palette or grayscale-with-alpha image holds only grays."""
    rgb = np.asarray(image.convert("RGB"), np.int16)
    return bool(np.all(rgb[..., 0] == rgb[..., 1]) and np.all(rgb[..., 1] == rgb[..., 2]))


def _fingerprint(split_dir: str, paths: list[str], channels: int, image_size: int) -> str:
    """What a decoded split depends on: each file's name (relative to the split folder, so a moved
    folder keeps its cache), size and modification time, and the conversion."""
    digest = hashlib.sha256(json.dumps([_CACHE_VERSION, channels, image_size]).encode())
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{os.path.relpath(path, split_dir)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _stack(arrays: list[np.ndarray], paths: list[str]) -> np.ndarray:
    """The decoded images as one array, or the one-line error naming the first that does not fit."""
    first = arrays[0].shape
    for array, path in zip(arrays, paths):
        if array.shape[:2] != first[:2]:
            raise DataError(f"{path} is {array.shape[1]}x{array.shape[0]} but {paths[0]} is "
                            f"{first[1]}x{first[0]}: set config.data.image_size to resize them")
        if array.shape[2] != first[2]:
            raise DataError(f"{path} has {array.shape[2]} channel(s) but {paths[0]} has {first[2]}: "
                            f"set config.data.channels to 1 or 3")
    return np.stack(arrays)


def load_folder_split(data_dir: str, split: str, channels: int = 0, image_size: int = 0,
                      progress: bool = True) -> Split | None:
    """`split` ("train" or "test") of an image folder, decoded or from its cache; None when the
    folder has no test/ (for "test").

    Raises:
      DataError: as the module says.
    """
    if not os.path.isdir(data_dir):
        raise DataError(f"data.dir {data_dir!r} is not a folder")
    split_dir = os.path.join(data_dir, split)
    if split == "test" and not os.path.isdir(split_dir):
        return None
    if not os.path.isdir(split_dir):
        raise DataError(f"{data_dir} has no {split}/ folder: put the images in {split_dir}")
    paths, labels, _ = folder_files(split_dir)
    fingerprint = _fingerprint(split_dir, paths, channels, image_size)
    cache = os.path.join(data_dir, CACHE_DIR, f"{split}.npz")
    cached = _read_cache(cache, fingerprint)
    if cached is not None:
        return cached
    iterator = paths
    if progress:
        from tqdm import tqdm
        iterator = tqdm(paths, desc=f"decoding {split_dir}", unit="image", leave=False)
    images = _stack([_decode(path, channels, image_size) for path in iterator], paths)
    result = Split(images, labels if labels is not None else np.zeros(0, np.int32))
    _write_cache(cache, fingerprint, result)
    return result


def _read_cache(path: str, fingerprint: str) -> Split | None:
    try:
        with np.load(path, allow_pickle=False) as cached:
            if str(cached["fingerprint"]) != fingerprint:
                return None
            return Split(cached["images"], cached["labels"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # absent, cut short or of another version: decode again


def _write_cache(path: str, fingerprint: str, split: Split) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, fingerprint=np.array(fingerprint), images=split.images, labels=split.labels)
    try:
        atomic_write(path, write)
    except Exception:  # noqa: BLE001  (a read-only data folder: decode again next time instead)
        pass


def load_npz_split(path: str, split: str) -> Split | None:
    """`split` of an .npz array file (`images`/`labels` for train, `test_images`/`test_labels` for
    test); None when it has no test images (for "test").

    Raises:
      DataError: an unreadable file, no `images`, images that are not uint8 (N, H, W[, C]), or labels
        that are not integers, one per image.
    """
    images_key, labels_key = ("images", "labels") if split == "train" else ("test_images", "test_labels")
    if not os.path.isfile(path):
        raise DataError(f"data.dir {path!r} is not a file (the npz source reads one .npz)")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise DataError(f"{path} is one array (.npy); expected an .npz with 'images'")
        with archive:
            names = archive.files
            images = archive[images_key] if images_key in names else None
            labels = archive[labels_key] if labels_key in names else None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"cannot read {path}: {' '.join(str(e).split())[:160]}") from None
    if images is None:
        if split == "test":
            return None
        raise DataError(f"{path} holds no 'images' array (it has: {', '.join(names) or 'nothing'})")
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3) or not len(images):
        raise DataError(f"{path}: '{images_key}' must be uint8 (N, H, W) or (N, H, W, 1 or 3), got "
                        f"{images.dtype} {images.shape}")
    if labels is None:
        return Split(images, np.zeros(0, np.int32))
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: '{labels_key}' must be integers, got {labels.dtype}")
    if labels.shape != (len(images),):
        raise DataError(f"{path}: '{labels_key}' has shape {labels.shape}, expected ({len(images)},): one "
                        f"per image")
    if len(labels) and labels.min() < 0:
        raise DataError(f"{path}: '{labels_key}' must be classes 0, 1, ..., got {labels.min()}")
    return Split(images, labels.astype(np.int32))


def convert(split: Split, channels: int, image_size: int, where: str) -> Split:
    """An array source's images with `channels` (1 or 3; 0 keeps them) and resized to `image_size`
    (0 keeps them), as a folder's are converted when decoded."""
    images = split.images
    if channels and images.shape[-1] != channels:
        if channels == 3:
            images = np.repeat(images, 3, axis=-1)
        else:  # ITU-R 601 luma, as Pillow's convert("L")
            images = np.round(images.astype(np.float32) @ np.array([0.299, 0.587, 0.114],
                                                                   np.float32))[..., None]
            images = np.clip(images, 0, 255).astype(np.uint8)
    if image_size and images.shape[1:3] != (image_size, image_size):
        from PIL import Image
        resized = []
        for image in images:
            picture = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)
            array = np.asarray(picture.resize((image_size, image_size), Image.Resampling.LANCZOS))
            resized.append(array[..., None] if array.ndim == 2 else array)
        images = np.stack(resized)
    if images is split.images:
        return split
    return Split(np.ascontiguousarray(images), split.labels)
