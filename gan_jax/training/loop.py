"""The one training loop, for one run (`gan_jax.train`) or a sweep's many in one program
(`gan_jax.sweep`): restore-or-init, train, and on a cadence log metrics, render samples, evaluate and
save checkpoints.

- A run resumes by construction: every run restarts from its newest good checkpoint (all at one
  step), and its data order and noise are pure functions of (seed, step).
- A run whose loss or parameters become NaN or infinite stops there without saving; the others go
  on. The command then fails with one line naming what happened and the last good checkpoint.
- SIGTERM or Ctrl-C saves every run at the current step and raises `Interrupted`; with several
  processes, they agree to stop at the next step that writes something.
- Only process 0 writes (metrics, samples, plots, records); every process takes part in the saves.
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import jax
import ml_collections
import numpy as np

from gan_jax import config as config_lib
from gan_jax.data import sources
from gan_jax.errors import NonFiniteLossError
from gan_jax.log import logger
from gan_jax.reporting.outputs import RunOutputs
from gan_jax.reporting.progress import LOSS_NAMES, format_metrics
from gan_jax.training import clusters as clusters_lib
from gan_jax.training import control, devices, folders as folders_lib, runs as runs_lib, steps
from gan_jax.training.control import Interrupted
from gan_jax.training.devices import HostState
from gan_jax.training.parallel import Layout, ParallelStep
from gan_jax.training.runs import Run, RunsFailed
from gan_jax.training.spec import GANSpec, hyperparams


class TrainingResult(NamedTuple):
    """What `train_runs` returns: each run's final host state, and the steps it trained between."""

    states: list[HostState]
    start_step: int  # where training started: 0, or the step it resumed from
    total_steps: int  # the run's length; start_step >= total_steps means nothing was trained


def train_runs(runs: list[Run], *, sweep_dir: str | None = None, form: str = "auto") -> TrainingResult:
    """Trains `runs` (one, or a sweep's: they differ only in their seeds and swept values) in one
    program.

    Args:
      runs: the runs, each with its config and folder (`runs.Run`, `runs.plan_sweep`).
      sweep_dir: the sweep's folder, holding the runs' folders and sweep.json; None for one run.
      form: how a sweep's runs share the program (`parallel.SWEEP_FORMS`).

    Returns:
      The `TrainingResult`.

    Raises:
      UserError: bad config, data, folders or checkpoints; a run that stopped on a non-finite loss
        (NonFiniteLossError for one run, RunsFailed for a sweep's).
      Interrupted: SIGTERM/SIGINT arrived; every run saved a checkpoint at the current step first.
    """
    runs = [run._replace(config=_with_absolute_paths(run.config)) for run in runs]
    for run in runs:
        config_lib.validate(run.config)
    config = runs[0].config
    devices.request_deterministic_xla(config.deterministic)
    layout = Layout.for_config(config, len(runs), form)  # the devices fit, before anything is read
    split = sources.load_split(config.data, "train")
    sources.check_images(split, config_lib.IMAGE_SIZES, config.data.dir or config.data.name)
    sources.check_labels(split, config.model.num_classes, own_data=config.data.name == "custom")
    runs = [run._replace(config=config_lib.with_image_shape(run.config, split.images.shape))
            for run in runs]
    config = runs[0].config
    changes = folders_lib.check_resume(runs, sweep_dir)  # a refused resume fails before any write
    steps_per_epoch = config_lib.steps_per_epoch(config, len(split.images))
    total_steps = config_lib.total_steps(config, len(split.images))
    spec = GANSpec.from_config(config, total_steps=total_steps, **layout.spec_options())
    if config.eval_every:  # the evaluator exists and fits the images, before anything is written
        from gan_jax.evaluation.reference import check_fits, load_evaluator
        check_fits(load_evaluator(config.data.name, config.evaluator), spec.image_shape,
                   "the training images")
    folders = folders_lib.RunFolders(runs, sweep_dir)  # only now is anything written
    try:
        host_states, extras = folders.restore(spec, len(split.images))
        start = int(host_states[0].step)
        folders.record_configs(start, changes)
        _write_sweep_record(sweep_dir, runs, {})
        logger.info("training %s, global batch %d, from step %d", layout.describe(), config.batch_size,
                    start)
        if start >= total_steps:
            logger.warning("nothing to train: the run%s at step %d, and config asks for %d",
                           "s are" if len(runs) > 1 else " is", start, total_steps)
        parallel = ParallelStep(layout, spec, [hyperparams(run.config) for run in runs])
        status = _RunStatus(runs, folders, [_outputs(run, spec, start, total_steps, steps_per_epoch)
                                            for run in runs] if folders.is_first else None)
        for output, extra in zip(status.outputs or [], extras):
            output.resume(extra)
        labels = split.labels if config.model.num_classes else None
        try:
            states = _loop(config, parallel, status, host_states, split.images, labels,
                           steps_per_epoch, total_steps)
        except Interrupted as e:
            _write_sweep_record(sweep_dir, runs, {run.name: f"interrupted at step {e.step}" for run in runs})
            raise
        _write_sweep_record(sweep_dir, runs, status.messages)
        status.raise_failures()
        return TrainingResult(states, start, total_steps)
    finally:
        folders.close()


