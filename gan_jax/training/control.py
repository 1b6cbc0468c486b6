"""What steers the training loop: stopping on a signal (and every process agreeing to), the cadences,
the size of each call, steps/s, metrics brought to the host one call late, and the checks for
non-finite losses and parameters.
"""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Any, Callable

import jax
import numpy as np

from gan_jax.log import logger
from gan_jax.training import clusters as clusters_lib


class Interrupted(Exception):
    """Training was stopped by SIGTERM or Ctrl-C after saving a checkpoint; not an error."""

    def __init__(self, step: int, checkpoint_dir: str):
        super().__init__(f"interrupted at step {step}; checkpoint saved in {checkpoint_dir}")
        self.step = step


def all_finite(tree: Any) -> bool:
    """Whether every float in a host tree is finite."""
    return all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(tree)
               if np.issubdtype(np.asarray(leaf).dtype, np.floating))


def first_non_finite(window: list[dict[str, np.ndarray]],
                     first_step: int) -> tuple[int, str, float] | None:
    """(step, metric, value) of the first NaN or infinite loss in a window of per-step metrics."""
    for offset, metrics in enumerate(window):
        for name in ("d_loss", "g_loss"):
            if not np.isfinite(metrics[name]):
                return first_step + offset, name, float(metrics[name])
    return None


def any_process(flag: bool) -> bool:
    """True on every process if `flag` is true on any (processes must stop at the same step)."""
    if jax.process_count() == 1:
        return flag
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.int32(flag))))


class InterruptFlag:
    """Turns SIGTERM and SIGINT into a flag the loop checks between steps (main thread only)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.raised = False
        self._previous = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def call_size(config, step: int, total_steps: int) -> int:
    """Steps in the next call: steps_per_call while aligned to it and room is left; single steps else
    (a run resumed off the grid, or the tail of the run)."""
    num_steps = config.steps_per_call
    return 1 if step % num_steps or step + num_steps > total_steps else num_steps


class Throughput:
    """Steps per second between log lines, with compiling calls kept out of the count."""

    def __init__(self, step: int):
        self._time, self._step = time.perf_counter(), step
        self._compiled: set[int] = set()

    def after_call(self, num_steps: int, metrics, call_start: float, what: str = "") -> None:
        """A call of a size not run before compiled: wait for it, log its time and keep it out of
        steps/s, which reports training speed. `what` qualifies the log line (" of 4 runs")."""
        if num_steps in self._compiled:
            return
        jax.block_until_ready(metrics)
        elapsed = time.perf_counter() - call_start
        logger.info("compiled and ran the first call of %d step(s)%s in %.1f s", num_steps, what, elapsed)
        self.exclude(elapsed, num_steps)
        self._compiled.add(num_steps)

    def exclude(self, seconds: float, num_steps: int) -> None:
        self._time += seconds
        self._step += num_steps

    def rate(self, step: int) -> float | None:
        """Steps/s since the last call (None if no step was timed); restarts the count."""
        now = time.perf_counter()
        rate = (step - self._step) / (now - self._time) if step > self._step else None
        self._time, self._step = now, step
        return rate


def due(config, step: int, total_steps: int) -> dict[str, bool]:
    """Which cadences fall on `step` (the last step does them all, but reclustering, which is for the
    steps after it)."""
    due = {name: step % config[f"{name}_every"] == 0 or step == total_steps
           for name in ("log", "sample", "checkpoint", "eval") if config[f"{name}_every"]}
    if config.self_condition.clusters:
        schedule = config.self_condition
        due["recluster"] = step < total_steps and clusters_lib.is_reclustering_step(
            step, schedule.every, schedule.first_every)
    return due


class HostMetrics:
    """Brings each call's metrics to the host one call late and hands them to `take`.

    Fetching the previous call's metrics right after the next call is dispatched costs no idle device
    time (the device is busy with that next call), so a NaN or infinite loss is seen within one call
    of the step that produced it, and only sums, never a backlog of device arrays, are held between
    log steps. Held device buffers pinned freed memory under the CPU runtime tuning: a process grew
    to 8 GB (docs/memory.md, "What once made a run reach 10 GB").

    Args (of the constructor):
      take: `take(device_metrics, first_step)`, called with each call's metrics in order.
    """

    def __init__(self, take: Callable[[Any, int], None]):
        self._take = take
        self._pending = None

    def add(self, metrics, first_step: int) -> None:
        """The device metrics of the call just dispatched, whose first step is `first_step`."""
        previous, self._pending = self._pending, (metrics, first_step)
        if previous is not None:
            self._take(*previous)

    def flush(self) -> None:
        """Takes the last call's metrics too (waiting for it)."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._take(*pending)


def profile_window(text: str) -> tuple[int, int] | None:
    """config.profile_steps ("START,COUNT", e.g. "100,5") as (start, count); None for ""."""
    if not text:
        return None
    start, count = (int(part) for part in text.split(","))
    return start, count


class Profiler:
    """A `jax.profiler` trace of the calls from step START on for COUNT steps (config.profile_steps),
    each call annotated as a step (`StepTraceAnnotation`), into `directory`: what TensorBoard's
    profile plugin, XProf and Perfetto open."""

    def __init__(self, window: tuple[int, int] | None, directory: str):
        self._window, self._directory, self._tracing = window, directory, False

    def before_call(self, step: int) -> None:
        """Starts the trace when the call about to run is the first of the window."""
        if self._window and not self._tracing and self._window[0] <= step < sum(self._window):
            jax.profiler.start_trace(self._directory)
            self._tracing = True
            logger.info("tracing steps %d to %d into %s", step + 1, sum(self._window), self._directory)

    def annotation(self, step: int):
        """The call's annotation, numbered by its first step (a no-op outside the trace)."""
        if self._tracing:
            return jax.profiler.StepTraceAnnotation("train", step_num=step)
        return contextlib.nullcontext()

    def after_call(self, step: int, outputs: Any) -> None:
        """Stops (and writes) the trace once the window's last step has run."""
        if self._tracing and step >= sum(self._window):
            jax.block_until_ready(outputs)
            jax.profiler.stop_trace()
            self._tracing = False

    def close(self) -> None:
        if self._tracing:
            jax.profiler.stop_trace()
            self._tracing = False
