"""`python -m gan_jax.train --config experiments/mnist.py [--workdir DIR] [--config.KEY=VALUE ...]`.

The entry point parses flags and calls `train_and_evaluate(config, workdir)`, which holds the loop:
restore-or-init, train, and on a cadence log metrics, render samples and save checkpoints. A run whose
workdir holds a checkpoint resumes from it; SIGTERM or Ctrl-C saves a checkpoint and exits cleanly.
"""

from __future__ import annotations

import os
import sys
import time

import jax
import ml_collections
import numpy as np

from gan_jax import config as config_lib
from gan_jax import cli, input_pipeline, loop, parallel, steps
from gan_jax import workdir as workdir_lib
from gan_jax.checkpoint import Checkpointer, abstract_host_state
from gan_jax.errors import NonFiniteLossError, UserError
from gan_jax.logging_utils import logger
from gan_jax.loop import Interrupted
from gan_jax.outputs import RunOutputs
from gan_jax.parallel import HostState
from gan_jax.state import abstract_train_state, create_train_state


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> HostState:
    """Trains the GAN that `config` describes, writing everything into `workdir`.

    Args:
      config: a run config (experiments/*.py); validated before anything else happens.
      workdir: the run's folder; if it holds a checkpoint, training resumes from it. With several
        processes it must be shared; only process 0 writes logs, samples and plots.

    Returns:
      The final training state, one host copy (numpy leaves, the key as raw key data).

    Raises:
      UserError: bad config, data, workdir or checkpoint, or a loss that became NaN/infinite.
      Interrupted: SIGTERM/SIGINT arrived; a checkpoint at the current step was saved first.
    """
    config_lib.validate(config)
    cli.request_deterministic_xla(config.deterministic)
    parallel.DataParallel(config)  # the devices fit the config (before any folder is made)
    workdir = workdir_lib.prepare(workdir)
    is_first = jax.process_index() == 0
    # One training process per workdir (process 0 stands for a distributed run), from here to the end.
    lock = workdir_lib.Lock(workdir).acquire() if is_first else None
    checkpointer = None
    try:
        checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), config.keep_checkpoints)
        # Before the data is read: a resume that would change what the run is fails at once.
        previous = workdir_lib.read_config(workdir) if checkpointer.all_steps() else None
        changes = workdir_lib.check_resume(previous, config) if previous is not None else {}
        train_split = input_pipeline.load_split(config.data, "train")
        input_pipeline.check_labels(train_split, config.model.num_classes)
        num_examples = len(train_split.images)
        steps_per_epoch = config_lib.steps_per_epoch(config, num_examples)
        total_steps = config_lib.total_steps(config, num_examples)

        data_parallel = parallel.DataParallel(config, total_steps)
        gan = data_parallel.gan
        restored = checkpointer.restore_newest(abstract_host_state(abstract_train_state(gan)),
                                               set_aside=True)
        if restored is None:
            host_state, extra = parallel.to_host(create_train_state(gan, config.seed)), {}
        else:
            host_state, extra = restored.state, restored.extra
            logger.info("resuming from the checkpoint at step %d", restored.step)
        if is_first:
            # Written only once the checkpoint is known to fit, so a refused resume changes nothing.
            workdir_lib.record_config(workdir, config, int(host_state.step), changes)
        logger.info("training on %d %s device(s) (%s), global batch %d", data_parallel.num_devices,
                    jax.default_backend(), data_parallel.mode, config.batch_size)
        labels = train_split.labels if config.model.num_classes else None
        host_state = _train_loop(config, workdir, data_parallel, host_state, extra, train_split.images,
                                 labels, checkpointer, steps_per_epoch, total_steps)
    finally:
        if checkpointer is not None:
            checkpointer.close()
        if lock is not None:
            lock.release()
    return host_state


class _EpochData:
    """The TrainData of the epoch at hand: the split on device once, each epoch's order computed once."""

    def __init__(self, data_parallel, images: np.ndarray, labels: np.ndarray | None,
                 key_data: np.ndarray, steps_per_epoch: int):
        self._data_parallel = data_parallel
        self._num_examples = len(images)
        # The whole split (and its labels for a conditional run); batches are gathered on device.
        self._images, self._labels = data_parallel.put_data((images, labels))
        self._train_key = jax.random.wrap_key_data(key_data)
        self._steps_per_epoch = steps_per_epoch
        self._epoch, self._data = None, None

    def at(self, step: int) -> input_pipeline.TrainData:
        epoch = step // self._steps_per_epoch
        if epoch != self._epoch:
            orders = steps.data_orders(self._train_key, epoch, self._num_examples)
            self._epoch = epoch
            self._data = input_pipeline.TrainData(self._images, self._data_parallel.put_data(orders),
                                                  self._labels)
        return self._data