def _with_absolute_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` with data.dir and evaluator absolute, so the run's record works from any
    folder."""
    config = ml_collections.ConfigDict(config.to_dict())
    if config.data.dir:
        config.data.dir = os.path.abspath(os.path.expanduser(config.data.dir))
    if config.evaluator:
        config.evaluator = os.path.abspath(os.path.expanduser(config.evaluator))
    return config


def _write_sweep_record(sweep_dir: str | None, runs: list[Run], status: dict[str, str]) -> None:
    if sweep_dir is not None and jax.process_index() == 0:
        runs_lib.write_sweep_record(sweep_dir, runs, status)


def _outputs(run: Run, spec: GANSpec, start: int, total_steps: int, steps_per_epoch: int) -> RunOutputs:
    evaluate = None
    if run.config.eval_every:
        # The evaluator network and test split, only when asked for.
        from gan_jax.evaluation.scoring import make_training_evaluator
        evaluate = make_training_evaluator(run.config, run.workdir)
    return RunOutputs(run.config, run.workdir, spec, start, total_steps, steps_per_epoch,
                      show_progress=not run.name, evaluate=evaluate)


class _EpochData:
    """The TrainData of the epoch at hand: the split on the devices once, each epoch's orders once."""

    def __init__(self, parallel: ParallelStep, images: np.ndarray, labels: np.ndarray | None,
                 host_states: list[HostState], steps_per_epoch: int):
        self._parallel, self._num_examples = parallel, len(images)
        self._data = parallel.put_data(images, labels)
        self._train_keys = [devices.wrap_key(state.key) for state in host_states]
        self._steps_per_epoch, self._epoch = steps_per_epoch, None

    def at(self, step: int):
        epoch = step // self._steps_per_epoch
        if epoch != self._epoch:
            orders = [steps.data_orders(key, epoch, self._num_examples) for key in self._train_keys]
            self._data, self._epoch = self._parallel.with_orders(self._data, orders), epoch
        return self._data


def _recluster(spec: GANSpec, host_states: list[HostState], images: np.ndarray,
               step: int) -> list[HostState]:
    """Self-conditioning's new clusters of every run at `step` (see gan_jax.training.clusters)."""
    reclustered = []
    for state in host_states:
        if not control.all_finite(state.discriminator):  # a run that stopped: nothing to cluster with
            reclustered.append(state)
            continue
        clusters = clusters_lib.recluster(spec.discriminator, state.discriminator.variables(),
                                          state.clusters, images, devices.wrap_key(state.key),
                                          step)
        if not clusters_lib.is_empty(state.clusters):
            moved = float(np.mean(clusters.assignments != np.asarray(state.clusters.assignments)))
            logger.info("reclustered at step %d: %.1f%% of the images changed cluster; sizes %d to %d",
                        step, 100 * moved, clusters.counts.min(), clusters.counts.max())
        reclustered.append(state.replace(clusters=clusters))
    return reclustered


def _loop(config, parallel: ParallelStep, status: "_RunStatus", host_states: list[HostState],
          images: np.ndarray, labels: np.ndarray | None, steps_per_epoch: int,
          total_steps: int) -> list[HostState]:
    step, spec = int(host_states[0].step), parallel.spec
    schedule = config.self_condition
    if step < total_steps and clusters_lib.reclustering_due(host_states[0].clusters, step, schedule.every,
                                                            schedule.first_every):
        host_states = _recluster(spec, host_states, images, step)
    states = parallel.put_states(host_states)
    epoch_data = _EpochData(parallel, images, labels, host_states, steps_per_epoch)
    host_metrics = control.HostMetrics(
        lambda metrics, first_step: status.take(parallel.get_metrics(metrics), first_step))
    throughput = control.Throughput(step)
    what = f" of {len(status.runs)} runs" if len(status.runs) > 1 else ""
    folder = status.folders.dirs[0] if len(status.runs) == 1 else os.path.dirname(status.folders.dirs[0])
    profiler = control.Profiler(control.profile_window(config.profile_steps),
                                os.path.join(folder, "profile"))
    stopping = False
    try:
        with control.InterruptFlag() as interrupt:
            while step < total_steps and not stopping and status.any_training():
                num_steps = control.call_size(config, step, total_steps)
                profiler.before_call(step)
                call_start = time.perf_counter()
                with profiler.annotation(step + 1):
                    states, metrics = parallel.train_steps(num_steps)(states, epoch_data.at(step))
                host_metrics.add(metrics, first_step=step + 1)
                step += num_steps
                profiler.after_call(step, metrics)
                throughput.after_call(num_steps, metrics, call_start, what)
                due = control.due(config, step, total_steps)
                # One process alone checks its flag every step; several agree at synced steps only.
                stopping = interrupt.raised if jax.process_count() == 1 else (
                    any(due.values()) and control.any_process(interrupt.raised))
                if not (any(due.values()) or stopping):
                    status.progress(step)
                    continue
                # The only waits for the device: at logging, sampling, evaluation and checkpoint steps.
                host_metrics.flush()
                needs_state = (due.get("sample") or due.get("checkpoint") or due.get("eval") or
                               due.get("recluster") or stopping)
                per_run = parallel.get_states(states) if needs_state else [None] * len(status.runs)
                status.write(step, due, per_run, throughput.rate(step) if due.get("log") else None,
                             stopping, steps_per_epoch)
                if due.get("recluster") and not stopping:
                    states = parallel.put_states(_recluster(spec, per_run, images, step))
            status.folders.wait()
            if stopping and step < total_steps:
                raise Interrupted(step, os.path.dirname(status.folders.dirs[0]) if len(status.runs) > 1
                                  else status.checkpoint_dir(0))
    finally:
        profiler.close()
        status.close()
    status.finish(step)
    return parallel.get_states(states)


class _RunStatus:
    """How the runs are doing: their outputs (process 0), which stopped and why, and their saves."""

    def __init__(self, runs: list[Run], folders: folders_lib.RunFolders, outputs: list[RunOutputs] | None):
        self.runs, self.folders, self.outputs = runs, folders, outputs
        self.failed: dict[int, str] = {}  # run index -> why it stopped
        self.messages: dict[str, str] = {}  # run name -> how it ended, for sweep.json

    def any_training(self) -> bool:
        return len(self.failed) < len(self.runs)

    def checkpoint_dir(self, index: int) -> str:
        return self.folders.checkpointers[index].directory

    def fail(self, index: int, message: str) -> None:
        last = self.folders.last_saved(index)
        saved = (f"last good checkpoint: step {last} in {self.checkpoint_dir(index)}" if last is not None
                 else "no checkpoint was saved before it")
        self.failed[index] = f"{message}; stopped without saving ({saved})"
        self.messages[self.runs[index].name] = self.failed[index]
        if len(self.runs) > 1:
            logger.warning("%s stopped: %s; the other runs go on", self.runs[index].name, self.failed[index])

    def take(self, per_run_metrics: list, first_step: int) -> None:
        """Each training run's host metrics of the steps from `first_step`; a non-finite one stops it."""
        for index, per_step in enumerate(per_run_metrics):
            if index in self.failed:
                continue
            bad = control.first_non_finite(per_step, first_step)
            if bad is not None:
                self.fail(index, f"{bad[1]} became {bad[2]} at step {bad[0]}")
            elif self.outputs:
                self.outputs[index].add(per_step)

    def progress(self, step: int) -> None:
        if self.outputs and len(self.runs) == 1:
            self.outputs[0].progress(step)

    def write(self, step: int, due: dict[str, bool], host_states: list, rate: float | None,
              stopping: bool, steps_per_epoch: int) -> None:
        """What is due at `step` for each training run: log, eval, samples, a checkpoint."""
        for index, host_state in enumerate(host_states):
            if index in self.failed:
                continue
            output = self.outputs[index] if self.outputs else None
            if output and (due.get("log") or due.get("eval")):
                output.write(step, rate, host_state, due.get("log"), due.get("eval"))
            elif output:
                output.progress(step)
            if output and due.get("sample"):
                output.sample(step, host_state)
            if due.get("checkpoint") or stopping:
                if not control.all_finite(host_state):
                    self.fail(index, f"parameters became NaN or infinite by step {step}")
                    continue
                self.folders.save(index, host_state, output.checkpoint_extra() if output else None)
        if due.get("log") and len(self.runs) > 1:
            self._log_sweep(step, steps_per_epoch, rate)

    def _log_sweep(self, step: int, steps_per_epoch: int, rate: float | None) -> None:
        """One line per log step for the whole sweep: the mean over the training runs' last records."""
        records = [output.last_record for index, output in enumerate(self.outputs or [])
                   if index not in self.failed and output.last_record]
        if not records:
            return
        means = {name: float(np.mean([r[name] for r in records])) for name in LOSS_NAMES
                 if all(name in r for r in records)}
        speed = "" if rate is None else f"  {rate * len(self.runs):.2f} run-steps/s"
        logger.info("step %d  epoch %d  %d/%d runs training  mean %s%s", step,
                    (step - 1) // steps_per_epoch + 1, len(records), len(self.runs),
                    format_metrics(means, means), speed)

    def close(self) -> None:
        for output in self.outputs or []:
            output.close()

    def finish(self, step: int) -> None:
        for index, output in enumerate(self.outputs or []):
            if index not in self.failed:
                output.plot()
                self.messages[self.runs[index].name] = f"finished at step {step}"

    def raise_failures(self) -> None:
        """Raises what stopped runs: NonFiniteLossError for a lone run, RunsFailed in a sweep."""
        if not self.failed:
            return
        if len(self.runs) == 1:
            raise NonFiniteLossError(self.failed[0])
        raise RunsFailed(f"{len(self.failed)} of {len(self.runs)} runs stopped: " + "; ".join(
            f"{self.runs[i].name}: {self.failed[i]}" for i in sorted(self.failed)))
