"""The runs' folders while they train: checked before anything is written, then created, locked, their
checkpoints opened and restored (every run at one step), and their configs recorded.

A sweep's folder holds its runs' folders and `sweep.json`, and is locked too. Only process 0 of a
distributed run takes the locks and writes the records; every process opens the checkpoints (orbax
saves and restores with all of them).
"""

from __future__ import annotations

import os

import jax

from gan_jax.errors import UserError
from gan_jax.log import logger
from gan_jax.training import checkpoint as checkpoint_lib
from gan_jax.training import devices, runs as runs_lib, workdir as workdir_lib
from gan_jax.training.checkpoint import Checkpointer, abstract_host_state
from gan_jax.training.runs import Run
from gan_jax.training.spec import GANSpec
from gan_jax.training.state import abstract_train_state, create_train_state


def check_resume(runs: list[Run], sweep_dir: str | None) -> list[dict]:
    """Each run's config changes against its previous start, read without writing anything.

    Raises:
      ConfigError: a sweep folder holding other runs, or a resume that changes what defines a run.
    """
    if sweep_dir is not None:
        runs_lib.check_same_sweep(sweep_dir, runs)
    changes = []
    for run in runs:
        trained = checkpoint_lib.has_checkpoints(os.path.join(run.workdir, "checkpoints"))
        previous = workdir_lib.read_config(run.workdir) if trained else None
        changes.append(workdir_lib.check_same_run(previous, run.config) if previous is not None else {})
    return changes


class RunFolders:
    """The runs' folders, locked and with their checkpoints open, from creation to `close`."""

    def __init__(self, runs: list[Run], sweep_dir: str | None = None):
        self.runs = runs
        self.is_first = jax.process_index() == 0
        self._locks: list[workdir_lib.Lock] = []
        self.checkpointers: list[Checkpointer] = []
        try:
            if sweep_dir is not None:
                self._lock(workdir_lib.prepare(sweep_dir, folders=()))
            self.dirs = [workdir_lib.prepare(run.workdir) for run in runs]
            for index, (directory, run) in enumerate(zip(self.dirs, runs)):
                self._lock(directory)
                self.checkpointers.append(Checkpointer(os.path.join(directory, "checkpoints"),
                                                       run.config.keep_checkpoints,
                                                       barrier_prefix=f"run_{index}"))
        except BaseException:
            self.close()
            raise

    def _lock(self, directory: str) -> None:
        # One training process per folder (process 0 stands for a distributed run).
        if self.is_first:
            self._locks.append(workdir_lib.Lock(directory).acquire())

    def restore(self, spec: GANSpec, num_train_images: int) -> tuple[list, list[dict]]:
        """Each run's newest good checkpoint, at one step for all (the oldest of their newest), or
        each run's initial state when none has a checkpoint; and what was saved with each."""
        abstract = abstract_host_state(abstract_train_state(spec, 0, num_train_images))
        restored = [c.restore_newest(abstract, set_aside=True) for c in self.checkpointers]
        if all(r is None for r in restored):
            return ([devices.to_host(create_train_state(spec, run.seed, num_train_images))
                     for run in self.runs], [{} for _ in self.runs])
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
        logger.info("resuming from the checkpoint%s at step %d", "s" if len(restored) > 1 else "", step)
        return [r.state for r in restored], [r.extra for r in restored]

    def record_configs(self, step: int, changes: list[dict]) -> None:
        """config.json and config_history.jsonl of each run (process 0), once the checkpoints are
        known to fit, so that a refused resume changes nothing."""
        if self.is_first:
            for directory, run, change in zip(self.dirs, self.runs, changes):
                workdir_lib.record_config(directory, run.config, step, change)

    def last_saved(self, index: int) -> int | None:
        return self.checkpointers[index].latest_step()

    def save(self, index: int, host_state, extra: dict | None) -> None:
        self.checkpointers[index].save(host_state, extra)

    def wait(self) -> None:
        for checkpointer in self.checkpointers:
            checkpointer.wait()

    def close(self) -> None:
        for checkpointer in self.checkpointers:
            checkpointer.close()
        for lock in self._locks:
            lock.release()
