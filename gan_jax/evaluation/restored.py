"""A trained run read back from its folder: its config, networks and state at a checkpoint. What
`gan_jax.evaluate` and `gan_jax.sample` start from; reading never changes the folder.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

import ml_collections
import numpy as np

from gan_jax import config as config_lib
from gan_jax.errors import CheckpointError
from gan_jax.model import inference
from gan_jax.training import workdir as workdir_lib
from gan_jax.training.checkpoint import Checkpointer, abstract_host_state
from gan_jax.training.devices import HostState
from gan_jax.training.spec import GANSpec
from gan_jax.training.state import abstract_train_state

class RestoredRun(NamedTuple):
    """A training run restored from its workdir: its config, models and state at one checkpoint."""

    workdir: str
    config: ml_collections.ConfigDict
    spec: GANSpec
    state: HostState
    step: int

    def generator_variables(self, use_ema: bool = True) -> dict[str, Any]:
        """G's variables to sample with: the EMA generator's when the run keeps one and `use_ema`."""
        return self.state.sampling_variables(use_ema)

    def generator_labels(self, num: int) -> np.ndarray | None:
        """The classes G is asked for when `num` images are drawn without one named: a conditional
        run's in turn (`inference.balanced_labels`), a self-conditioned run's clusters in their
        proportions (`inference.share_labels`); None for an unconditional run."""
        if self.config.model.num_classes:
            return inference.balanced_labels(num, self.config.model.num_classes)
        if self.state.clusters is not None:
            return inference.share_labels(self.state.clusters.counts, num)
        return None

    def generator_name(self, use_ema: bool = True) -> str:
        """"ema" or "raw": which generator `generator_variables(use_ema)` gives."""
        return "ema" if use_ema and self.state.generator_ema is not None else "raw"


def load_config(workdir: str, data_dir: str | None = None) -> ml_collections.ConfigDict:
    """The resolved config a run saved in `workdir/config.json`, validated; with `data_dir`, reading
    its data from there instead (for a run whose data moved).

    Raises:
      UserError: no such workdir, no config.json in it (no run), or an unreadable or invalid one.
    """
    if not os.path.isdir(workdir):
        raise CheckpointError(f"workdir {workdir} does not exist")
    config = workdir_lib.read_config(workdir)
    if config is None:
        raise CheckpointError(f"{workdir} holds no training run (no config.json)")
    if data_dir:
        config.data.dir = os.path.abspath(os.path.expanduser(data_dir))
    config_lib.validate(config)
    return config


def load_run(workdir: str, step: int | None = None, data_dir: str | None = None) -> RestoredRun:
    """Restores a run's config and the checkpoint at `step` (default: the latest).

    Args:
      workdir: the run's folder, holding config.json and checkpoints/.
      step: which checkpoint; None for the newest that restores (damaged ones are skipped with a
        warning and left as they are: reading never changes a run's folder).
      data_dir: where the run's data is now, if it moved (see `load_config`).

    Returns:
      The `RestoredRun`.

    Raises:
      UserError: no run, no checkpoint (at that step), a damaged checkpoint at that step, or a
        checkpoint that does not fit the config.
    """
    workdir = os.path.abspath(workdir)
    config = load_config(workdir, data_dir)
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    # Checked first: the checkpointer would create the folder.
    if not os.path.isdir(checkpoint_dir):
        raise CheckpointError(f"{workdir} holds no checkpoints")
    spec = GANSpec.from_config(config)
    checkpointer = Checkpointer(checkpoint_dir, config.keep_checkpoints)
    try:
        # A self-conditioned run's state holds a cluster per training image: as many as were saved.
        num_images = checkpointer.saved_shape("clusters/assignments", step)[0] if spec.clusters else 0
        state = checkpointer.restore(abstract_host_state(abstract_train_state(spec, 0, num_images)),
                                     step)
        if state is None:
            raise CheckpointError(f"{checkpoint_dir} holds no checkpoint")
    finally:
        checkpointer.close()
    return RestoredRun(workdir, config, spec, state, int(state.step))
