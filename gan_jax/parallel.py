"""The one place that maps the per-device step over devices, and moves state between host and devices.

- One device in total: `jax.jit`, state donated.
- Several (`config.parallel`): `jax.pmap` (default) or `jax.shard_map` under `jax.jit`, over the same
  per-device `steps.train_step` with a named axis. Each device takes its contiguous slice of the very
  global batch a one-device run would use; gradients, metrics and BatchNorm statistics are averaged over
  the axis, so N devices train the model one device would, up to float rounding.
- Several processes (`jax.distributed`): the same, with each process driving its local devices; the
  named axis spans every device of every process.

The host-side form of the state (`HostState`: numpy leaves, the key as raw key data) is what checkpoints
hold: one unreplicated copy, independent of how many devices trained it, so a run saved on 4 devices
resumes on 2 or 1.

A sweep (`SweepParallel`) maps the same step over runs instead: every run on one device with its own
state, data order and hyperparameters, several runs in one program, the runs spread over the devices.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gan_jax import input_pipeline, steps
from gan_jax.errors import ConfigError, UserError
from gan_jax.state import GAN, HYPERPARAMETERS, Hyperparams, TrainState

AXIS = "data"  # the named device axis collectives average over
MODES = ("pmap", "shard_map")
RUNS_AXIS = "runs"  # the device axis a sweep's runs are spread over
# How a sweep runs its runs inside one program: "vmap" batches them into every op (per-run weights
# make each convolution a grouped one), "unrolled" has one copy of the step per run, "map" is a
# lax.map loop over the runs. "auto" picks by backend (measured; see README, Sweeps).
SWEEP_FORMS = ("auto", "vmap", "unrolled", "map")

HostState = TrainState  # with numpy leaves and `key` as uint32 key data

# XLA:CPU hands convolutions to YNNPACK by default. For this model's convolutions (and their
# gradients) XLA's Eigen path is faster: the train step runs about 15% faster at batch 64 and 256 on
# a 2-core AMD EPYC (see README, Speed). Dots and reductions stay with YNNPACK. Per executable, not
# process-wide (XLA_FLAGS), so nothing else in the process changes. Only the one-device step gets
# them: pmap takes no compiler options, and shard_map keeps XLA's defaults so that the two
# multi-device modes stay bit-identical (several CPU devices in one process are for testing).
_CPU_COMPILER_OPTIONS = {
    "xla_cpu_experimental_ynn_fusion_type":
        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE",
}


def to_host(state: TrainState) -> HostState:
    """A device-resident single-copy state as numpy, its typed key as raw key data."""
    return jax.device_get(state.replace(key=jax.random.key_data(state.key)))


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
    """XLA options the train step is compiled with on this backend.

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


def participating_devices(num_local: int) -> list[jax.Device]:
    """The first `num_local` devices of every process, in process then local order (the axis order)."""
    by_process: dict[int, list[jax.Device]] = {}
    for device in jax.devices():
        by_process.setdefault(device.process_index, []).append(device)
    local = jax.local_devices()
    order = {device.id: i for i, device in enumerate(local)}
    devices = []
    for process in sorted(by_process):
        ranked = sorted(by_process[process], key=lambda d: order.get(d.id, d.id))
        devices.extend(ranked[:num_local])
    return devices


