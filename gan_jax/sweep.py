"""`python -m gan_jax.sweep --config experiments/mnist.py --seeds 0,1,2,3 [--vary g_lr=1e-4,2e-4]`.

Many runs trained in one compiled program: every combination of the seeds and of the values of each
varied numeric hyperparameter (learning rates, Adam's betas, loss weights, the EMA's decay and start:
`state.HYPERPARAMETERS`). Everything else, the program itself, is shared, so keys that change it
(widths, batch size, loss kind, model options) cannot vary; asking for one is a one-line error.

Run i of a sweep is the run `python -m gan_jax.train` makes with the same seed and values: the same
initial parameters, data order and noise, and the same metrics up to float rounding (the sweep's
hyperparameters are arrays, the single run's constants). Each run writes a standard run folder
(`run_000/`, ...: config.json with its own values, metrics.jsonl, TensorBoard, samples, checkpoints,
plots), so `gan_jax.evaluate`, `gan_jax.sample` and resuming work on one run unchanged; the sweep's
folder holds `sweep.json` (the runs and their values, and how each ended), and
`python -m gan_jax.evaluate --workdir SWEEP` scores every run and each group of seeds.

A run whose loss becomes NaN or infinite stops there: it is reported (log line, sweep.json) and keeps
its checkpoints, and the others train on; the command then exits 1 naming it. SIGTERM or Ctrl-C saves
every run at the current step and exits 0; the same command resumes the whole sweep.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from typing import Any, NamedTuple

import jax
import ml_collections
import numpy as np

from gan_jax import config as config_lib
from gan_jax import cli, files, input_pipeline, loop, parallel, steps
from gan_jax import workdir as workdir_lib
from gan_jax.checkpoint import Checkpointer, abstract_host_state
from gan_jax.errors import ConfigError, UserError
from gan_jax.logging_utils import format_metrics, logger
from gan_jax.outputs import RunOutputs
from gan_jax.state import HYPERPARAMETERS, abstract_train_state, create_train_state

# An optional term is on for a run when its weight is not zero; one program has it for all runs or
# for none, so a sweep's values of these must be all zero or all non-zero.
SWITCHES = ("cycle_weight", "r1_gamma", "ema_decay")


class Run(NamedTuple):
    """One run of a sweep: its folder name, seed, the varied values and its whole config."""

    name: str
    seed: int
    values: dict[str, Any]
    config: ml_collections.ConfigDict


class RunsFailed(UserError):
    """Some runs stopped with a non-finite loss or parameters; the others finished."""


def parse_values(text: str) -> tuple[str, list]:
    """"g_lr=1e-4,2e-4" -> ("g_lr", [0.0001, 0.0002]).

    Raises:
      ConfigError: not KEY=V1,V2,... with numbers, or a key a sweep cannot vary.
    """
    key, sep, values = text.partition("=")
    key = key.strip().removeprefix("config.")
    if not sep or not values.strip():
        raise ConfigError(f"--vary {text!r}: expected KEY=VALUE[,VALUE...], e.g. g_lr=1e-4,2e-4")
    if key not in HYPERPARAMETERS:
        what = "is not a config key" if key not in config_lib.SCHEMA else "changes the program"
        raise ConfigError(f"config.{key} cannot vary within a sweep: it {what}; the keys that can "
                          f"are {', '.join(HYPERPARAMETERS)} (and --seeds)")
    try:
        parsed = [int(v) if key == "ema_start" else float(v) for v in values.split(",")]
    except ValueError:
        raise ConfigError(f"--vary {text!r}: the values of {key} must be numbers") from None
    return key, parsed


def plan(config: ml_collections.ConfigDict, seeds: list[int], vary: dict[str, list]) -> list[Run]:
    """The runs: every seed with every combination of the varied values, each config validated."""
    if not seeds:
        raise ConfigError("--seeds needs at least one seed")
    if len(set(seeds)) < len(seeds):
        raise ConfigError(f"--seeds lists a seed twice: {seeds}")
    for key in SWITCHES:
        values = vary.get(key, [])
        if values and len({v == 0 for v in values + [config[key]] * (key not in vary)}) > 1:
            raise ConfigError(f"config.{key} must be all zero or all non-zero within a sweep (zero "
                              f"turns its term off, which changes the program); got {values}")
    runs = []
    keys = list(vary)
    for seed, combination in itertools.product(seeds, itertools.product(*vary.values())):
        run_config = ml_collections.ConfigDict(config.to_dict())
        run_config.seed = seed
        for key, value in zip(keys, combination):
            run_config[key] = value
        config_lib.validate(run_config)
        runs.append(Run(f"run_{len(runs):03d}", seed, dict(zip(keys, combination)), run_config))
    return runs


def _sweep_record(runs: list[Run], status: dict[str, str]) -> dict:
    return {"varied": sorted({key for run in runs for key in run.values}),
            "runs": [{"name": run.name, "seed": run.seed, "values": run.values,
                      "status": status.get(run.name, "training")} for run in runs]}


def _check_same_sweep(workdir: str, runs: list[Run]) -> None:
    """Refuses to resume a sweep folder with other runs than it was started with."""
    saved = workdir_lib.read_sweep(workdir)
    if saved is None:
        return
    saved = [(r["name"], r["seed"], r["values"]) for r in saved]
    if saved != [(run.name, run.seed, run.values) for run in runs]:
        raise ConfigError(f"{workdir} holds another sweep ({len(saved)} runs, other seeds or values); "
                          f"use another --workdir")


class _Runs:
    """The runs' folders while the sweep trains: locks, checkpoints and outputs, one of each per run."""

    def __init__(self, workdir: str, runs: list[Run]):
        self.runs = runs
        self.dirs = [workdir_lib.prepare(os.path.join(workdir, run.name)) for run in runs]
        self.locks = [workdir_lib.Lock(d).acquire() for d in self.dirs]
        self.checkpointers = [Checkpointer(os.path.join(d, "checkpoints"), run.config.keep_checkpoints)
                              for d, run in zip(self.dirs, runs)]

    def changes(self) -> list[dict]:
        """Each run's config changes against its previous start (refusing what defines the run)."""
        changes = []
        for directory, run, checkpointer in zip(self.dirs, self.runs, self.checkpointers):
            previous = workdir_lib.read_config(directory) if checkpointer.all_steps() else None
            changes.append(workdir_lib.check_resume(previous, run.config) if previous else {})
        return changes

    def restore(self, gan) -> tuple[list, list[dict]]:
        """Each run's newest good checkpoint, at one step for all: the oldest of their newest."""
        abstract = abstract_host_state(abstract_train_state(gan))
        restored = [c.restore_newest(abstract, set_aside=True) for c in self.checkpointers]
        if all(r is None for r in restored):
            return [parallel.to_host(create_train_state(gan, run.seed)) for run in self.runs], [
                {} for _ in self.runs]
        if any(r is None for r in restored):
            missing = [run.name for run, r in zip(self.runs, restored) if r is None]
            raise UserError(f"runs {', '.join(missing)} hold no checkpoint while the others do; "
                            f"resume them with gan_jax.train or use another --workdir")
        step = min(r.step for r in restored)
        if any(r.step != step for r in restored):
            logger.warning("the runs' newest good checkpoints differ; resuming every run from step %d",
                           step)
            restored = [r if r.step == step else c.restore_at(abstract, step)
                        for c, r in zip(self.checkpointers, restored)]
        return [r.state for r in restored], [r.extra for r in restored]

    def close(self) -> None:
        for checkpointer in self.checkpointers:
            checkpointer.close()
        for lock in self.locks:
            lock.release()


