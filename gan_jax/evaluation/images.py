"""Images and labels handed to the evaluator by a user: read from .npy files and checked, so that a
wrong shape, dtype, range or class gets a one-line error naming the file instead of a wrong score.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gan_jax.errors import DataError
from gan_jax.data.idx import IMAGE_SHAPE
from gan_jax.evaluation.quality import PR_NEIGHBOURS

MIN_IMAGES = PR_NEIGHBOURS + 1  # a k-NN ball needs k other points of its own set
# Floats a little outside [-1, 1] are rounding; further out is a caller's mistake (uint8-range floats).
_RANGE_TOLERANCE = 1e-3
NUM_CLASSES = 10  # the shipped evaluators classify into the 10 classes of MNIST and of Fashion-MNIST


def as_images(array: Any, name: str = "samples", min_images: int = MIN_IMAGES,
              shape: tuple[int, int, int] = IMAGE_SHAPE) -> np.ndarray:
    """Checks images to score and returns them as (N, *shape), uint8 or float32 in [-1, 1].

    Args:
      array: (N, H, W, C) (or (N, H, W) for one channel) with (H, W, C) = `shape`, uint8 in [0, 255]
        or float in [-1, 1].
      name: what the images are, for messages.
      min_images: the fewest accepted (the metrics need MIN_IMAGES; the evaluator network one).
      shape: what the evaluator takes: 28x28x1 for the shipped ones.

    Returns:
      The images with a channel axis: uint8 as given, floats as float32.

    Raises:
      DataError: wrong type, shape or range, too few images, or NaN/infinite values.
    """
    if not isinstance(array, np.ndarray):
        raise DataError(f"{name} must be a numpy array, got {type(array).__name__}")
    shape = tuple(shape)
    if array.ndim == 3 and shape[2] == 1 and array.shape[1:] == shape[:2]:
        array = array[..., None]
    if array.ndim != 4 or array.shape[1:] != shape:
        gray = f"N x {shape[0]} x {shape[1]} or " if shape[2] == 1 else ""
        raise DataError(f"{name} must be {gray}N x {' x '.join(map(str, shape))}, got shape {array.shape}")
    if array.shape[0] < min_images:
        raise DataError(f"{name}: {array.shape[0]} image(s), at least {min_images} are needed")
    if array.dtype == np.uint8:
        return array
    if not np.issubdtype(array.dtype, np.floating):
        raise DataError(f"{name} must be uint8 in [0, 255] or float in [-1, 1], got dtype {array.dtype}")
    array = array.astype(np.float32, copy=False)
    low, high = float(array.min()), float(array.max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise DataError(f"{name} contain NaN or infinite values")
    if low < -1 - _RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        raise DataError(f"float {name} must lie in [-1, 1], got values in [{low:.4g}, {high:.4g}] "
                        f"(pixels in [0, 255] must be uint8)")
    return array


def as_labels(array: Any, count: int, name: str = "labels", num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Checks class labels of `count` images: integers in [0, num_classes), shape (count,); returns
    int32.

    Raises:
      DataError: not integers, another shape, or a class outside 0-9.
    """
    array = np.asarray(array) if array is not None else None
    if array is None or not np.issubdtype(array.dtype, np.integer):
        raise DataError(f"{name} must be integers, one class per image")
    if array.shape != (count,):
        raise DataError(f"{name} must have shape ({count},), one per image, got {array.shape}")
    if count and (array.min() < 0 or array.max() >= num_classes):
        raise DataError(f"{name} must be classes 0 to {num_classes - 1}, got {array.min()} to "
                        f"{array.max()}")
    return array.astype(np.int32)


def _load_array(path: str) -> np.ndarray:
    """The one array of a .npy file (no pickles: they run code)."""
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        array.close()
        raise DataError(f"{path} is an .npz archive; expected one array in a .npy file")
    return array


def load_labels(path: str) -> np.ndarray:
    """Reads a .npy of class labels (checked against the images by `evaluate_samples`)."""
    return _load_array(path)


def load_images(path: str, shape: tuple[int, int, int] = IMAGE_SHAPE) -> np.ndarray:
    """Reads a .npy file of images and checks it.

    Args:
      path: a .npy file holding one array, laid out as `as_images` accepts.
      shape: the images' (H, W, C), what the evaluator takes.

    Returns:
      The images, as `as_images` returns them.

    Raises:
      DataError: the file cannot be read, is not one array, or its images are unfit.
    """
    return as_images(_load_array(path), f"images in {path}", shape=shape)
