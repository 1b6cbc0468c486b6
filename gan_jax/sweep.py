"""`python -m gan_jax.sweep --config experiments/mnist.py --seeds 0,1,2,3 [--vary g_lr=1e-4,2e-4]`.

Many runs trained in one compiled program: every combination of the seeds and of the values of each
varied numeric hyperparameter (`config.SWEEPABLE`: learning rates, Adam's betas, loss weights, the
EMA's decay and start). Everything else, the program itself, is shared, so keys that change it
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

import os

import ml_collections
from absl import flags

from gan_jax import cli
from gan_jax.training import runs as runs_lib
from gan_jax.training.devices import HostState
from gan_jax.training.loop import TrainingResult, train_runs
from gan_jax.training.parallel import SWEEP_FORMS


def run_sweep(config: ml_collections.ConfigDict, workdir: str, seeds: list[int],
              vary: dict[str, list], form: str = "auto") -> list[HostState]:
    """Trains every run of the sweep; returns their final host states.

    Raises:
      UserError: bad config, varied keys, data or folders; RunsFailed when some runs stopped.
      Interrupted: SIGTERM/SIGINT; every run saved a checkpoint at the current step first.
    """
    return sweep(config, workdir, seeds, vary, form).states


def sweep(config: ml_collections.ConfigDict, workdir: str, seeds: list[int], vary: dict[str, list],
          form: str = "auto") -> TrainingResult:
    """`run_sweep`, returning where training started and ended too."""
    workdir = os.path.abspath(workdir)
    return train_runs(runs_lib.plan_sweep(config, workdir, seeds, vary), sweep_dir=workdir, form=form)


def main(argv):
    del argv
    values = flags.FLAGS
    stem = cli.config_stem(values["config"].config_filename)
    workdir = values.workdir or os.path.join("runs", stem + "_sweep")
    cli.setup_logging()

    def run():
        cli.join_distributed(values)
        seeds = runs_lib.parse_seeds(values.seeds)
        vary = dict(runs_lib.parse_values(text) for text in values.vary or [])
        config = values.config
        if values.data_devices is not None:
            config = ml_collections.ConfigDict(config.to_dict())
            config.data_devices = values.data_devices
        return sweep(config, workdir, seeds, vary, values.sweep_form)
    return cli.training_command("gan_jax.sweep", workdir, run)


def _define_flags() -> None:
    cli.define_config_flag()
    flags.DEFINE_string("seeds", "0", "Comma-separated seeds, e.g. 0,1,2,3.")
    flags.DEFINE_multi_string("vary", None, "KEY=V1,V2,...: values of a numeric hyperparameter, one "
                              "run each (with every seed and every other varied key); repeatable.")
    flags.DEFINE_string("workdir", None, "Sweep folder (default: runs/<config file stem>_sweep).")
    flags.DEFINE_enum("sweep_form", "auto", list(SWEEP_FORMS), "How the runs share the program: auto "
                      "(by backend), vmap, unrolled or map.")
    flags.DEFINE_integer("data_devices", None, "Devices each run's batch is split over (default: "
                         "config.data_devices, 0: devices / gcd(runs, devices)).")
    cli.define_distributed_flags()
    flags.mark_flags_as_required(["config"])


def run_from_command_line() -> None:
    """`python -m gan_jax.sweep` and the console script `gan-jax-sweep`."""
    cli.start(main, _define_flags, tune_cpu=True)


if __name__ == "__main__":
    run_from_command_line()
