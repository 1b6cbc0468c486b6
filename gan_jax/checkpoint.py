"""Checkpoints of the whole training state with orbax: restore-or-init, save on a cadence, wait.

Orbax writes each step into a temporary folder and renames it only once complete, so a run killed
mid-save leaves nothing that a later run would restore half-written; `latest_step` sees finished
checkpoints only. The typed PRNG key is saved as its raw key data and wrapped again on restore.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from gan_jax.errors import CheckpointError
from gan_jax.state import TrainState


def _to_saveable(state: TrainState) -> TrainState:
    """The state with its typed key as raw uint32 key data; works on abstract states too."""
    if isinstance(state.key, jax.ShapeDtypeStruct):
        return state.replace(key=jax.eval_shape(jax.random.key_data, state.key))
    return state.replace(key=jax.random.key_data(state.key))


def _path_name(path) -> str:
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
    return "/".join(parts)


def _shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {_path_name(path): (tuple(leaf.shape), str(np.dtype(leaf.dtype))) for path, leaf in leaves}


class Checkpointer:
    """The run's checkpoint folder: a thin layer over `ocp.CheckpointManager` for `TrainState`."""

    def __init__(self, directory: str, keep: int):
        # Orbax needs absolute paths.
        self.directory = os.path.abspath(directory)
        try:
            self._manager = ocp.CheckpointManager(
                self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True),
                # Registered up front so a fresh manager can read metadata before any save/restore.
                item_handlers=ocp.StandardCheckpointHandler())
        except OSError as e:
            raise CheckpointError(f"cannot use checkpoint folder {self.directory}: {e}") from None

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore(self, abstract_state: TrainState, step: int | None = None) -> TrainState | None:
        """The state saved at `step` (default: the latest), or None when the folder holds none.

        Raises:
          CheckpointError: the checkpoint's shapes differ from `abstract_state`'s (another config).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        target = _to_saveable(abstract_state)
        saved = _shapes(self._manager.item_metadata(step).tree)
        wanted = _shapes(target)
        if saved != wanted:
            differing = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
            first = differing[0]
            raise CheckpointError(
                f"checkpoint at step {step} in {self.directory} does not fit this config "
                f"({len(differing)} arrays differ, e.g. {first}: saved {saved.get(first, 'absent')}, "
                f"config gives {wanted.get(first, 'absent')}); use another --workdir")
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(target))
        return restored.replace(key=jax.random.wrap_key_data(restored.key))

    def save(self, state: TrainState) -> None:
        """Starts an asynchronous save of `state` at its step (no-op if that step is saved already)."""
        step = int(state.step)
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.StandardSave(_to_saveable(state)), force=True)

    def wait(self) -> None:
        """Blocks until every started save is complete on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