def run_sweep(config: ml_collections.ConfigDict, workdir: str, seeds: list[int],
              vary: dict[str, list], form: str = "auto") -> list:
    """Trains every run of the sweep; returns their final host states.

    Raises:
      UserError: bad config, varied keys, data or folders; RunsFailed when some runs stopped.
      loop.Interrupted: SIGTERM/SIGINT; every run saved a checkpoint at the current step first.
    """
    config_lib.validate(config)
    runs = plan(config, seeds, vary)
    cli.request_deterministic_xla(config.deterministic)
    parallel.SweepParallel(config, len(runs), form)  # the devices fit (before any folder is made)
    workdir = workdir_lib.prepare(workdir, folders=())
    lock = workdir_lib.Lock(workdir).acquire()
    folders = None
    try:
        _check_same_sweep(workdir, runs)
        folders = _Runs(workdir, runs)
        changes = folders.changes()
        files.write_json(os.path.join(workdir, workdir_lib.SWEEP_FILE), _sweep_record(runs, {}))
        split = input_pipeline.load_split(config.data, "train")
        input_pipeline.check_labels(split, config.model.num_classes)
        images, labels = split.images, split.labels if config.model.num_classes else None
        steps_per_epoch = config_lib.steps_per_epoch(config, len(images))
        total_steps = config_lib.total_steps(config, len(images))
        sweep_parallel = parallel.SweepParallel(config, len(runs), form, total_steps)
        host_states, extras = folders.restore(sweep_parallel.gan)
        start = int(host_states[0].step)
        for directory, run, change in zip(folders.dirs, runs, changes):
            workdir_lib.record_config(directory, run.config, start, change)
        logger.info("sweep of %d runs in one program (%s form) on %d %s device(s), from step %d",
                    len(runs), sweep_parallel.form, sweep_parallel.num_devices, jax.default_backend(),
                    start)
        status = _sweep_loop(config, sweep_parallel, folders, host_states, extras, images, labels,
                             steps_per_epoch, total_steps)
        files.write_json(os.path.join(workdir, workdir_lib.SWEEP_FILE), _sweep_record(runs, status.messages))
        if status.failed:
            raise RunsFailed(f"{len(status.failed)} of {len(runs)} runs stopped: " + "; ".join(
                f"{runs[i].name}: {status.messages[runs[i].name]}" for i in sorted(status.failed)))
        return status.host_states
    finally:
        if folders is not None:
            folders.close()
        lock.release()


