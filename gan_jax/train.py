"""`python -m gan_jax.train --config experiments/mnist.py [--workdir DIR] [--config.KEY=VALUE ...]`.

Trains one run: the entry point parses flags and calls `train_and_evaluate(config, workdir)`, the
loop of `gan_jax.training.loop` (restore-or-init, train, and on a cadence log metrics, render samples,
evaluate and save checkpoints). A run whose workdir holds a checkpoint resumes from it; SIGTERM or
Ctrl-C saves a checkpoint and exits cleanly, printing the command that resumes.
"""

from __future__ import annotations

import os

import ml_collections
from absl import flags

from gan_jax import cli
from gan_jax.training.devices import HostState
from gan_jax.training.loop import TrainingResult, train_runs
from gan_jax.training.runs import Run


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
    return train(config, workdir).states[0]


def train(config: ml_collections.ConfigDict, workdir: str) -> TrainingResult:
    """`train_and_evaluate`, returning where training started and ended too."""
    return train_runs([Run(workdir, config)])


def main(argv) -> int:
    del argv
    values = flags.FLAGS
    workdir = values.workdir or os.path.join("runs", cli.config_stem(values["config"].config_filename))
    cli.setup_logging()

    def run():
        cli.join_distributed(values)
        return train(values.config, workdir)
    return cli.training_command("gan_jax.train", workdir, run)


def _define_flags() -> None:
    cli.define_config_flag()
    flags.DEFINE_string("workdir", None, "Run folder (default: runs/<config file stem>).")
    cli.define_distributed_flags()
    flags.mark_flags_as_required(["config"])


def run_from_command_line() -> None:
    """`python -m gan_jax.train` and the console script `gan-jax-train`."""
    cli.start(main, _define_flags, tune_cpu=True)


if __name__ == "__main__":
    run_from_command_line()
