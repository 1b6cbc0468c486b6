"""Checkpoints of the whole training state with orbax: restore-or-init, save on a cadence, wait.

What is saved is the host form of the state (`devices.HostState`: numpy leaves, the PRNG key as raw
key data): one unreplicated copy, whatever the number of devices or processes that trained it. With
several processes every process takes part in a save, as orbax requires, and the primary one writes.

Orbax writes each step into a temporary folder and renames it only once complete, so a run killed
mid-save leaves nothing that a later run would restore half-written; `latest_step` sees finished
checkpoints only.

On disk the state is a dict of its fields without the optional ones that are None (`generator_ema`
of a run without EMA), so a checkpoint of such a run is exactly what versions before the field wrote,
and each version reads the other's.

Every saved array's content hash (sha256 of its dtype, shape and bytes) is saved with it, in the step's
metadata, and checked when it is read back: damage anywhere in a checkpoint, inside a data file too,
where the files' own framing does not look, is found. Checkpoints of the versions before the hashes
restore unverified, with a warning (`_verify`). A checkpoint that does not restore completely
(a damaged file or metadata, a copy cut short) or whose arrays differ from their hashes is skipped for
the newest one that does, with a warning naming it and why (`restore_newest`). Training sets it aside as
`<step>.damaged` in the same folder, where orbax neither counts it as a checkpoint nor deletes it
when it rotates the kept ones; the files stay for the user to inspect.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from gan_jax.errors import CheckpointError
from gan_jax.log import logger
from gan_jax.training import devices
from gan_jax.training.state import TrainState

DAMAGED_SUFFIX = ".damaged"
HASHES = "sha256"  # the key of the arrays' content hashes in a checkpoint's custom metadata
# Every key of the custom metadata that versions before the hashes wrote (3192623 up to dc1f597: the
# training loop's unlogged metric sums, reporting/outputs.py's LOG_WINDOW). Written here as those
# versions spelled it, not imported, since it describes checkpoints already on disk.
_KEYS_BEFORE_HASHES = frozenset({"log_window"})
_STEP_METADATA_FILE = "_CHECKPOINT_METADATA"  # where orbax keeps a step's custom metadata
# What reading a damaged checkpoint raises: orbax and tensorstore report unreadable, truncated or
# corrupt files as ValueError (e.g. "OUT_OF_RANGE: Error reading ... in OCDBT database") or OSError,
# malformed metadata as KeyError/TypeError/ValueError.
_READ_ERRORS = (ValueError, OSError, KeyError, TypeError, EOFError, RuntimeError)
# How often a reader lists the checkpoints again when one vanishes under it (a training run's rotation
# removes the oldest, so the newest it then finds is fresh).
_LISTING_ATTEMPTS = 5


def content_hashes(tree: Any) -> dict[str, str]:
    """{array name: sha256 of its dtype, shape and bytes} for every array of a host tree."""
    hashes = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        array = np.ascontiguousarray(leaf)
        digest = hashlib.sha256(f"{array.dtype.str}{array.shape}".encode())
        digest.update(array.tobytes())
        hashes[path_name(path)] = digest.hexdigest()
    return hashes


def _verify(restored: Any, saved: dict[str, str] | None, directory: str, step: int,
            other_keys: frozenset[str] = frozenset()) -> None:
    """Raises DamagedCheckpointError unless every restored array has the hash it was saved with.

    `other_keys` are the step's other custom metadata keys. A checkpoint written before the hashes
    carries no metadata of ours at all (gan_jax 0.1.0) or only keys those versions wrote
    (`_KEYS_BEFORE_HASHES`): it restores with a warning that it could not be verified, since nothing
    but its files' readability vouches for it. Any other metadata without the hashes is damage.
    """
    if saved is None and not other_keys <= _KEYS_BEFORE_HASHES:
        raise DamagedCheckpointError(directory, step, "its content hashes are missing")
    if saved is None:
        logger.warning("checkpoint at step %d in %s holds no content hashes (an older version wrote "
                       "it): restored unverified", step, directory)
        return
    if not isinstance(saved, dict):
        raise DamagedCheckpointError(directory, step, "its content hashes are unreadable")
    got = content_hashes(restored)
    differing = sorted(name for name in set(got) | set(saved) if got.get(name) != saved.get(name))
    if differing:
        raise DamagedCheckpointError(directory, step, f"{len(differing)} array(s) differ from what was "
                                     f"saved (content hash), e.g. {differing[0]}")


class DamagedCheckpointError(CheckpointError):
    """A checkpoint exists but does not restore completely."""

    def __init__(self, directory: str, step: int, reason: str):
        super().__init__(f"checkpoint at step {step} in {directory} is damaged: {reason}")
        self.step = step
        self.reason = reason


class Restored(NamedTuple):
    """A restored checkpoint: the host state, what was saved with it (`save`'s `extra`), its step."""

    state: TrainState
    extra: dict[str, Any]
    step: int


def _reason(error: BaseException) -> str:
    """An orbax/tensorstore error on one short line."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def abstract_host_state(abstract_state: TrainState) -> TrainState:
    """The host form's shapes and dtypes, from an abstract device state (typed key -> key data)."""
    return jax.eval_shape(devices.with_key_data, abstract_state)


def has_checkpoints(directory: str) -> bool:
    """Whether `directory` holds a finished checkpoint, looked up without creating anything (orbax
    renames a step's folder to its number only once the save is complete)."""
    try:
        return any(name.isdigit() and os.path.isdir(os.path.join(directory, name))
                   for name in os.listdir(directory))
    except OSError:
        return False


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

    def __init__(self, directory: str, keep: int, barrier_prefix: str | None = None):
        """Opens (creating) the checkpoint folder `directory`, keeping its `keep` newest checkpoints.

        `barrier_prefix` names this folder's cross-process barriers: with several processes, orbax
        names a save's barriers after its step alone, so the checkpointers of a sweep's runs, saving
        the same step, would meet in one barrier and hang ("Barrier ... is already ongoing"). It must
        be the same in every process (the run's index, not its path: hosts may mount the workdir at
        different paths).
        """
        # Orbax needs absolute paths.
        self.directory = os.path.abspath(directory)
        processes = ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=barrier_prefix)
        try:
            self._manager = self._listing_again_if_rotated(lambda: ocp.CheckpointManager(
                self.directory, options=ocp.CheckpointManagerOptions(
                    max_to_keep=keep, create=True, multiprocessing_options=processes),
                # Registered up front so a fresh manager can read metadata before any save/restore.
                item_handlers=ocp.StandardCheckpointHandler()))
        except OSError as e:
            raise CheckpointError(f"cannot use checkpoint folder {self.directory}: {e}") from None

    def _listing_again_if_rotated(self, list_checkpoints):
        """`list_checkpoints()`, called again when a checkpoint vanishes while orbax lists the folder.

        Orbax lists the step folders, then reads each one's metadata; a run training in this folder
        may rotate one away in between (only readers, which take no lock, meet this). The newer
        listing is then the one to use.
        """
        for attempt in range(_LISTING_ATTEMPTS):
            try:
                return list_checkpoints()
            except FileNotFoundError as e:
                missing = os.path.abspath(os.fspath(e.filename)) if e.filename is not None else None
                in_folder = missing is not None and missing != self.directory and os.path.commonpath(
                    [missing, self.directory]) == self.directory
                if not in_folder or attempt + 1 == _LISTING_ATTEMPTS:
                    raise

    def _reload(self) -> None:
        """Lists the folder again (it changed under this process)."""
        self._listing_again_if_rotated(self._manager.reload)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def restore(self, abstract_state: TrainState, step: int | None = None) -> TrainState | None:
        """The host state saved at `step` (default: the newest that restores), or None without any.

        Args:
          abstract_state: shapes and dtypes of the host state to restore (see `abstract_host_state`).
          step: which checkpoint; by default the newest that restores completely (see
            `restore_newest`; damaged ones are only skipped here, not set aside).

        Raises:
          CheckpointError: no checkpoint at `step`; the checkpoint's shapes differ from
            `abstract_state`'s (another config); or (DamagedCheckpointError) it is damaged.
        """
        if step is None:
            restored = self.restore_newest(abstract_state)
            return None if restored is None else restored.state
        if step not in self._manager.all_steps():
            steps = self.all_steps()
            raise CheckpointError(f"no checkpoint at step {step} in {self.directory} (it holds "
                                  f"{', '.join(map(str, steps)) or 'none'})")
        return self.restore_at(abstract_state, step).state

    def restore_newest(self, abstract_state: TrainState, set_aside: bool = False) -> Restored | None:
        """The newest checkpoint that restores completely; None when the folder holds none.

        Each damaged checkpoint passed over on the way is logged as a warning naming it and why and,
        with `set_aside` (training does this; readers do not), renamed to `<step>.damaged`.

        Raises:
          CheckpointError: every checkpoint is damaged (the message lists them), or the newest good
            one does not fit `abstract_state` (another config).
        """
        damaged: dict[int, DamagedCheckpointError] = {}
        for _ in range(_LISTING_ATTEMPTS):
            restored, vanished = None, False
            for step in reversed(self.all_steps()):
                if step in damaged:
                    continue
                try:
                    restored = self.restore_at(abstract_state, step)
                    break
                except DamagedCheckpointError as e:
                    if not os.path.isdir(os.path.join(self.directory, str(step))):
                        # Gone while being read: a run training in this folder rotated it away (only
                        # readers, which take no lock, meet this). Not damage: list again.
                        vanished = True
                        break
                    logger.warning("skipping the damaged checkpoint at step %d in %s: %s", step,
                                   self.directory, e.reason)
                    damaged[step] = e
            if not vanished:
                break
            self._reload()
        else:
            raise CheckpointError(f"the checkpoints in {self.directory} kept being removed while they were "
                                  f"read (a run training there rotates them); try again, or pass --step")
        if set_aside and damaged:
            self._set_aside(list(damaged))
        if restored is None and damaged:
            listed = "; ".join(f"step {e.step}: {e.reason}" for e in damaged.values())
            raise CheckpointError(f"no checkpoint in {self.directory} restores ({listed}); start "
                                  f"afresh in another --workdir")
        return restored

    def _set_aside(self, steps: list[int]) -> None:
        """Renames damaged checkpoints to <step>.damaged (process 0; every process then re-lists)."""
        if jax.process_index() == 0:
            for step in steps:
                source = os.path.join(self.directory, str(step))
                target, n = source + DAMAGED_SUFFIX, 1
                while os.path.exists(target):
                    n += 1
                    target = f"{source}{DAMAGED_SUFFIX}-{n}"
                os.rename(source, target)
                logger.warning("set the damaged checkpoint aside as %s", target)
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            multihost_utils.sync_global_devices("gan_jax: damaged checkpoints set aside")
        self._reload()

    def saved_shape(self, name: str, step: int | None = None) -> tuple[int, ...]:
        """The shape of array `name` ("clusters/assignments") as saved at `step` (default: in the
        newest checkpoint whose metadata reads): what a reader needs for arrays whose size the
        config does not say.

        Raises:
          CheckpointError: no checkpoint holds such an array.
        """
        for candidate in [step] if step is not None else reversed(self.all_steps()):
            try:
                saved = _shapes(self._manager.item_metadata(candidate).tree)
            except _READ_ERRORS:
                continue
            if name in saved:
                return saved[name][0]
        raise CheckpointError(f"no checkpoint in {self.directory} holds {name}")

    def restore_at(self, abstract_state: TrainState, step: int) -> Restored:
        """The checkpoint at `step`, with what was saved with it (DamagedCheckpointError if damaged)."""
        try:
            saved = _shapes(self._manager.item_metadata(step).tree)
        except _READ_ERRORS as e:
            raise DamagedCheckpointError(self.directory, step, _reason(e)) from None
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
        try:
            restored = self._manager.restore(step, args=ocp.args.StandardRestore(target))
            extra = self._custom_metadata(step)
        except _READ_ERRORS as e:
            raise DamagedCheckpointError(self.directory, step, _reason(e)) from None
        _verify(restored, extra.pop(HASHES, None), self.directory, step, other_keys=frozenset(extra))
        return Restored(abstract_state.replace(**restored), extra, step)

    def _custom_metadata(self, step: int) -> dict[str, Any]:
        """What `save` stored with the step (its `extra` and the hashes), read strictly: orbax logs
        an unreadable metadata file and carries on as if it were empty, which would pass damage off
        as a checkpoint of an older version."""
        path = os.path.join(self.directory, str(step), _STEP_METADATA_FILE)
        try:
            with open(path, "rb") as f:
                json.loads(f.read().decode("utf-8"))
        except (OSError, ValueError) as e:
            raise DamagedCheckpointError(self.directory, step,
                                         f"unreadable {_STEP_METADATA_FILE}: {_reason(e)}") from None
        return dict(self._manager.metadata(step).custom_metadata or {})

    def save(self, host_state: TrainState, extra: dict[str, Any] | None = None) -> None:
        """Starts an asynchronous save of the host state at its step (no-op if already saved).

        Args:
          host_state: the state to save.
          extra: small JSON-able data saved with it (in the step's metadata), e.g. the training
            loop's unlogged metric sums; `restore_newest` gives it back.
        """
        step = int(host_state.step)
        if step in self._manager.all_steps():
            return
        on_disk = _on_disk(host_state)
        self._manager.save(step, args=ocp.args.StandardSave(on_disk), force=True,
                           custom_metadata={**(extra or {}), HASHES: content_hashes(on_disk)})

    def wait(self) -> None:
        """Blocks until every started save is complete on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
