"""Checkpoints of the whole training state with orbax: restore-or-init, save on a cadence, wait.

What is saved is the host form of the state (`parallel.HostState`: numpy leaves, the PRNG key as raw
key data): one unreplicated copy, whatever the number of devices or processes that trained it. With
several processes every process takes part in a save, as orbax requires, and the primary one writes.

Orbax writes each step into a temporary folder and renames it only once complete, so a run killed
mid-save leaves nothing that a later run would restore half-written; `latest_step` sees finished
checkpoints only.

On disk the state is a dict of its fields without the optional ones that are None (`generator_ema`
of a run without EMA), so a checkpoint of such a run is exactly what versions before the field wrote,
and each version reads the other's.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from gan_jax.errors import CheckpointError
from gan_jax.state import TrainState


def abstract_host_state(abstract_state: TrainState) -> TrainState:
    """The host form's shapes and dtypes, from an abstract device state (typed key -> key data)."""
    return abstract_state.replace(key=jax.eval_shape(jax.random.key_data, abstract_state.key))


def path_name(path) -> str:
    """"generator/params/ConvTranspose_0/kernel" for a pytree key path."""
    parts = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                parts.append(str(getattr(entry, attr)))
                break
    return "/".join(parts)


def _on_disk(state: TrainState) -> dict[str, Any]:
    """The state as saved: its fields by name, leaving out those that are None."""
    fields = {f.name: getattr(state, f.name) for f in dataclasses.fields(state)}
    return {name: value for name, value in fields.items() if value is not None}


def _shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {path_name(path): (tuple(leaf.shape), str(np.dtype(leaf.dtype))) for path, leaf in leaves}


class Checkpointer:
    """The run's checkpoint folder: a thin layer over `ocp.CheckpointManager` for the host state."""

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
        """The host state saved at `step` (default: the latest), or None when the folder holds none.

        Args:
          abstract_state: shapes and dtypes of the host state to restore (see `abstract_host_state`).
          step: which checkpoint; the latest by default.

        Raises:
          CheckpointError: the checkpoint's shapes differ from `abstract_state`'s (another config).
        """
        step = self.latest_step() if step is None else step
        if step is None:
            return None
        saved = _shapes(self._manager.item_metadata(step).tree)
        wanted = _shapes(_on_disk(abstract_state))
        if saved != wanted:
            differing = sorted(k for k in set(saved) | set(wanted) if saved.get(k) != wanted.get(k))
            first = differing[0]
            raise CheckpointError(
                f"checkpoint at step {step} in {self.directory} does not fit this config "
                f"({len(differing)} arrays differ, e.g. {first}: saved {saved.get(first, 'absent')}, "
                f"config gives {wanted.get(first, 'absent')}); use another --workdir")
        # numpy targets restore as numpy, on every process, with the optax state types of the target.
        target = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), _on_disk(abstract_state))
        restored = self._manager.restore(step, args=ocp.args.StandardRestore(target))
        return abstract_state.replace(**restored)

    def save(self, host_state: TrainState, extra: dict[str, Any] | None = None) -> None:
        """Starts an asynchronous save of the host state at its step (no-op if already saved).

        Args:
          host_state: the state to save.
          extra: small JSON-able data saved with it (in the step's metadata), e.g. the training
            loop's unlogged metric sums; `extra(step)` reads it back.
        """
        step = int(host_state.step)
        if step in self._manager.all_steps():
            return
        self._manager.save(step, args=ocp.args.StandardSave(_on_disk(host_state)), force=True,
                           custom_metadata=extra or {})

    def extra(self, step: int) -> dict[str, Any]:
        """What `save` was given as `extra` for `step` ({} for checkpoints saved without)."""
        return dict(self._manager.metadata(step).custom_metadata or {})

    def wait(self) -> None:
        """Blocks until every started save is complete on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
