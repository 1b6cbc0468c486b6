"""`python -m gan_jax.sample`: images from a run's checkpoint, as a grid PNG and/or a .npy array.

    python -m gan_jax.sample --workdir runs/mnist --num 64 --out grid.png [--seed S] [--npy FILE] [--step N]
    python -m gan_jax.sample --workdir runs/mnist --interpolate --out strip.png [--num 10] [--seed S]
    python -m gan_jax.sample --workdir runs/mnist_conditional --label 7 --num 64 --out sevens.png
    python -m gan_jax.sample --workdir runs/mnist_conditional --class_grid --num 8 --out classes.png

G runs in inference mode (BatchNorm running statistics) on z ~ N(0, 1) drawn from `--seed`, so the same
checkpoint and seed give the same images, byte for byte. A run that keeps an EMA of G's weights
(`config.ema_decay > 0`) samples from the EMA generator; `--noema` picks the raw one. The grid has
ceil(sqrt(num)) columns and as many rows as needed; cells past `num` stay black. The .npy holds uint8
(num, 28, 28, 1) pixels, which `python -m gan_jax.evaluate --samples` scores.

A conditional run (`model.num_classes > 0`) draws the class `--label` asks for; without it, the
classes in turn (0, 1, 2, ...). `--class_grid` renders one row per class and `--num` columns, the same
noise in every row. Its `--npy FILE.npy` is written with the labels beside it, `FILE.labels.npy`
(int32, (num,)), which `gan_jax.evaluate --samples FILE.npy --labels FILE.labels.npy` reads. Asking an
unconditional run for a label or a class grid, or for a class it does not have, is a one-line error.

`--interpolate` renders one row of `--num` (default 10) images along the great circle from the latent
of `--seed` to that of `--seed + 1` (spherical interpolation: z ~ N(0, 1) in 100 dimensions lies near a
sphere, and a straight line between two such points passes through its inside, where G saw no noise).
Its ends are the first image `--num 1` draws with each of the two seeds. A conditional run
interpolates within the class of `--label`, which it then needs.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np

from gan_jax import cli, plots
from gan_jax.errors import UserError
from gan_jax.files import atomic_write
from gan_jax.runs import RestoredRun, balanced_labels, generate_images, latent_noise, load_run

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
    start = latent_noise(seed, 1, latent_dim)[0]
    end = latent_noise(seed + 1, 1, latent_dim)[0]
    return slerp(start, end, np.linspace(0.0, 1.0, num))


def sample_labels(restored: RestoredRun, num: int, label: int | None, class_grid: bool,
                  interpolate: bool) -> np.ndarray | None:
    """The classes to draw (int32, one per image) for a conditional run; None for an unconditional one.

    Raises:
      UserError: a label or class grid asked of an unconditional run, a class the run lacks, or an
        interpolation of a conditional run without --label.
    """
    num_classes = restored.config.model.num_classes
    if not num_classes:
        if label is not None or class_grid:
            raise UserError(f"--{'label' if label is not None else 'class_grid'} needs a conditional "
                            f"run; {restored.workdir} was trained without classes (model.num_classes=0)")
        return None
    if label is not None and not 0 <= label < num_classes:
        raise UserError(f"--label={label}; the run has the classes 0 to {num_classes - 1}")
    if class_grid:
        return np.repeat(np.arange(num_classes, dtype=np.int32), num)
    if label is not None:
        return np.full(num, label, np.int32)
    if interpolate:
        raise UserError("--interpolate of a conditional run needs --label: it interpolates within a class")
    return balanced_labels(num, num_classes)


def sample_images(restored: RestoredRun, num: int, seed: int, interpolate: bool = False,
                  use_ema: bool = True, label: int | None = None,
                  class_grid: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
    """G's images for a restored run: float32 (N, 28, 28, 1) in [-1, 1], and their labels.

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
    labels = sample_labels(restored, num, label, class_grid, interpolate)
    noise = (interpolation_noise(seed, num, latent_dim) if interpolate
             else latent_noise(seed, num, latent_dim))
    if class_grid:
        noise = np.tile(noise, (restored.config.model.num_classes, 1))
    return generate_images(restored.gan, restored.generator_variables(use_ema), noise, labels), labels


def save_images_png(images: np.ndarray, path: str, rows: int, cols: int) -> None:
    """Saves images in [-1, 1] as a rows x cols grid PNG, black cells after the last image."""
    blank = np.full((rows * cols - len(images), *images.shape[1:]), -1.0, np.float32)
    plots.save_grid(np.concatenate([images, blank]), path, rows=rows, cols=cols)


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


