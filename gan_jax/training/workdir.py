"""A run's folder: creating it, one training process at a time (a lock), and the record of its config.

- `prepare` creates the workdir and checks that it can be written, before any work is done.
- `Lock` keeps a second `gan_jax.train` (or sweep) out of a workdir a run is training in. It is an
  advisory `flock` on `workdir/lock`, which the kernel releases however the holder ends (exit, crash,
  kill -9), so a lock is never stale; the file names the holder (pid, host) for the error message.
  Only process 0 of a distributed run takes it; `evaluate` and `sample` only read and take none.
- `check_same_run` compares the config a run resumes with against the one it was trained with: what
  defines the run (the keys declared `defines_run` in `gan_jax.config`) must not change; anything else
  may, and `record_config` reports it key by key. config.json holds the config in force;
  config_history.jsonl one line per start. Paths in the config (data.dir) are recorded absolute, so
  the run's folder works from anywhere.
"""

from __future__ import annotations

import datetime
import fcntl
import json
import os
import socket
from typing import Any

import ml_collections

from gan_jax import config as config_lib
from gan_jax import files
from gan_jax.errors import CheckpointError, ConfigError, UserError
from gan_jax.log import logger

LOCK_FILE = "lock"
CONFIG_FILE = "config.json"
CONFIG_HISTORY_FILE = "config_history.jsonl"


def prepare(workdir: str, folders: tuple[str, ...] = ("samples",)) -> str:
    """Creates the workdir (and `folders` in it) and checks it can be written; its absolute path."""
    workdir = os.path.abspath(workdir)
    try:
        for folder in folders or ("",):
            os.makedirs(os.path.join(workdir, folder), exist_ok=True)
        probe = os.path.join(workdir, f".write_test.{os.getpid()}")  # per process: hosts may share it
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise UserError(f"cannot write to workdir {workdir}: {e.strerror or e}") from None
    return workdir


class Lock:
    """The workdir's training lock, held from `acquire` to `release` (or the process's end).

    Raises (from acquire):
      UserError: another live process holds it; the message names its pid and host.
    """

    def __init__(self, workdir: str):
        self.path = os.path.join(workdir, LOCK_FILE)
        self._file = None

    def acquire(self) -> "Lock":
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            raise UserError(f"{os.path.dirname(self.path)} is in use by another training process "
                            f"({_describe(holder)}); wait for it to finish, stop it, or use another "
                            f"--workdir") from None
        except OSError as e:
            handle.close()
            raise UserError(f"cannot lock {self.path}: {e.strerror or e}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": _now()}) + "\n")
        handle.flush()
        self._file = handle
        return self

    def release(self) -> None:
        if self._file is not None:
            # The file stays (removing it would race with a process about to lock it); the lock goes.
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> "Lock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _describe(holder: str) -> str:
    try:
        info = json.loads(holder)
        return f"pid {info['pid']} on host {info['host']}, since {info['since']}"
    except (ValueError, KeyError, TypeError):
        return "holder unknown"


def _now() -> str:
    # Bookkeeping only (who holds a lock, when a run started); nothing numeric depends on it.
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def read_config(workdir: str) -> ml_collections.ConfigDict | None:
    """The config a run in `workdir` was last started with (older versions' keys filled in), or None."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            config = ml_collections.ConfigDict(json.load(f))
    except (OSError, ValueError, TypeError) as e:  # TypeError: JSON that is not an object
        raise CheckpointError(f"cannot read {path}: {e}") from None
    return config_lib.with_defaults_for_older_runs(config)


def config_changes(previous: ml_collections.ConfigDict,
                   current: ml_collections.ConfigDict) -> dict[str, tuple[Any, Any]]:
    """{key: (previous value, current value)} for every key whose value differs."""
    old, new = config_lib.flatten(previous), config_lib.flatten(current)
    return {key: (old.get(key), new.get(key)) for key in sorted(set(old) | set(new))
            if old.get(key) != new.get(key)}


def check_same_run(previous: ml_collections.ConfigDict, current: ml_collections.ConfigDict) -> dict:
    """The changes a resume with `current` makes to a run started with `previous`, which must leave
    the run the same one.

    Raises:
      ConfigError: a key that defines the run changed; the message names each such key.
    """
    changes = config_changes(previous, current)
    defining = [key for key in changes if config_lib.defines_the_run(key, *changes[key])]
    if defining:
        listed = ", ".join(f"{key}: {changes[key][0]!r} -> {changes[key][1]!r}" for key in defining)
        raise ConfigError(f"cannot resume with a config that defines another run ({listed}); keep "
                          f"the run's values or use another --workdir")
    return changes


def record_config(workdir: str, config: ml_collections.ConfigDict, step: int,
                  changes: dict[str, tuple[Any, Any]]) -> None:
    """config.json <- the config in force; config_history.jsonl += this start (step, changes, config)."""
    if changes:
        logger.warning("resuming at step %d with a changed config: %s", step,
                       "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in changes.items()))
    entry = {"step": step, "started": _now(),
             "changed": {key: [old, new] for key, (old, new) in changes.items()},
             "config": config.to_dict()}
    try:
        with open(os.path.join(workdir, CONFIG_HISTORY_FILE), "a") as f:
            f.write(json.dumps(entry) + "\n")
    except OSError as e:
        raise UserError(f"cannot write {os.path.join(workdir, CONFIG_HISTORY_FILE)}: "
                        f"{e.strerror or e}") from None
    files.write_json(os.path.join(workdir, CONFIG_FILE), config.to_dict())