class DataParallel:
    """Compiles the train step for the configured devices and lays out state and data for it.

    Attributes:
      mode: "jit" (one device in total), "pmap" or "shard_map".
      num_devices: devices taking part, over all processes.
      gan: models and optimizers, with BatchNorm averaging over the device axis when there is one.
    """

    def __init__(self, config: ml_collections.ConfigDict, total_steps: int = 0):
        num_local = config.num_devices or jax.local_device_count()
        if num_local > jax.local_device_count():
            raise ConfigError(f"config.num_devices={num_local} but this process has only "
                              f"{jax.local_device_count()} {jax.default_backend()} device(s)")
        self.local_devices = jax.local_devices()[:num_local]
        self.devices = participating_devices(num_local)
        self.num_devices = len(self.devices)
        if config.batch_size % self.num_devices:
            raise ConfigError(f"config.batch_size={config.batch_size} does not divide evenly over "
                              f"{self.num_devices} devices")
        self.mode = "jit" if self.num_devices == 1 else config.parallel
        group = config.model.d_minibatch_std
        if group and (config.batch_size // self.num_devices) % group:
            raise ConfigError(f"config.model.d_minibatch_std={group} does not divide each device's "
                              f"{config.batch_size // self.num_devices} images into whole groups")
        self.gan = GAN.from_config(config, axis_name=None if self.mode == "jit" else AXIS,
                                   total_steps=total_steps)
        self._mesh = Mesh(np.array(self.devices), (AXIS,))
        self._local_mesh = Mesh(np.array(self.local_devices), (AXIS,))
        # K steps per call run as a rolled loop: as fast as unrolled and quicker to compile, except
        # with the "xla" transposed convolution on CPU, whose gradients need unrolling there
        # (see steps.train_steps).
        self.unroll = config.model.conv_transpose == "xla" and jax.default_backend() == "cpu"
        self._compiled: dict[int, Callable] = {}
        self.train_step = self.train_steps(1)

    def _compile_train_step(self, num_steps: int = 1) -> Callable:
        """`state, metrics = step(state, images)` running `num_steps` steps per call.

        The input state is donated (do not reuse it). With num_steps > 1 the metrics are stacked
        over the steps, shape (num_steps,).
        """
        if num_steps == 1:
            step = steps.train_step
        else:
            step = functools.partial(steps.train_steps, num_steps=num_steps, unroll=self.unroll)
        if self.mode == "jit":
            return jax.jit(functools.partial(step, gan=self.gan), donate_argnums=0,
                           compiler_options=compiler_options())
        per_device = functools.partial(step, gan=self.gan, axis_name=AXIS)
        if self.mode == "pmap":
            devices = None if len(self.local_devices) == jax.local_device_count() else self.devices
            return jax.pmap(per_device, axis_name=AXIS, devices=devices, donate_argnums=0)
        # shard_map: state, data and metrics replicated; the pmeans inside make them agree. check_vma
        # is off so that, as under pmap, jax.grad of replicated parameters gives each device's local
        # gradient (with it on, grad would already psum over devices, and the step's pmean of the
        # gradients would then be N times too large).
        mapped = jax.shard_map(per_device, mesh=self._mesh, in_specs=(P(), P()), out_specs=(P(), P()),
                               check_vma=False)
        return jax.jit(mapped, donate_argnums=0)

    def train_steps(self, num_steps: int) -> Callable:
        """The compiled call running `num_steps` steps (compiled once per count, on first use)."""
        if num_steps not in self._compiled:
            self._compiled[num_steps] = self._compile_train_step(num_steps)
        return self._compiled[num_steps]

    def put_state(self, host_state: HostState) -> TrainState:
        """Lays out one host copy of the state for the step: on the device, or replicated."""
        return self._replicate(host_state, wrap_key=True)

    def put_data(self, tree: Any) -> Any:
        """Host arrays (the training split, data orders) on every participating device."""
        return self._replicate(tree, wrap_key=False)

    def _replicate(self, tree: Any, wrap_key: bool) -> Any:
        if self.mode == "jit":
            placed = jax.device_put(tree, self.local_devices[0])
        elif self.mode == "pmap":
            # pmap takes per-process arrays with a leading axis of local devices.
            n = len(self.local_devices)
            stacked = jax.tree.map(lambda x: np.broadcast_to(x, (n, *np.shape(x))), tree)
            placed = jax.device_put(stacked, NamedSharding(self._local_mesh, P(AXIS)))
        else:
            sharding = NamedSharding(self._mesh, P())
            placed = jax.tree.map(
                lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree)
        if wrap_key:
            placed = placed.replace(key=jax.random.wrap_key_data(placed.key))
        return placed

    def get_state(self, state: TrainState) -> HostState:
        """One host copy of the (replicated) state: numpy leaves, the key as raw key data."""
        return self._one_copy(state.replace(key=jax.random.key_data(state.key)))

    def get_metrics(self, metrics: Any) -> list[dict[str, np.ndarray]]:
        """One host copy of a call's (device-averaged) metrics, as one dict per step."""
        host = self._one_copy(metrics)
        if np.ndim(next(iter(host.values()))) == 0:
            return [host]
        return [dict(zip(host, values)) for values in zip(*host.values())]

    def _one_copy(self, tree: Any) -> Any:
        if self.mode == "pmap":
            return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data)[0], tree)
        if self.mode == "shard_map":
            return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data), tree)
        return jax.device_get(tree)


