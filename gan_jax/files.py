"""Writing files so that a reader, or a run killed mid-write, never sees half of one."""

from __future__ import annotations

import json
import os
from typing import Any, Callable

from gan_jax.errors import UserError


def atomic_write(path: str, write: Callable[[str], None]) -> None:
    """Calls `write(tmp)` on a per-process temporary name beside `path`, then renames it to `path`.

    Raises:
      UserError: the folder cannot be created or written.
    """
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as e:
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def write_json(path: str, data: Any) -> None:
    """`data` as indented JSON, written atomically."""
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
    atomic_write(path, write)