def _check_output(path: str) -> str:
    """Creates the folder of an output file, so bad paths fail before any work is done."""
    path = os.path.abspath(path)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    except OSError as e:
        raise UserError(f"cannot create the folder of {path}: {e.strerror or e}") from None
    if os.path.isdir(path):
        raise UserError(f"{path} is a folder; give a file name")
    return path


def run(*, workdir: str | None, out: str | None = None, npy: str | None = None, num: int | None = None,
        seed: int = 0, step: int | None = None, interpolate: bool = False, use_ema: bool = True,
        label: int | None = None, class_grid: bool = False) -> int:
    """The command line's work, given its flags; returns the exit status.

    Bad input prints one line "error: ..." on stderr and returns 1.
    """
    try:
        if not workdir:
            raise UserError("--workdir is required: the training run to sample from")
        if not out and not npy:
            raise UserError("nothing to write: give --out FILE.png and/or --npy FILE.npy")
        if interpolate and class_grid:
            raise UserError("give one of --interpolate and --class_grid")
        if num is None:
            num = (DEFAULT_INTERPOLATION_STEPS if interpolate else
                   DEFAULT_CLASS_GRID_COLUMNS if class_grid else DEFAULT_NUM)
        if num < (2 if interpolate else 1):
            raise UserError(f"--num={num}; an interpolation needs at least 2 images, a grid 1")
        out, npy = (_check_output(p) if p else None for p in (out, npy))
        restored = load_run(workdir, step)
        images, labels = sample_images(restored, num, seed, interpolate, use_ema, label, class_grid)
        written = []
        try:
            if out:
                rows, cols = ((1, num) if interpolate else (len(images) // num, num) if class_grid
                              else grid_shape(num))
                save_images_png(images, out, rows, cols)
                written.append(out)
            if npy:
                save_npy(plots.to_uint8(images), npy)
                written.append(npy)
                if labels is not None:
                    save_npy(labels, labels_path(npy))
                    written.append(labels_path(npy))
        except OSError as e:
            raise UserError(f"cannot write {e.filename or 'the output'}: {e.strerror or e}") from None
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    what = "interpolation" if interpolate else "class grid" if class_grid else "sample"
    of_class = f" of class {label}" if label is not None else ""
    print(f"{len(images)}-image {what}{of_class} of step {restored.step}, "
          f"{restored.generator_name(use_ema)} generator (seed {seed}): {', '.join(written)}",
          file=sys.stderr)
    return 0


def main(argv: list[str]) -> int:
    del argv  # cli.parse_flags refuses leftovers
    cli.setup_logging()
    f = _FLAGS
    return run(workdir=f.workdir, out=f.out, npy=f.npy, num=f.num, seed=f.seed, step=f.step,
               interpolate=f.interpolate, use_ema=f.ema, label=f.label, class_grid=f.class_grid)


def _define_flags():
    from absl import flags
    flags.DEFINE_string("workdir", None, "The training run to sample from.")
    flags.DEFINE_integer("num", None, f"Images to draw (default {DEFAULT_NUM}; with --interpolate, "
                         f"points along the path, default {DEFAULT_INTERPOLATION_STEPS}).")
    flags.DEFINE_string("out", None, "Write the images as a grid PNG (one row with --interpolate).")
    flags.DEFINE_string("npy", None, "Write the images as uint8 (num, 28, 28, 1) to this .npy file.")
    flags.DEFINE_integer("seed", 0, "Seeds the noise; the same seed draws the same images.")
    flags.DEFINE_integer("step", None, "The checkpoint's step (default: the latest).")
    flags.DEFINE_bool("interpolate", False, "A latent interpolation, seed to seed + 1, instead.")
    flags.DEFINE_bool("ema", True, "Sample from the EMA generator when the run keeps one (config."
                      "ema_decay > 0); --noema for the raw generator.")
    flags.DEFINE_integer("label", None, "A conditional run's class to draw (default: each in turn).")
    flags.DEFINE_bool("class_grid", False, "A conditional run's class grid: one row per class, --num "
                      "columns (default 8), the same noise in every row.")
    return flags.FLAGS


if __name__ == "__main__":
    from absl import app
    cli.request_deterministic_xla()
    _FLAGS = _define_flags()
    app.run(main, flags_parser=cli.parse_flags)
