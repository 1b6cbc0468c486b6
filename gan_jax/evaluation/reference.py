"""The real side of every sample-quality comparison: an evaluator's features of a real test split,
with their mean and covariance, cached in the run's folder; and which evaluator that is.

They are the same for every evaluation of a run, so `reference_statistics` caches them in
`eval/reference_<dataset>.npz`, keyed by a hash of the test images and of the evaluator's weights:
another test set or evaluator recomputes them.
"""

from __future__ import annotations

import functools
import hashlib
import os
import zipfile
from typing import NamedTuple

import numpy as np

from gan_jax import evaluator as evaluator_lib
from gan_jax import files
from gan_jax.errors import DataError
from gan_jax.evaluation import quality

EVAL_DIR = "eval"  # inside a run's workdir: evaluations and the cached reference


class Reference(NamedTuple):
    """The real side of every comparison: evaluator features of the test split and their Gaussian."""

    features: np.ndarray  # (N, 128) float32
    stats: quality.FeatureStats  # mean (128,), covariance (128, 128), float64


@functools.lru_cache(maxsize=None)
def load_evaluator(dataset: str, folder: str = "") -> evaluator_lib.Evaluator:
    """The evaluator that scores images of `dataset`: the one trained into `folder` (`python -m
    gan_jax.evaluator.train`) when given, else the shipped one; loaded (and its forward pass
    compiled) once per process.

    Raises:
      DataError: no evaluator for a dataset of one's own without `folder`, or a bad folder.
    """
    if folder:
        return evaluator_lib.load_folder(folder)
    if dataset not in evaluator_lib.KNOWN_DATASETS:
        raise DataError(f"no shipped evaluator for data.name={dataset!r}: train one on your images "
                        f"(python -m gan_jax.evaluator.train --source folder --data_dir DIR --out "
                        f"EVALUATOR) and pass --evaluator EVALUATOR, or set config.evaluator")
    return evaluator_lib.load(dataset)


def check_fits(evaluator: evaluator_lib.Evaluator, image_shape: tuple[int, ...], what: str) -> None:
    """Refuses an evaluator trained on images of another shape than `what` has."""
    if tuple(evaluator.image_shape) != tuple(image_shape):
        have, want = ("x".join(map(str, shape)) for shape in (evaluator.image_shape, image_shape))
        raise DataError(f"the evaluator takes {have} images, but {what} are {want}: train one on "
                        f"these images (python -m gan_jax.evaluator.train)")


def reference_cache_path(workdir: str, dataset: str) -> str:
    """Where a run caches the reference statistics of its test split."""
    return os.path.join(workdir, EVAL_DIR, f"reference_{dataset}.npz")


def _fingerprint(evaluator: evaluator_lib.Evaluator, images: np.ndarray) -> str:
    """Identifies what reference statistics depend on: the exact test images and the evaluator weights."""
    digest = hashlib.sha256()
    digest.update(f"{images.dtype.str}{images.shape}".encode())
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(str(evaluator.metadata.get("params_sha256", "")).encode())
    return digest.hexdigest()


def _read_reference(path: str, fingerprint: str) -> Reference | None:
    """The cached reference at `path` if it exists and matches `fingerprint`, else None."""
    try:
        with np.load(path, allow_pickle=False) as cached:
            if str(cached["fingerprint"]) != fingerprint:
                return None
            return Reference(cached["features"], quality.FeatureStats(cached["mu"], cached["sigma"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # absent, truncated or from another version: recompute it


def _write_reference(path: str, fingerprint: str, reference: Reference) -> None:
    """Writes the cache through a per-process temporary file, so readers never see half of it."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, fingerprint=np.array(fingerprint), features=reference.features,
                     mu=reference.stats.mu, sigma=reference.stats.sigma)
    files.atomic_write(path, write)


def reference_statistics(evaluator: evaluator_lib.Evaluator, real_images: np.ndarray,
                         cache_path: str | None = None) -> Reference:
    """Evaluator features of the real images with their mean and covariance, cached in `cache_path`.

    Args:
      evaluator: the evaluator whose feature space to use.
      real_images: (N, *evaluator.image_shape), uint8 or float in [-1, 1] (checked by `as_images`
        first).
      cache_path: an .npz to read the result from, or to write it to when it is absent or holds the
        statistics of other images or of another evaluator; None computes without caching.

    Returns:
      The `Reference`.
    """
    if not cache_path:
        return _compute_reference(evaluator, real_images)
    fingerprint = _fingerprint(evaluator, real_images)
    reference = _read_reference(cache_path, fingerprint)
    if reference is None:
        reference = _compute_reference(evaluator, real_images)
        _write_reference(cache_path, fingerprint, reference)
    return reference


def _compute_reference(evaluator: evaluator_lib.Evaluator, real_images: np.ndarray) -> Reference:
    features = evaluator.features(real_images)
    return Reference(features, quality.feature_stats(features))