def compile_generate(gan: GAN) -> Callable:
    """`images = generate(variables, noise[, labels])`: G in inference mode on the default device,
    with G's variables from `TrainState.sampling_variables()`."""
    return jax.jit(functools.partial(steps.generate, gan))


def all_finite(tree: Any) -> bool:
    """Whether every float in a host tree is finite."""
    return all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(tree)
               if np.issubdtype(np.asarray(leaf).dtype, np.floating))


def sweep_form(form: str) -> str:
    """The form "auto" stands for on this backend: a copy of the step per run on CPU, where XLA runs
    the grouped convolutions of "vmap" slowly; "vmap" on accelerators, where they fill the chip."""
    if form != "auto":
        return form
    return "unrolled" if jax.default_backend() == "cpu" else "vmap"


def stack(trees: list[Any]) -> Any:
    """Host trees of one structure -> one tree whose leaves have a leading axis, one entry per tree."""
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(leaf) for leaf in leaves]), *trees)


def unstack(tree: Any, count: int) -> list[Any]:
    """The inverse of `stack`: `count` host trees."""
    return [jax.tree.map(lambda leaf: np.asarray(leaf[i]), tree) for i in range(count)]


def sweep_hyperparams(configs: list[ml_collections.ConfigDict]) -> Hyperparams:
    """Each run's hyperparameters as one array per field, with a leading run axis."""
    per_run = [Hyperparams.from_config(config) for config in configs]
    return Hyperparams(**{name: np.asarray([getattr(hp, name) for hp in per_run],
                                           np.int32 if name == "ema_start" else np.float32)
                          for name in HYPERPARAMETERS})


