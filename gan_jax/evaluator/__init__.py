"""The evaluator networks: fixed feature extractors and classifiers for GAN metrics.

`load("mnist")` or `load("fashion_mnist")` returns an `Evaluator` built from the weights shipped in
`gan_jax/evaluator/weights/` (package data, read through importlib.resources); `load_folder(DIR)` one
that `python -m gan_jax.evaluator.train` trained on a user's own images and wrote to DIR. Each
`.msgpack` of parameters comes with a `.json` that records how it was trained, on what image shape and
classes, and its sha256, which loading checks, so a corrupted or swapped weights file is refused rather
than silently giving other numbers.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import os
import pathlib
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from gan_jax.config import KNOWN_DATASETS
from gan_jax.data.batches import to_model_range
from gan_jax.data.idx import IMAGE_SHAPE
from gan_jax.errors import ConfigError, DataError
from gan_jax.evaluation import quality
from gan_jax.evaluation.images import as_images
from gan_jax.evaluator.model import NUM_CLASSES, EvaluatorCNN, architecture, param_shapes

__all__ = ["KNOWN_DATASETS", "Evaluator", "load", "load_folder", "reference_stats", "softmax",
           "weights_files"]

DEFAULT_BATCH_SIZE = 1000


def weights_files(dataset: str) -> tuple[str, str]:
    """File names of the weights and metadata of `dataset`, inside the weights folder."""
    return f"{dataset}.msgpack", f"{dataset}.json"


class Evaluator:
    """A trained evaluator network with batched, jit-compiled forward passes.

    Every method takes images as (N, *image_shape) (28x28x1 for the shipped ones), either float in
    [-1, 1] (the generator's range) or uint8 in [0, 255] (converted with `to_model_range`), runs them
    through the network `batch_size` at a time and returns numpy arrays.
    """

    def __init__(self, params: Any, dataset: str = "", metadata: dict | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE):
        """Wraps parameters of `EvaluatorCNN`.

        Args:
          params: the network's `params` collection.
          dataset: the dataset it was trained on, for messages.
          metadata: the training record from the weights' json, if loaded from files; its
            "image_shape" and "num_classes" (default 28x28x1 and 10) say what the network takes.
          batch_size: the most images one forward pass sees, which bounds memory.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.metadata = dict(metadata or {})
        self.image_shape, self.num_classes = network_shape(self.metadata)
        self.model = EvaluatorCNN(num_classes=self.num_classes)
        self.params = jax.tree_util.tree_map(jnp.asarray, params)
        self.dataset = dataset
        self.batch_size = batch_size
        # Parameters are an argument, not a closed-over constant: XLA would otherwise fold a megabyte
        # of weights into the compiled program.
        self._forward = jax.jit(self.apply)

    def apply(self, params: Any, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The pure forward pass, usable inside the caller's own jit: (logits, features).

        Args:
          params: the network's `params` collection (usually `self.params`).
          images: float32 (N, *image_shape) in [-1, 1].

        Returns:
          (logits (N, num_classes), features (N, 128)), float32.
        """
        return self.model.apply({"params": params}, images)

    def outputs(self, images: np.ndarray | jax.Array) -> tuple[np.ndarray, np.ndarray]:
        """Logits and penultimate features of `images` in one pass.

        Args:
          images: (N, *image_shape), float in [-1, 1] or uint8.

        Returns:
          (logits (N, num_classes), features (N, 128)) as float32 numpy arrays.
        """
        images = as_images(np.asarray(images), "images", min_images=1, shape=self.image_shape)
        if images.dtype == np.uint8:
            images = np.asarray(to_model_range(images))
        n = images.shape[0]
        # Every pass sees the same shape, the last batch padded, so one compilation serves any N.
        batch = min(self.batch_size, n)
        logits, features = [], []
        for start in range(0, n, batch):
            chunk = images[start:start + batch]
            valid = chunk.shape[0]
            if valid < batch:
                chunk = np.concatenate([chunk, np.zeros((batch - valid, *self.image_shape), chunk.dtype)])
            chunk_logits, chunk_features = self._forward(self.params, chunk)
            logits.append(np.asarray(chunk_logits)[:valid])
            features.append(np.asarray(chunk_features)[:valid])
        return np.concatenate(logits), np.concatenate(features)

    def logits(self, images: np.ndarray | jax.Array) -> np.ndarray:
        """Class logits (N, num_classes), float32."""
        return self.outputs(images)[0]

    def features(self, images: np.ndarray | jax.Array) -> np.ndarray:
        """Penultimate-layer features (N, 128), float32: the space of FID, KID and precision/recall."""
        return self.outputs(images)[1]

    def probs(self, images: np.ndarray | jax.Array) -> np.ndarray:
        """Class probabilities (N, num_classes), float64, for the classifier score and class
        coverage."""
        return softmax(self.logits(images))


def network_shape(metadata: dict) -> tuple[tuple[int, int, int], int]:
    """(image shape, number of classes) a training record names; the shipped evaluators' (28x28x1,
    10) for records written before other shapes existed."""
    return tuple(metadata.get("image_shape", IMAGE_SHAPE)), int(metadata.get("num_classes", NUM_CLASSES))


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64, shifted by the row maximum so that exp cannot overflow."""
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _read_weights(dataset: str, weights_dir: str | None) -> tuple[bytes, bytes]:
    """The raw bytes of the weights and metadata files, from `weights_dir` or the package."""
    params_name, meta_name = weights_files(dataset)
    if weights_dir is None:
        # importlib.resources works wherever the package is installed (a wheel, a zip, a checkout).
        folder = importlib.resources.files(__name__).joinpath("weights")
        where = f"the package's weights ({__name__}/weights)"
    else:
        folder = pathlib.Path(weights_dir)
        where = weights_dir
    try:
        return folder.joinpath(params_name).read_bytes(), folder.joinpath(meta_name).read_bytes()
    except OSError as e:
        raise DataError(f"evaluator weights for {dataset!r} missing from {where}: {e}") from None


def _check_metadata(dataset: str, params_bytes: bytes, meta_bytes: bytes) -> dict:
    """Parses the metadata and checks it belongs to these weights, this dataset and this network."""
    try:
        metadata = json.loads(meta_bytes)
    except ValueError as e:
        raise DataError(f"evaluator metadata for {dataset!r} is not valid JSON: {e}") from None
    digest = hashlib.sha256(params_bytes).hexdigest()
    if metadata.get("params_sha256") != digest:
        raise DataError(f"evaluator weights for {dataset!r} have sha256 {digest}, but the metadata records "
                        f"{metadata.get('params_sha256')} (corrupted or mismatched files)")
    if metadata.get("dataset") != dataset:
        raise DataError(f"evaluator metadata says dataset {metadata.get('dataset')!r}, expected {dataset!r}")
    try:
        expected = architecture(*network_shape(metadata))
    except (TypeError, ValueError):
        raise DataError(f"evaluator metadata for {dataset!r} has an unreadable image_shape or "
                        f"num_classes") from None
    if metadata.get("architecture") != expected:
        raise DataError(f"evaluator weights for {dataset!r} are for architecture "
                        f"{metadata.get('architecture')!r}, this code has {expected!r}")
    return metadata


def _restore_params(dataset: str, params_bytes: bytes, metadata: dict) -> dict:
    """Decodes msgpack'd parameters and checks every array against the network's shapes."""
    try:
        params = flax.serialization.msgpack_restore(params_bytes)
    except Exception as e:  # msgpack raises several unrelated types on malformed input
        raise DataError(f"evaluator weights for {dataset!r} cannot be decoded: {e}") from None
    image_shape, num_classes = network_shape(metadata)
    expected = param_shapes(EvaluatorCNN(num_classes=num_classes), image_shape)
    got_structure = jax.tree_util.tree_structure(params)
    if got_structure != jax.tree_util.tree_structure(expected):
        raise DataError(f"evaluator weights for {dataset!r} do not have the network's parameter tree")
    for (path, want), have in zip(jax.tree_util.tree_leaves_with_path(expected),
                                  jax.tree_util.tree_leaves(params)):
        if tuple(have.shape) != tuple(want.shape) or have.dtype != want.dtype:
            raise DataError(f"evaluator weights for {dataset!r}: {jax.tree_util.keystr(path)} is "
                            f"{have.dtype}{list(have.shape)}, expected {want.dtype}{list(want.shape)}")
    return params


def load(dataset: str, weights_dir: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE) -> Evaluator:
    """Loads the evaluator trained on `dataset`, verifying the weights' sha256.

    Args:
      dataset: one of `KNOWN_DATASETS` ("mnist", "fashion_mnist"), or the name an evaluator
        folder's files have.
      weights_dir: a folder holding `<dataset>.msgpack` and `<dataset>.json`; None for the shipped ones.
      batch_size: the most images one forward pass sees.

    Returns:
      The `Evaluator`.

    Raises:
      ConfigError: unknown dataset.
      DataError: missing, corrupted or mismatched weights.
    """
    if weights_dir is None and dataset not in KNOWN_DATASETS:
        raise ConfigError(f"no shipped evaluator for dataset {dataset!r} (there are: "
                          f"{', '.join(KNOWN_DATASETS)}); for your own images train one with "
                          f"python -m gan_jax.evaluator.train and name its folder")
    params_bytes, meta_bytes = _read_weights(dataset, weights_dir)
    metadata = _check_metadata(dataset, params_bytes, meta_bytes)
    params = _restore_params(dataset, params_bytes, metadata)
    return Evaluator(params, dataset=dataset, metadata=metadata, batch_size=batch_size)


def load_folder(folder: str, batch_size: int = DEFAULT_BATCH_SIZE) -> Evaluator:
    """Loads the evaluator `python -m gan_jax.evaluator.train --out FOLDER` wrote: the one
    `<name>.json` with its `<name>.msgpack` in `folder`, verified as `load` verifies the shipped ones.

    Raises:
      DataError: no such folder, no evaluator in it (or several), or missing, corrupted or mismatched
        weights.
    """
    if not os.path.isdir(folder):
        raise DataError(f"evaluator folder {folder} does not exist (train one with python -m "
                        f"gan_jax.evaluator.train ... --out {folder})")
    names = sorted(name[:-len(".json")] for name in os.listdir(folder) if name.endswith(".json")
                   and os.path.isfile(os.path.join(folder, name[:-len(".json")] + ".msgpack")))
    if len(names) != 1:
        found = f"{len(names)} ({', '.join(names)})" if names else "none"
        raise DataError(f"{folder} should hold one evaluator (NAME.json with NAME.msgpack); found {found}")
    return load(names[0], weights_dir=folder, batch_size=batch_size)


def reference_stats(evaluator: Evaluator, images: np.ndarray | jax.Array) -> quality.FeatureStats:
    """Feature mean and covariance (float64) of real images, the reference side of FID.

    One batched forward pass plus a (128, 128) covariance: a few seconds for a 10k test split on a CPU.
    Caching the result is the caller's concern.

    Args:
      evaluator: the evaluator whose feature space to use.
      images: (N, *evaluator.image_shape), float in [-1, 1] or uint8; N >= 2.

    Returns:
      `FeatureStats(mu (128,), sigma (128, 128))`.
    """
    return quality.feature_stats(evaluator.features(images))