def _train_loop(config, workdir, data_parallel, host_state, extra, images, labels, checkpointer,
                steps_per_epoch, total_steps):
    step = int(host_state.step)
    state = data_parallel.put_state(host_state)
    epoch_data = _EpochData(data_parallel, images, labels, host_state.key, steps_per_epoch)
    outputs = (RunOutputs(config, workdir, data_parallel.gan, step, total_steps, steps_per_epoch)
               if jax.process_index() == 0 else None)
    if outputs:
        outputs.resume(extra)

    def take(metrics, first_step: int) -> None:
        per_step = data_parallel.get_metrics(metrics)
        bad = loop.first_non_finite(per_step, first_step)
        if bad is not None:
            raise NonFiniteLossError(
                f"{bad[1]} became {bad[2]} at step {bad[0]}; stopped without saving. Last good "
                f"checkpoint: step {checkpointer.latest_step()} in {checkpointer.directory}")
        if outputs:
            outputs.add(per_step)

    host_metrics = loop.HostMetrics(take)
    throughput = loop.Throughput(step)
    stopping = False
    try:
        with loop.InterruptFlag() as interrupt:
            while step < total_steps and not stopping:
                num_steps = loop.call_size(config, step, total_steps)
                data = epoch_data.at(step)
                call_start = time.perf_counter()
                state, metrics = data_parallel.train_steps(num_steps)(state, data)
                host_metrics.add(metrics, first_step=step + 1)
                step += num_steps
                throughput.after_call(num_steps, metrics, call_start)
                due = loop.due(config, step, total_steps)
                # One process alone checks its flag every step; several agree at synced steps only.
                stopping = interrupt.raised if jax.process_count() == 1 else (
                    any(due.values()) and loop.any_process(interrupt.raised))
                if not (any(due.values()) or stopping):
                    if outputs:
                        outputs.progress(step)
                    continue
                # The only waits for the device: at logging, sampling, evaluation and checkpoint steps.
                host_metrics.flush()
                host_state = data_parallel.get_state(state) if (
                    due.get("sample") or due.get("checkpoint") or due.get("eval") or stopping) else None
                if outputs:
                    if due.get("log") or due.get("eval"):
                        rate = throughput.rate(step) if due.get("log") else None
                        outputs.write(step, rate, host_state, due.get("log"), due.get("eval"))
                    else:
                        outputs.progress(step)
                    if due.get("sample"):
                        outputs.sample(step, host_state)
                if due.get("checkpoint") or stopping:
                    if not parallel.all_finite(host_state):
                        raise NonFiniteLossError(f"parameters became NaN or infinite by step {step}; "
                                                 f"stopped without saving")
                    checkpointer.save(host_state, outputs.checkpoint_extra() if outputs else None)
            if stopping and step < total_steps:
                checkpointer.wait()
                raise Interrupted(step, checkpointer.directory)
    finally:
        if outputs:
            outputs.close()
    checkpointer.wait()
    if outputs:
        outputs.plot()
    return data_parallel.get_state(state)


def main(argv):
    del argv
    config = _FLAGS.config
    workdir = _FLAGS.workdir or os.path.join("runs", cli.config_stem(_FLAGS["config"].config_filename))
    cli.setup_logging()
    try:
        if _FLAGS.distributed or _FLAGS.coordinator:
            parallel.initialize_distributed(_FLAGS.coordinator, _FLAGS.num_processes,
                                            _FLAGS.process_id, _FLAGS.coordinator_bind_address,
                                            _FLAGS.distributed_timeout)
        state = train_and_evaluate(config, workdir)
    except Interrupted as e:
        print(f"{e}. Resume with: {_resume_command(workdir)}", file=sys.stderr)
        return 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except jax.errors.JaxRuntimeError as e:
        if jax.process_count() == 1:
            raise  # a bug, or the device failing: keep the traceback
        # With several processes this is how a lost peer shows up in the collectives.
        print(f"error: lost contact with another process of the distributed run: "
              f"{cli.one_line(e)[:300]}", file=sys.stderr)
        return 1
    print(f"trained to step {int(state.step)}; outputs in {os.path.abspath(workdir)}", file=sys.stderr)
    return 0


def _resume_command(workdir: str) -> str:
    args = [a for a in sys.argv[1:] if not a.startswith("--workdir")]
    return " ".join(["python -m gan_jax.train", *args, f"--workdir {workdir}"])


def _define_flags():
    from absl import flags
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", None, "Config file, e.g. experiments/mnist.py[:variant].",
                                    lock_config=True)
    flags.DEFINE_string("workdir", None, "Run folder (default: runs/<config file stem>).")
    # Several processes (hosts): the JAX runtime connects them; see README, "Several hosts".
    flags.DEFINE_bool("distributed", False, "Join a multi-process run that JAX detects from the "
                      "cluster (SLURM, TPU pod, Open MPI); implied by --coordinator.")
    flags.DEFINE_string("coordinator", None, "HOST:PORT of process 0's coordination service.")
    flags.DEFINE_integer("num_processes", None, "How many processes take part.")
    flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")
    flags.DEFINE_string("coordinator_bind_address", None, "Address process 0's coordination "
                        "service listens on, e.g. 127.0.0.1:PORT to stay on loopback.")
    flags.DEFINE_integer("distributed_timeout", 300, "Seconds to wait for the other processes, at "
                         "start and when one stops answering, before failing.")
    flags.mark_flags_as_required(["config"])
    return flags.FLAGS


if __name__ == "__main__":
    from absl import app
    cli.tune_cpu_runtime()
    _FLAGS = _define_flags()
    app.run(main, flags_parser=cli.parse_flags)