class SweepParallel:
    """Compiles the train step for a sweep's runs, all in one program, and lays out their states.

    States, data orders and hyperparameters are stacked: every leaf has a leading run axis. Each
    run's step is the one-run `steps.train_step` with the run's own hyperparameters and data order
    (the images are shared), in the form `sweep_form` picks. With several devices the run axis is
    sharded over them (`jax.shard_map`), each device running its share of the runs in that form.

    Attributes:
      num_runs: runs in the sweep.
      num_devices: devices the runs are spread over.
      form: "vmap", "unrolled" or "map".
      gan: models and settings (no device axis: every run is on one device).
    """

    def __init__(self, config: ml_collections.ConfigDict, num_runs: int, form: str = "auto",
                 total_steps: int = 0):
        num_local = config.num_devices or jax.local_device_count()
        if jax.process_count() > 1:
            raise ConfigError("a sweep runs in one process; spread its runs over that process's devices")
        if num_local > jax.local_device_count():
            raise ConfigError(f"config.num_devices={num_local} but this process has only "
                              f"{jax.local_device_count()} {jax.default_backend()} device(s)")
        # The runs spread evenly: as many devices as divide the run count, at most num_local.
        self.num_devices = max(d for d in range(1, num_local + 1) if num_runs % d == 0)
        self.devices = jax.local_devices()[:self.num_devices]
        self.num_runs = num_runs
        self.form = sweep_form(form)
        if self.form not in SWEEP_FORMS[1:]:
            raise ConfigError(f"unknown sweep form {form!r}; expected one of {SWEEP_FORMS}")
        self.gan = GAN.from_config(config, total_steps=total_steps)
        self.unroll = config.model.conv_transpose == "xla" and jax.default_backend() == "cpu"
        self._mesh = Mesh(np.array(self.devices), (RUNS_AXIS,))
        self._compiled: dict[int, Callable] = {}

    def _per_run(self, num_steps: int) -> Callable:
        """`(state, data, hp) -> (state, metrics)` of one run, `num_steps` steps."""
        if num_steps == 1:
            return functools.partial(steps.train_step, gan=self.gan)
        return functools.partial(steps.train_steps, gan=self.gan, num_steps=num_steps,
                                 unroll=self.unroll)

    def _local_runs(self, num_steps: int) -> Callable:
        """`(states, data, hps) -> (states, metrics)` over stacked runs, in this sweep's form."""
        per_run = self._per_run(num_steps)

        def one(state, orders, hp, images, labels):
            return per_run(state, input_pipeline.TrainData(images, orders, labels), hp=hp)

        if self.form == "vmap":
            def runs(states, data, hps):
                return jax.vmap(one, in_axes=(0, 0, 0, None, None))(states, data.orders, hps,
                                                                     data.images, data.labels)
        elif self.form == "map":
            def runs(states, data, hps):
                return jax.lax.map(lambda args: one(*args, data.images, data.labels),
                                   (states, data.orders, hps))
        else:  # unrolled: a copy of the step per run, each reading its slice of the stacked inputs
            def runs(states, data, hps):
                count = data.orders.shape[0]
                outputs = [one(*jax.tree.map(lambda x: x[i], (states, data.orders, hps)), data.images,
                               data.labels) for i in range(count)]
                return jax.tree.map(lambda *leaves: jax.numpy.stack(leaves), *outputs)
        return runs

    def train_steps(self, num_steps: int) -> Callable:
        """`states, metrics = step(states, data, hps)`, compiled once per step count on first use.

        `data` is a TrainData whose orders have a leading run axis; the states are donated; each
        metric comes back with shape (runs,) or (runs, num_steps).
        """
        if num_steps not in self._compiled:
            runs = self._local_runs(num_steps)
            if self.num_devices == 1:
                compiled = jax.jit(runs, donate_argnums=0, compiler_options=compiler_options())
            else:
                sharded = input_pipeline.TrainData(P(), P(RUNS_AXIS), P())
                compiled = jax.jit(jax.shard_map(runs, mesh=self._mesh,
                                                 in_specs=(P(RUNS_AXIS), sharded, P(RUNS_AXIS)),
                                                 out_specs=(P(RUNS_AXIS), P(RUNS_AXIS)),
                                                 check_vma=False), donate_argnums=0)
            self._compiled[num_steps] = compiled
        return self._compiled[num_steps]

    def _put(self, tree: Any, runs_axis: bool) -> Any:
        spec = P(RUNS_AXIS) if runs_axis else P()
        return jax.device_put(tree, NamedSharding(self._mesh, spec))

    def put_states(self, host_states: list[HostState]) -> TrainState:
        """The runs' host states stacked and placed, the keys wrapped."""
        placed = self._put(stack(host_states), runs_axis=True)
        return placed.replace(key=jax.random.wrap_key_data(placed.key))

    def put_data(self, images: np.ndarray, orders: list[np.ndarray],
                 labels: np.ndarray | None = None) -> input_pipeline.TrainData:
        """The shared images (and labels) on every device and each run's data order (see
        `steps.data_orders`)."""
        return input_pipeline.TrainData(self._put(images, runs_axis=False), self.put_orders(orders),
                                        None if labels is None else self._put(labels, runs_axis=False))

    def put_orders(self, orders: list[np.ndarray]) -> jax.Array:
        """Each run's data order of an epoch, stacked and placed with its run."""
        return self._put(np.stack(orders), runs_axis=True)

    def put_hyperparams(self, hyperparams: Hyperparams) -> Hyperparams:
        return self._put(hyperparams, runs_axis=True)

    def get_states(self, states: TrainState) -> list[HostState]:
        """One host state per run."""
        return unstack(jax.device_get(states.replace(key=jax.random.key_data(states.key))),
                       self.num_runs)

    def get_metrics(self, metrics: Any) -> list[list[dict[str, np.ndarray]]]:
        """Per run, the call's metrics as one dict per step."""
        host = jax.device_get(metrics)
        per_run = []
        for values in unstack(host, self.num_runs):
            if np.ndim(next(iter(values.values()))) == 0:
                per_run.append([values])
            else:
                per_run.append([dict(zip(values, step)) for step in zip(*values.values())])
        return per_run
