"""Pictures: sample grids, the loss curves (drawn from metrics.jsonl) and the progress GIF."""

from __future__ import annotations

import glob
import os

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers, and no GUI toolkit needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402  (Pillow ships with matplotlib)

from gan_jax.files import atomic_write  # noqa: E402
from gan_jax.logging_utils import read_metrics  # noqa: E402


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [-1, 1] -> uint8 in [0, 255]."""
    return np.round((np.clip(images, -1, 1) + 1) * 127.5).astype(np.uint8)


def image_grid(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """(rows*cols, h, w[, 1]) images -> one (rows*h, cols*w) array, row-major."""
    images = np.asarray(images)[: rows * cols]
    n, h, w = images.shape[:3]
    if n < rows * cols:
        raise ValueError(f"{n} images do not fill a {rows}x{cols} grid")
    return images.reshape(rows, cols, h, w).transpose(0, 2, 1, 3).reshape(rows * h, cols * w)


def save_grid(images: np.ndarray, path: str, rows: int = 8, cols: int = 8) -> None:
    """Saves images in [-1, 1] as a grayscale PNG grid, one pixel per pixel."""
    grid = image_grid(to_uint8(np.asarray(images)), rows, cols)
    atomic_write(path, lambda tmp: plt.imsave(tmp, grid, cmap="gray", vmin=0, vmax=255,
                                               format="png"))


def save_loss_curves(metrics_path: str, path: str) -> None:
    """Plots D and G loss against step from metrics.jsonl."""
    records = read_metrics(metrics_path)
    steps = [r["step"] for r in records]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, label in (("d_loss", "D loss"), ("g_loss", "G loss")):
        ax.plot(steps, [r[name] for r in records], label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)


def save_progress_gif(samples_dir: str, path: str, frame_ms: int = 200) -> None:
    """Animates the sample grids of samples_dir (step_XXXXXXX.png, in step order)."""
    frames = [Image.open(p).convert("L") for p in sorted(glob.glob(os.path.join(samples_dir, "step_*.png")))]
    if not frames:
        return
    atomic_write(path, lambda tmp: frames[0].save(tmp, format="GIF", save_all=True,
                                                   append_images=frames[1:], duration=frame_ms, loop=0))
