"""What a run writes as it trains, from process 0: metrics (means since the previous record),
TensorBoard, progress, sample grids, evaluations and the plots redrawn from those files.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import numpy as np

from gan_jax.model import inference
from gan_jax.reporting import pictures
from gan_jax.reporting.metrics_log import MeanMetrics, MetricsWriter
from gan_jax.reporting.progress import Progress
from gan_jax.training.spec import GANSpec
from gan_jax.training.state import seed_keys

CLASS_GRID_COLUMNS = 8  # noise vectors per class in a conditional run's grid
LOG_WINDOW = "log_window"  # a checkpoint's record of the metrics logged at the next log step


def fixed_grid_inputs(config, key) -> tuple[np.ndarray, np.ndarray | None, tuple[int, int]]:
    """The noise (and labels) of the sample grid a run renders all run long, and its (rows, cols).

    Unconditional: an 8x8 grid of independent noise. Conditional: a class grid (one row per class,
    the same noise in every row; `inference.class_grid`).
    """
    num_classes = config.model.num_classes
    if not num_classes:
        noise = jax.random.normal(key, (pictures.GRID[0] * pictures.GRID[1], config.latent_dim))
        return np.asarray(noise), None, pictures.GRID
    noise, labels = inference.class_grid(
        np.asarray(jax.random.normal(key, (CLASS_GRID_COLUMNS, config.latent_dim))), num_classes)
    return noise, labels, (num_classes, CLASS_GRID_COLUMNS)


class RunOutputs:
    """What process 0 writes as training goes: metrics, progress, sample grids, evaluations, plots.

    Args (of the constructor):
      config, workdir: the run's.
      spec: its networks (for the sample grids).
      start_step, total_steps, steps_per_epoch: where the run stands.
      show_progress: a progress bar or log line per record (a sweep shows one line for all runs).
      evaluate: `evaluate(host_state) -> {"eval_fid": ...}`, called at config.eval_every; None: off.
    """

    def __init__(self, config, workdir: str, spec: GANSpec, start_step: int, total_steps: int,
                 steps_per_epoch: int, show_progress: bool = True,
                 evaluate: Callable[[Any], dict[str, float]] | None = None):
        self._config, self._workdir, self._spec = config, workdir, spec
        self._steps_per_epoch = steps_per_epoch
        self._fixed_noise, self._fixed_labels, self._grid = fixed_grid_inputs(
            config, seed_keys(config.seed)["sample_noise"])
        self._samples_dir = os.path.join(workdir, "samples")
        self._writer = MetricsWriter(workdir, start_step=start_step)
        self._progress = Progress(start_step, total_steps, steps_per_epoch) if show_progress else None
        self.last_record: dict | None = None  # the newest record with losses
        self._means = MeanMetrics()
        self._evaluate = evaluate

    def add(self, step_metrics: list[dict[str, np.ndarray]]) -> None:
        """Metrics of steps not yet logged: the next log line reports their mean."""
        self._means.add(step_metrics)

    def checkpoint_extra(self) -> dict:
        """Saved with a checkpoint: the sums of the metrics not yet logged. Everything logged so far
        is flushed first, so a run killed after the checkpoint resumes with all of it on disk."""
        self._writer.flush()
        return {LOG_WINDOW: self._means.state()}

    def resume(self, extra: dict) -> None:
        """Continues the log window a checkpoint saved (none for checkpoints of older versions)."""
        self._means.restore(extra.get(LOG_WINDOW))

    def progress(self, step: int) -> None:
        if self._progress:
            self._progress.update(step, None)

    def write(self, step: int, steps_per_s: float | None, host_state, log: bool, evaluate: bool) -> None:
        """The metrics record of `step`: the means since the last log line, and/or an evaluation."""
        record = {"epoch": (step - 1) // self._steps_per_epoch + 1}
        if log:
            record.update(self._means.pop())
            record["steps_per_s"] = steps_per_s
        if evaluate and self._evaluate:
            record.update(self._evaluate(host_state))
        self._writer.write(step, record)
        if log:
            self.last_record = record
        if self._progress:
            self._progress.update(step, record)

    def sample(self, step: int, host_state) -> None:
        """The grid of G (the EMA generator when there is one) on the run's fixed inputs; a
        self-conditioned G's rows are its clusters in their current proportions."""
        labels = self._fixed_labels
        if host_state.clusters is not None:
            labels = inference.share_labels(host_state.clusters.counts, len(self._fixed_noise),
                                            grouped=True)
        samples = inference.generate_images(self._spec.generator, host_state.sampling_variables(),
                                            self._fixed_noise, labels)
        grid = pictures.image_grid(pictures.to_uint8(samples), *self._grid)
        pictures.save_grid_image(grid, os.path.join(self._samples_dir, f"step_{step:07d}.png"))
        self._writer.write_image(step, "samples", grid)

    def close(self) -> None:
        if self._progress:
            self._progress.close()
        self._writer.close()

    def plot(self) -> None:
        """losses.png, quality.png (with eval_every) and progress.gif, all redrawn from the files."""
        pictures.save_loss_curves(self._writer.path, os.path.join(self._workdir, "losses.png"))
        if self._config.eval_every:
            pictures.save_quality_curves(self._writer.path, os.path.join(self._workdir, "quality.png"))
        pictures.save_progress_gif(self._samples_dir, os.path.join(self._workdir, "progress.gif"))
