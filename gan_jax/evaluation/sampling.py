"""Drawing images from a trained run: independent samples, latent interpolations, a conditional
run's classes and class grids, and writing them as a grid picture or a .npy array (what
`gan_jax.sample` does; its docstring says how each is drawn).
"""

from __future__ import annotations

import math
import os

import numpy as np

from gan_jax.errors import UserError
from gan_jax.evaluation.restored import RestoredRun
from gan_jax.files import atomic_write
from gan_jax.model import inference
from gan_jax.reporting import pictures

DEFAULT_NUM = 64
DEFAULT_INTERPOLATION_STEPS = 10
DEFAULT_CLASS_GRID_COLUMNS = 8
# Below this angle between the endpoints sin(omega) is tiny and slerp divides rounding noise by it;
# the two interpolations agree there anyway.
_SLERP_MIN_ANGLE = 1e-4


def grid_shape(num: int) -> tuple[int, int]:
    """(rows, cols) of a near-square grid holding `num` images: ceil(sqrt(num)) columns."""
    cols = math.ceil(math.sqrt(num))
    return math.ceil(num / cols), cols


def slerp(z0: np.ndarray, z1: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Spherical interpolation between two vectors at each fraction in `t`.

    Args:
      z0, z1: the endpoints, (d,).
      t: fractions in [0, 1], (n,).

    Returns:
      (n, d) float32: z0 at t = 0 and z1 at t = 1 exactly, in between along the arc between them (for
      endpoints of equal norm every point keeps that norm); linear interpolation for (nearly) parallel
      endpoints.
    """
    z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
    t = np.asarray(t, np.float64)[:, None]
    cosine = np.dot(z0, z1) / (np.linalg.norm(z0) * np.linalg.norm(z1))
    omega = math.acos(float(np.clip(cosine, -1.0, 1.0)))
    if omega < _SLERP_MIN_ANGLE:
        return ((1 - t) * z0 + t * z1).astype(np.float32)
    path = (np.sin((1 - t) * omega) * z0 + np.sin(t * omega) * z1) / math.sin(omega)
    # Exact ends, not merely within rounding: the strip then starts and ends on the images the two
    # seeds draw.
    path[t[:, 0] == 0] = z0
    path[t[:, 0] == 1] = z1
    return path.astype(np.float32)


def interpolation_noise(seed: int, num: int, latent_dim: int) -> np.ndarray:
    """`num` latents from the first draw of `seed` to the first draw of `seed + 1`, (num, latent_dim)."""
    start = inference.latent_noise(seed, 1, latent_dim)[0]
    end = inference.latent_noise(seed + 1, 1, latent_dim)[0]
    return slerp(start, end, np.linspace(0.0, 1.0, num))


def requested_labels(restored: RestoredRun, num: int, label: int | None, class_grid: bool,
                  interpolate: bool) -> np.ndarray | None:
    """The classes to draw (int32, one per image) for a conditional run, or the clusters for a
    self-conditioned one (a "class" is then a cluster); None for an unconditional run.

    Raises:
      UserError: a label or class grid asked of an unconditional run, a class the run lacks, or an
        interpolation of a conditional run without --label.
    """
    num_classes = restored.spec.num_classes
    if not num_classes:
        if label is not None or class_grid:
            raise UserError(f"--{'label' if label is not None else 'class_grid'} needs a conditional "
                            f"run; {restored.workdir} was trained without classes (model.num_classes=0)")
        return None
    if label is not None and not 0 <= label < num_classes:
        raise UserError(f"--label={label}; the run has the classes 0 to {num_classes - 1}")
    if class_grid:
        return inference.class_grid(np.zeros((num, 1)), num_classes)[1]
    if label is not None:
        return np.full(num, label, np.int32)
    if interpolate:
        raise UserError("--interpolate of a conditional run needs --label: it interpolates within a class")
    return restored.generator_labels(num)


def sample_images(restored: RestoredRun, num: int, seed: int, interpolate: bool = False,
                  use_ema: bool = True, label: int | None = None,
                  class_grid: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """G's images for a restored run: float32 (N, height, width, channels) in [-1, 1], and their labels.

    Args:
      restored: the run and checkpoint to sample from (`runs.load_run`).
      num: how many images (with `interpolate`, the points along the path, >= 2; with `class_grid`,
        per class).
      seed: seeds the noise.
      interpolate: the spherical path between the latents of `seed` and `seed + 1` instead of
        independent draws.
      use_ema: sample from the EMA generator when the run keeps one; False for the raw generator.
      label: a conditional run's class to draw; None: the classes in turn.
      class_grid: every class, each with the same `num` noise vectors (rows of classes).

    Returns:
      (images in the order of the noise, their labels (int32) or None for an unconditional run).
    """
    latent_dim = restored.config.latent_dim
    labels = requested_labels(restored, num, label, class_grid, interpolate)
    noise = (interpolation_noise(seed, num, latent_dim) if interpolate
             else inference.latent_noise(seed, num, latent_dim))
    if class_grid:
        noise = inference.class_grid(noise, restored.spec.num_classes)[0]
    return (inference.generate_images(restored.spec.generator, restored.generator_variables(use_ema),
                                      noise, labels), labels)


def save_images_grid(images: np.ndarray, path: str, rows: int, cols: int) -> None:
    """Saves images in [-1, 1] as a rows x cols grid picture (the format `path`'s suffix names),
    black cells after the last image."""
    blank = np.full((rows * cols - len(images), *images.shape[1:]), -1.0, np.float32)
    pictures.save_grid(np.concatenate([images, blank]), path, rows=rows, cols=cols)


def labels_path(npy_path: str) -> str:
    """Where the labels of the images in `npy_path` go: FILE.npy -> FILE.labels.npy."""
    stem = npy_path[:-len(".npy")] if npy_path.endswith(".npy") else npy_path
    return stem + ".labels.npy"


def save_npy(array: np.ndarray, path: str) -> None:
    """Saves an array as .npy through a temporary file."""
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: np.save would append ".npy" to the name
            np.save(f, array)
    atomic_write(path, write)


def check_output(path: str) -> str:
    """Creates the folder of an output file, so bad paths fail before any work is done."""
    path = os.path.abspath(path)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the folder of {path}: {e.strerror or e}") from None
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder; give a file name")
    return path
