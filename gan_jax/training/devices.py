"""The devices a run uses, and the state's two forms.

- Which devices: the first `config.num_devices` local devices of every process, in process then local
  order (`participating_devices`); joining a multi-process run (`initialize_distributed`); the XLA
  options the train step compiles with (`compiler_options`).
- The host form of the state (`HostState`: numpy leaves, the PRNG key as raw key data) is what
  checkpoints hold: one unreplicated copy, independent of how many devices trained it, so a run saved
  on 4 devices resumes on 2 or 1. The key changes form here only (`wrap_key`, `with_key_data`, and
  `to_host` / `typed_key` for whole states), so the key's implementation is chosen in one place.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from gan_jax.errors import ConfigError, UserError
from gan_jax.training.state import TrainState

HostState = TrainState  # with numpy leaves and `key` as uint32 key data

# XLA:CPU hands convolutions to YNNPACK by default. For this model's convolutions (and their
# gradients) XLA's Eigen path is faster (measured: docs/speed.md, Per layer). Dots and reductions stay with
# YNNPACK. Per executable, not process-wide (XLA_FLAGS), so nothing else in the process changes. The
# jitted steps get them (one device, "jit" over several, a sweep's runs); pmap takes no compiler
# options, and shard_map keeps XLA's defaults so that those two per-device modes stay bit-identical
# (several CPU devices in one process are for testing).
_CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}


DETERMINISTIC_XLA_FLAG = "--xla_gpu_deterministic_ops=true"


def request_deterministic_xla(enabled: bool = True) -> None:
    """Asks XLA for deterministic GPU kernels (scatter, reductions).

    XLA reads its flags when the backend starts, so this must run before the first computation; CPU
    results are deterministic already and ignore the flag.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if enabled and DETERMINISTIC_XLA_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {DETERMINISTIC_XLA_FLAG}".strip()


def wrap_key(key_data: Any) -> jax.Array:
    """Raw key data (a host state's `key`) as the typed PRNG key the steps take."""
    return jax.random.wrap_key_data(key_data)


def with_key_data(state: Any) -> Any:
    """A state (or stack of states) with its typed key as raw key data, its leaves left where they
    are (on the devices, or abstract under `jax.eval_shape`)."""
    return state.replace(key=jax.random.key_data(state.key))


def to_host(state: TrainState) -> HostState:
    """A single-copy state (on a device, or already numpy) as numpy, its typed key as raw key data."""
    return jax.device_get(with_key_data(state))


def typed_key(state: Any) -> Any:
    """A placed host-form state (or stack of states) with its key data wrapped as typed keys again."""
    return state.replace(key=wrap_key(state.key))


def initialize_distributed(coordinator: str | None, num_processes: int | None,
                           process_id: int | None, bind_address: str | None, timeout_s: int) -> None:
    """Joins a multi-process run through `jax.distributed` (the JAX runtime is the transport).

    With no coordinator, JAX detects the cluster itself (SLURM, TPU pods, Open MPI...). A process
    that cannot reach the others within `timeout_s` fails instead of hanging, and so does one whose
    peer stops answering for as long (the coordination service's heartbeat).

    Raises:
      UserError: the processes could not connect.
    """
    # CPU devices of several processes talk through gloo; GPUs and TPUs ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                                   process_id=process_id, coordinator_bind_address=bind_address,
                                   initialization_timeout=timeout_s,
                                   heartbeat_timeout_seconds=timeout_s)
    except (RuntimeError, ValueError, jax.errors.JaxRuntimeError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"could not join the distributed run (coordinator {coordinator}, "
                        f"{num_processes} processes, this is {process_id}): {first_line}") from None


@functools.cache
def compiler_options() -> dict[str, str]:
    """XLA options the jitted train steps are compiled with on this backend.

    Empty off CPU, and where this XLA does not know the options (they are experimental flags and may
    be renamed): the step then compiles with XLA's defaults instead of failing.
    """
    if jax.default_backend() != "cpu":
        return {}
    try:
        jax.jit(lambda x: x + 1, compiler_options=_CPU_COMPILER_OPTIONS).lower(0.0).compile()
    except jax.errors.JaxRuntimeError:
        return {}
    return dict(_CPU_COMPILER_OPTIONS)


def local_count(config: ml_collections.ConfigDict) -> int:
    """How many of this process's devices the config asks for (config.num_devices, 0: all)."""
    num_local = config.num_devices or jax.local_device_count()
    if num_local > jax.local_device_count():
        raise ConfigError(f"config.num_devices={num_local} but this process has only "
                          f"{jax.local_device_count()} {jax.default_backend()} device(s)")
    return num_local


def participating_devices(num_local: int) -> list[jax.Device]:
    """The first `num_local` devices of every process, in process then local order (the axis order)."""
    by_process: dict[int, list[jax.Device]] = {}
    for device in jax.devices():
        by_process.setdefault(device.process_index, []).append(device)
    order = {device.id: i for i, device in enumerate(jax.local_devices())}
    devices = []
    for process in sorted(by_process):
        ranked = sorted(by_process[process], key=lambda d: order.get(d.id, d.id))
        devices.extend(ranked[:num_local])
    return devices


def stack(trees: list[Any]) -> Any:
    """Host trees of one structure -> one tree whose leaves have a leading axis, one entry per tree."""
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *trees)


def unstack(tree: Any, count: int) -> list[Any]:
    """The inverse of `stack`: `count` host trees."""
    return [jax.tree.map(lambda leaf: np.asarray(leaf[i]), tree) for i in range(count)]