class _Status:
    """How the runs are doing: their outputs, which stopped and why, their newest checkpoints."""

    def __init__(self, runs: list[Run], outputs: list[RunOutputs], step: int):
        self.runs, self.outputs = runs, outputs
        self.failed: set[int] = set()
        self.messages: dict[str, str] = {}
        self.host_states: list = []  # the final states, once the loop is done
        # Each run's newest checkpoint (None before the first), for the message when a run stops.
        self.last_saved = [step if step else None for _ in runs]

    def fail(self, index: int, message: str) -> None:
        self.failed.add(index)
        self.messages[self.runs[index].name] = message
        logger.warning("%s stopped: %s; the other runs go on", self.runs[index].name, message)

    def take(self, per_run_metrics: list, first_step: int) -> None:
        """Each training run's host metrics of the steps from `first_step`; a non-finite one stops it."""
        for index, per_step in enumerate(per_run_metrics):
            if index in self.failed:
                continue
            bad = loop.first_non_finite(per_step, first_step)
            if bad is not None:
                self.fail(index, f"{bad[1]} became {bad[2]} at step {bad[0]} (last good checkpoint: "
                                 f"step {self.last_saved[index]})")
            else:
                self.outputs[index].add(per_step)

    def write(self, step: int, due: dict[str, bool], host_states: list, rate, stopping: bool,
              checkpointers: list[Checkpointer]) -> None:
        """What is due at `step` for each training run: log, eval, samples, a checkpoint."""
        for index, (output, host_state) in enumerate(zip(self.outputs, host_states)):
            if index in self.failed:
                continue
            if due.get("log") or due.get("eval"):
                output.write(step, rate, host_state, due.get("log"), due.get("eval"))
            if due.get("sample"):
                output.sample(step, host_state)
            if due.get("checkpoint") or stopping:
                if not parallel.all_finite(host_state):
                    self.fail(index, f"parameters became NaN or infinite by step {step}")
                    continue
                checkpointers[index].save(host_state, output.checkpoint_extra())
                self.last_saved[index] = step

    def log_progress(self, step: int, steps_per_epoch: int, rate) -> None:
        """One line per log step for the whole sweep: the mean over the training runs' last records."""
        records = [output.last_record for index, output in enumerate(self.outputs)
                   if index not in self.failed and output.last_record]
        if not records:
            return
        means = {name: float(np.mean([r[name] for r in records])) for name in
                 ("d_loss", "g_loss", "d_real", "d_fake") if all(name in r for r in records)}
        speed = "" if rate is None else f"  {rate * len(self.runs):.2f} run-steps/s"
        logger.info("step %d  epoch %d  %d/%d runs training  mean %s%s", step,
                    (step - 1) // steps_per_epoch + 1, len(records), len(self.runs),
                    format_metrics(means, means), speed)

    def finish(self, step: int) -> None:
        for index, output in enumerate(self.outputs):
            if index not in self.failed:
                output.plot()
                self.messages[self.runs[index].name] = f"finished at step {step}"


