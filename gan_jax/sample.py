"""`python -m gan_jax.sample`: images from a run's checkpoint, as a grid PNG and/or a .npy array.

    python -m gan_jax.sample --workdir runs/mnist --num 64 --out grid.png [--seed S] [--npy FILE] [--step N]
    python -m gan_jax.sample --workdir runs/mnist --interpolate --out strip.png [--num 10] [--seed S]
    python -m gan_jax.sample --workdir runs/mnist_conditional --label 7 --num 64 --out sevens.png
    python -m gan_jax.sample --workdir runs/mnist_conditional --class_grid --num 8 --out classes.png

G runs in inference mode (BatchNorm running statistics) on z ~ N(0, 1) drawn from `--seed`, so the same
checkpoint and seed give the same images, byte for byte. A run that keeps an EMA of G's weights
(`config.ema_decay > 0`) samples from the EMA generator; `--noema` picks the raw one. The grid has
ceil(sqrt(num)) columns and as many rows as needed; cells past `num` stay black. The .npy holds uint8
(num, height, width, channels) pixels ((num, 28, 28, 1) for MNIST), which `python -m gan_jax.evaluate
--samples` scores.

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

import sys

from absl import flags

from gan_jax import cli
from gan_jax.errors import UserError
from gan_jax.evaluation import sampling
from gan_jax.evaluation.restored import load_run
from gan_jax.reporting import pictures
from gan_jax.evaluation.sampling import (DEFAULT_CLASS_GRID_COLUMNS, DEFAULT_INTERPOLATION_STEPS,
                                         DEFAULT_NUM)


def sample(*, workdir: str | None, out: str | None = None, npy: str | None = None,
           num: int | None = None, seed: int = 0, step: int | None = None, interpolate: bool = False,
           use_ema: bool = True, label: int | None = None, class_grid: bool = False) -> str:
    """The command's work, given its flags: draws the images, writes them, returns what it wrote.

    Raises:
      UserError: flags that do not go together, no run or checkpoint, or an unwritable output.
    """
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
    if out:
        pictures.image_format(out)  # a picture format we write, before any work is done
    out, npy = (sampling.check_output(p) if p else None for p in (out, npy))
    restored = load_run(workdir, step)
    images, labels = sampling.sample_images(restored, num, seed, interpolate, use_ema, label, class_grid)
    written = []
    if out:
        rows, cols = ((1, num) if interpolate else (len(images) // num, num) if class_grid
                      else sampling.grid_shape(num))
        sampling.save_images_grid(images, out, rows, cols)
        written.append(out)
    if npy:
        sampling.save_npy(pictures.to_uint8(images), npy)
        written.append(npy)
        if labels is not None:
            sampling.save_npy(labels, sampling.labels_path(npy))
            written.append(sampling.labels_path(npy))
    what = "interpolation" if interpolate else "class grid" if class_grid else "sample"
    of_class = f" of class {label}" if label is not None else ""
    return (f"{len(images)}-image {what}{of_class} of step {restored.step}, "
            f"{restored.generator_name(use_ema)} generator (seed {seed}): {', '.join(written)}")


def main(argv: list[str]) -> int:
    del argv  # cli.parse_flags refuses leftovers
    cli.setup_logging()
    f = flags.FLAGS

    def body() -> None:
        print(sample(workdir=f.workdir, out=f.out, npy=f.npy, num=f.num, seed=f.seed, step=f.step,
                     interpolate=f.interpolate, use_ema=f.ema, label=f.label, class_grid=f.class_grid),
              file=sys.stderr)
    return cli.run(body)


def _define_flags() -> None:
    flags.DEFINE_string("workdir", None, "The training run to sample from.")
    flags.DEFINE_integer("num", None, f"Images to draw (default {DEFAULT_NUM}; with --interpolate, "
                         f"points along the path, default {DEFAULT_INTERPOLATION_STEPS}).")
    flags.DEFINE_string("out", None, "Write the images as a grid picture: .png, or .jpg/.jpeg (one "
                        "row with --interpolate).")
    flags.DEFINE_string("npy", None, "Write the images as uint8 (num, height, width, channels) to this "
                        ".npy file.")
    flags.DEFINE_integer("seed", 0, "Seeds the noise; the same seed draws the same images.")
    flags.DEFINE_integer("step", None, "The checkpoint's step (default: the latest).")
    flags.DEFINE_bool("interpolate", False, "A latent interpolation, seed to seed + 1, instead.")
    flags.DEFINE_bool("ema", True, "Sample from the EMA generator when the run keeps one (config."
                      "ema_decay > 0); --noema for the raw generator.")
    flags.DEFINE_integer("label", None, "A conditional run's class to draw (default: each in turn).")
    flags.DEFINE_bool("class_grid", False, "A conditional run's class grid: one row per class, --num "
                      "columns (default 8), the same noise in every row.")


def run_from_command_line() -> None:
    """`python -m gan_jax.sample` and the console script `gan-jax-sample`."""
    cli.start(main, _define_flags, deterministic=True)


if __name__ == "__main__":
    run_from_command_line()
