"""Where a run's metrics (its training losses and D's outputs, and its evaluations) go: the
metrics.jsonl file, the source of truth, and TensorBoard beside it.

Plots are drawn from metrics.jsonl (`gan_jax.reporting.pictures`), so they can be redrawn without
re-running.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from gan_jax.files import atomic_write


def read_metrics(path: str) -> list[dict[str, Any]]:
    """All records of a metrics.jsonl file, in order; [] when it does not exist."""
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class MeanMetrics:
    """Running sums of per-step metrics, so a log line reports the mean since the previous one.

    Only the sums are kept (in float64), not the steps' values: memory stays constant however far
    apart the log lines are.
    """

    def __init__(self):
        self._sums: dict[str, float] = {}
        self._count = 0

    def add(self, step_metrics: list[dict[str, Any]]) -> None:
        for metrics in step_metrics:
            for name, value in metrics.items():
                self._sums[name] = self._sums.get(name, 0.0) + float(value)
            self._count += 1

    def pop(self) -> dict[str, float]:
        """The mean of each metric over the steps added since the last pop; starts afresh."""
        means = {name: total / self._count for name, total in self._sums.items()}
        self._sums, self._count = {}, 0
        return means

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps, so a resumed run's next log line averages the same steps."""
        return {"count": self._count, "sums": dict(self._sums)}

    def restore(self, state: dict[str, Any] | None) -> None:
        """Continues from `state()`'s output; None (older checkpoints) starts afresh."""
        state = state or {"count": 0, "sums": {}}
        self._count, self._sums = int(state["count"]), {k: float(v) for k, v in state["sums"].items()}


class MetricsWriter:
    """Appends one JSON object per logged step to metrics.jsonl and mirrors scalars to TensorBoard."""

    def __init__(self, workdir: str, start_step: int):
        self.path = os.path.join(workdir, "metrics.jsonl")
        self._workdir, self._start_step = workdir, start_step
        self._truncate_after(start_step)
        self._writer = None  # opened at the first record: a start that trains nothing adds no file

    @property
    def _tensorboard(self):
        if self._writer is None:
            # Imported here: tensorboardX pulls in protobuf, which tests of other modules need not load.
            from tensorboardX import SummaryWriter
            # purge_step hides the events a previous, interrupted run wrote past the step we resume
            # from: TensorBoard drops those at steps >= purge_step. The checkpoint's own step was
            # logged before it was saved and is kept, so the purge starts one step later. Event files
            # are named by the second they open in: a start within the same second as the previous
            # one (a quick resume) would overwrite its file; the start step keeps them apart.
            self._writer = SummaryWriter(os.path.join(self._workdir, "tensorboard"),
                                         purge_step=self._start_step + 1,
                                         filename_suffix=f".from_step_{self._start_step}")
        return self._writer

    def _truncate_after(self, step: int) -> None:
        """Drops records past `step`, left by a run that logged beyond its last checkpoint.

        A resumed run then appends exactly what an uninterrupted run would have written.
        """
        records = read_metrics(self.path)
        kept = [r for r in records if r["step"] <= step]
        if len(kept) < len(records):
            def write(tmp: str) -> None:
                with open(tmp, "w") as f:
                    f.writelines(json.dumps(r) + "\n" for r in kept)
            atomic_write(self.path, write)

    def write(self, step: int, record: dict[str, Any]) -> None:
        record = {"step": step, **record}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for name, value in record.items():
            if name != "step" and isinstance(value, (int, float)):
                self._tensorboard.add_scalar(name, value, step)

    def write_image(self, step: int, name: str, image: np.ndarray) -> None:
        """An image, uint8 (height, width) grayscale or (height, width, 3) RGB, to TensorBoard."""
        self._tensorboard.add_image(name, image, step, dataformats="HW" if image.ndim == 2 else "HWC")

    def flush(self) -> None:
        """Puts every record so far on disk (the metrics file is; TensorBoard buffers)."""
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