def _sweep_loop(config, sweep_parallel, folders: _Runs, host_states, extras, images, labels,
                steps_per_epoch, total_steps) -> _Status:
    runs = folders.runs
    step = int(host_states[0].step)
    states = sweep_parallel.put_states(host_states)
    hps = sweep_parallel.put_hyperparams(parallel.sweep_hyperparams([run.config for run in runs]))
    keys = [jax.random.wrap_key_data(state.key) for state in host_states]
    outputs = [RunOutputs(run.config, directory, sweep_parallel.gan, step, total_steps,
                          steps_per_epoch, show_progress=False)
               for run, directory in zip(runs, folders.dirs)]
    for output, extra in zip(outputs, extras):
        output.resume(extra)
    status = _Status(runs, outputs, step)
    host_metrics = loop.HostMetrics(
        lambda metrics, first_step: status.take(sweep_parallel.get_metrics(metrics), first_step))
    throughput, data, data_epoch = loop.Throughput(step), None, None
    stopping = False
    try:
        with loop.InterruptFlag() as interrupt:
            while step < total_steps and not stopping and len(status.failed) < len(runs):
                num_steps = loop.call_size(config, step, total_steps)
                if step // steps_per_epoch != data_epoch:
                    data_epoch = step // steps_per_epoch
                    orders = [steps.data_orders(key, data_epoch, len(images)) for key in keys]
                    # The images (and labels) go to the devices once; each epoch only its orders.
                    data = (sweep_parallel.put_data(images, orders, labels) if data is None
                            else data._replace(orders=sweep_parallel.put_orders(orders)))
                call_start = time.perf_counter()
                states, metrics = sweep_parallel.train_steps(num_steps)(states, data, hps)
                host_metrics.add(metrics, first_step=step + 1)
                step += num_steps
                throughput.after_call(num_steps, metrics, call_start, f" of {len(runs)} runs")
                due = loop.due(config, step, total_steps)
                stopping = interrupt.raised
                if not (any(due.values()) or stopping):
                    continue
                host_metrics.flush()
                needs_state = due.get("sample") or due.get("checkpoint") or due.get("eval") or stopping
                per_run = sweep_parallel.get_states(states) if needs_state else [None] * len(runs)
                rate = throughput.rate(step) if due.get("log") else None
                status.write(step, due, per_run, rate, stopping, folders.checkpointers)
                if due.get("log"):
                    status.log_progress(step, steps_per_epoch, rate)
            for checkpointer in folders.checkpointers:
                checkpointer.wait()
            if stopping and step < total_steps:
                raise loop.Interrupted(step, os.path.dirname(folders.dirs[0]))
    finally:
        for output in outputs:
            output.close()
    status.finish(step)
    status.host_states = sweep_parallel.get_states(states)
    return status


def main(argv):
    del argv
    flags = _FLAGS
    config = flags.config
    stem = cli.config_stem(flags["config"].config_filename)
    workdir = flags.workdir or os.path.join("runs", stem + "_sweep")
    cli.setup_logging()
    try:
        seeds = _int_list(flags.seeds)
        vary = dict(parse_values(text) for text in flags.vary or [])
        states = run_sweep(config, workdir, seeds, vary, flags.sweep_form)
    except loop.Interrupted as e:
        args = " ".join(a for a in sys.argv[1:] if not a.startswith("--workdir"))
        print(f"{e}. Resume with: python -m gan_jax.sweep {args} --workdir {workdir}", file=sys.stderr)
        return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"trained {len(states)} runs to step {int(states[0].step)}; outputs in "
          f"{os.path.abspath(workdir)}", file=sys.stderr)
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers") from None


def _define_flags():
    from absl import flags
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", None, "Config file, e.g. experiments/mnist.py[:variant].",
                                    lock_config=True)
    flags.DEFINE_string("seeds", "0", "Comma-separated seeds, e.g. 0,1,2,3.")
    flags.DEFINE_multi_string("vary", None, "KEY=V1,V2,...: values of a numeric hyperparameter, one "
                              "run each (with every seed and every other varied key); repeatable.")
    flags.DEFINE_string("workdir", None, "Sweep folder (default: runs/<config file stem>_sweep).")
    flags.DEFINE_enum("sweep_form", "auto", list(parallel.SWEEP_FORMS), "How the runs share the "
                      "program: auto (by backend), vmap, unrolled or map.")
    flags.mark_flags_as_required(["config"])
    return flags.FLAGS


if __name__ == "__main__":
    from absl import app
    cli.tune_cpu_runtime()
    _FLAGS = _define_flags()
    app.run(main, flags_parser=cli.parse_flags)
