"""Pictures: sample grids, the loss and quality curves (drawn from metrics.jsonl), the progress GIF."""

from __future__ import annotations

import glob
import os

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers, and no GUI toolkit needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402  (Pillow ships with matplotlib)

from gan_jax.errors import UserError  # noqa: E402
from gan_jax.files import atomic_write  # noqa: E402
from gan_jax.reporting.metrics_log import read_metrics  # noqa: E402


GRID = (8, 8)  # rows and columns of the sample grids a run renders
# Picture formats a grid is written in, by the file's suffix.
IMAGE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}


def image_format(path: str) -> str:
    """The Pillow format `path`'s suffix names ("PNG", "JPEG").

    Raises:
      UserError: a suffix of another format, or none.
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in IMAGE_FORMATS:
        raise UserError(f"{path}: cannot write a picture as {suffix or 'a file without a suffix'}; "
                        f"name it {' or '.join(IMAGE_FORMATS)}")
    return IMAGE_FORMATS[suffix]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [-1, 1] -> uint8 in [0, 255]."""
    return np.round((np.clip(images, -1, 1) + 1) * 127.5).astype(np.uint8)


def image_grid(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(rows*cols, h, w[, c]) images -> one row-major grid picture: (rows*h, cols*w) for grayscale
    (one channel or none), (rows*h, cols*w, 3) for RGB."""
    images = np.asarray(images)[: rows * cols]
    if images.ndim == 3:
        images = images[..., None]
    n, h, w, c = images.shape
    if n < rows * cols:
        raise ValueError(f"{n} images do not fill a {rows}x{cols} grid")
    grid = images.reshape(rows, cols, h, w, c).transpose(0, 2, 1, 3, 4).reshape(rows * h, cols * w, c)
    return grid[..., 0] if c == 1 else grid


def save_grid(images: np.ndarray, path: str, rows: int = GRID[0], cols: int = GRID[1]) -> None:
    """Saves images in [-1, 1] as a grid picture, one pixel per pixel, in the format of `path`'s
    suffix (`image_format`)."""
    save_grid_image(image_grid(to_uint8(np.asarray(images)), rows, cols), path)


def save_grid_image(grid: np.ndarray, path: str) -> None:
    """Saves a uint8 (height, width) grayscale or (height, width, 3) RGB image, one pixel per pixel,
    in the format of `path`'s suffix (JPEG at quality 95: a grid of sharp strokes shows artifacts below
    that)."""
    form = image_format(path)
    options = {"quality": 95} if form == "JPEG" else {}
    atomic_write(path, lambda tmp: Image.fromarray(np.asarray(grid, np.uint8)).save(
        tmp, format=form, **options))


def _plot_curves(axis, records: list[dict], names_and_labels) -> None:
    """One line per metric against the step, over the records that hold it."""
    for name, label in names_and_labels:
        points = [(r["step"], r[name]) for r in records if name in r]
        if points:
            axis.plot(*zip(*points), label=label, marker="." if len(points) < 30 else None)
    axis.set_xlabel("step")
    axis.legend()
    axis.grid(alpha=0.3)


def _save_figure(fig, path: str) -> None:
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def save_loss_curves(metrics_path: str, path: str) -> None:
    """Plots D and G loss against step from metrics.jsonl: each point is the mean over the steps
    since the previous log line."""
    records = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    _plot_curves(ax, records, (("d_loss", "D loss"), ("g_loss", "G loss")))
    ax.set_ylabel("loss (mean since the previous point)")
    _save_figure(fig, path)


def save_quality_curves(metrics_path: str, path: str) -> None:
    """Plots the training-time evaluations of metrics.jsonl: FID (raw and EMA generator, log scale)
    and the classifier score against the step."""
    records = read_metrics(metrics_path)
    fig, (fid_ax, score_ax) = plt.subplots(1, 2, figsize=(11, 4.5))
    _plot_curves(fid_ax, records, (("eval_fid", "FID, raw G"), ("eval_fid_ema", "FID, EMA G")))
    fid_ax.set_yscale("log")
    fid_ax.set_ylabel("FID (lower is better)")
    _plot_curves(score_ax, records, (("eval_score", "score, raw G"), ("eval_score_ema", "score, EMA G")))
    score_ax.set_ylabel("classifier score (higher is better, at most 10)")
    _save_figure(fig, path)


def save_progress_gif(samples_dir: str, path: str, frame_ms: int = 200) -> None:
    """Animates the sample grids of samples_dir (step_XXXXXXX.png, in step order)."""
    # Each frame as it was saved: "L" for grayscale grids, "RGB" for colour ones.
    frames = [Image.open(p) for p in sorted(glob.glob(os.path.join(samples_dir, "step_*.png")))]
    if not frames:
        return
    atomic_write(path, lambda tmp: frames[0].save(tmp, format="GIF", save_all=True,
                                                   append_images=frames[1:], duration=frame_ms, loop=0))
