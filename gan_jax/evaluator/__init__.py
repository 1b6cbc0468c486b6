"""The shipped evaluator networks: fixed feature extractors and classifiers for GAN metrics.

`load("mnist")` or `load("fashion_mnist")` returns an `Evaluator` built from the weights shipped in
`gan_jax/evaluator/weights/` (package data, read through importlib.resources). Each `.msgpack` of
parameters comes with a `.json` that records how it was trained (`python -m gan_jax.evaluator.train`)
and its sha256, which `load` checks, so a corrupted or swapped weights file is refused rather than
silently giving other numbers.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import pathlib
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from gan_jax.config import DATASETS
from gan_jax.data.batches import to_model_range
from gan_jax.data.idx import IMAGE_SHAPE
from gan_jax.errors import ConfigError, DataError
from gan_jax.evaluation import quality
from gan_jax.evaluation.images import as_images
from gan_jax.evaluator.model import ARCHITECTURE, EvaluatorCNN, param_shapes

__all__ = ["DATASETS", "Evaluator", "load", "reference_stats", "softmax", "weights_files"]

DEFAULT_BATCH_SIZE = 1000


def weights_files(dataset: str) -> tuple[str, str]:
    """File names of the weights and metadata of `dataset`, inside the weights folder."""
    return f"{dataset}.msgpack", f"{dataset}.json"


class Evaluator:
    """A trained evaluator network with batched, jit-compiled forward passes.

    Every method takes images as (N, 28, 28, 1), either float in [-1, 1] (the generator's range) or
    uint8 in [0, 255] (converted with `to_model_range`), runs them through the network
    `batch_size` at a time and returns numpy arrays.
    """

    def __init__(self, params: Any, dataset: str = "", metadata: dict | None = None,
                 batch_size: int = DEFAULT_BATCH_SIZE):
        """Wraps parameters of `EvaluatorCNN`.

        Args:
          params: the network's `params` collection.
          dataset: the dataset it was trained on, for messages.
          metadata: the training record from the weights' json, if loaded from files.
          batch_size: the most images one forward pass sees, which bounds memory.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.model = EvaluatorCNN()
        self.params = jax.tree_util.tree_map(jnp.asarray, params)
        self.dataset = dataset
        self.metadata = dict(metadata or {})
        self.batch_size = batch_size
        # Parameters are an argument, not a closed-over constant: XLA would otherwise fold a megabyte
        # of weights into the compiled program.
        self._forward = jax.jit(self.apply)

    def apply(self, params: Any, images: jax.Array) -> tuple[jax.Array, jax.Array]:
        """The pure forward pass, usable inside the caller's own jit: (logits, features).

        Args:
          params: the network's `params` collection (usually `self.params`).
          images: float32 (N, 28, 28, 1) in [-1, 1].

        Returns:
          (logits (N, 10), features (N, 128)), float32.
        """
        return self.model.apply({"params": params}, images)

    def outputs(self, images: np.ndarray | jax.Array) -> tuple[np.ndarray, np.ndarray]:
        """Logits and penultimate features of `images` in one pass.

        Args:
          images: (N, 28, 28, 1), float in [-1, 1] or uint8.

        Returns:
          (logits (N, 10), features (N, 128)) as float32 numpy arrays.
        """
        images = as_images(np.asarray(images), "images", min_images=1)
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
                chunk = np.concatenate([chunk, np.zeros((batch - valid, *IMAGE_SHAPE), chunk.dtype)])
            chunk_logits, chunk_features = self._forward(self.params, chunk)
            logits.append(np.asarray(chunk_logits)[:valid])
            features.append(np.asarray(chunk_features)[:valid])
        return np.concatenate(logits), np.concatenate(features)

    def logits(self, images: np.ndarray | jax.Array) -> np.ndarray:
        """Class logits (N, 10), float32."""
        return self.outputs(images)[0]

    def features(self, images: np.ndarray | jax.Array) -> np.ndarray:
        """Penultimate-layer features (N, 128), float32: the space of FID, KID and precision/recall."""
        return self.outputs(images)[1]

    def probs(self, images: np.ndarray | jax.Array) -> np.ndarray:
        """Class probabilities (N, 10), float64, for the classifier score and class coverage."""
        return softmax(self.logits(images))


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
    if metadata.get("architecture") != ARCHITECTURE:
        raise DataError(f"evaluator weights for {dataset!r} are for architecture "
                        f"{metadata.get('architecture')!r}, this code has {ARCHITECTURE!r}")
    return metadata


def _restore_params(dataset: str, params_bytes: bytes) -> dict:
    """Decodes msgpack'd parameters and checks every array against the network's shapes."""
    try:
        params = flax.serialization.msgpack_restore(params_bytes)
    except Exception as e:  # msgpack raises several unrelated types on malformed input
        raise DataError(f"evaluator weights for {dataset!r} cannot be decoded: {e}") from None
    expected = param_shapes()
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
      dataset: one of `DATASETS` ("mnist", "fashion_mnist").
      weights_dir: a folder holding `<dataset>.msgpack` and `<dataset>.json`; None for the shipped ones.
      batch_size: the most images one forward pass sees.

    Returns:
      The `Evaluator`.

    Raises:
      ConfigError: unknown dataset.
      DataError: missing, corrupted or mismatched weights.
    """
    if dataset not in DATASETS:
        raise ConfigError(f"no evaluator for dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    params_bytes, meta_bytes = _read_weights(dataset, weights_dir)
    metadata = _check_metadata(dataset, params_bytes, meta_bytes)
    params = _restore_params(dataset, params_bytes)
    return Evaluator(params, dataset=dataset, metadata=metadata, batch_size=batch_size)


def reference_stats(evaluator: Evaluator, images: np.ndarray | jax.Array) -> quality.FeatureStats:
    """Feature mean and covariance (float64) of real images, the reference side of FID.

    One batched forward pass plus a (128, 128) covariance: a few seconds for a 10k test split on a CPU.
    Caching the result is the caller's concern.

    Args:
      evaluator: the evaluator whose feature space to use.
      images: (N, 28, 28, 1), float in [-1, 1] or uint8; N >= 2.

    Returns:
      `FeatureStats(mu (128,), sigma (128, 128))`.
    """
    return quality.feature_stats(evaluator.features(images))
