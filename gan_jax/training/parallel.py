"""The train step compiled for the devices, for one run or several, and the layout of its inputs.

`Layout.for_config` decides, before anything is built, how the runs use the devices:

- one run, one device in total: `jax.jit`, state donated;
- one run, several devices, `config.parallel` "pmap" or "shard_map": `jax.pmap` or `jax.shard_map` under
  `jax.jit`, over the same per-device `steps.train_step` with a named axis. Each device takes its
  contiguous slice of the very global batch a one-device run would use; gradients, metrics and
  BatchNorm statistics are averaged over the axis, so N devices train the model one device would, up
  to float rounding. With several processes (`jax.distributed`) each drives its local devices and the
  axis spans every device of every process;
- one run, several devices, `config.parallel="jit"` (the default): one `jax.jit` of the step written for the global
  batch; state and data replicated, the batch laid out over the devices (`NamedSharding`), and XLA
  inserts the reductions (BatchNorm over the global batch, the gradients' means);
- several runs (a sweep): every run with its own state, data order and hyperparameters in one
  program, in one of SWEEP_FORMS, on a (runs, data) mesh: the devices in groups of
  `data_devices`, each group holding its share of the runs and splitting each run's batch over its
  devices (`jax.shard_map` over both axes), over every device of every process.

`ParallelStep` then compiles the step for a `GANSpec` built with the layout's `spec_options()`, and is
the one interface the training loop uses for any of them: states, data and metrics go in and come out
as lists with one entry per run, whole on every process.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gan_jax.data.batches import TrainData
from gan_jax.errors import ConfigError
from gan_jax.training import devices as devices_lib
from gan_jax.training import steps
from gan_jax.training.devices import HostState
from gan_jax.training.spec import GANSpec, Hyperparams

AXIS = "data"  # the named device axis a run's collectives average over
RUNS_AXIS = "runs"  # the device axis a sweep's runs are spread over
# How a sweep runs its runs inside one program: "vmap" batches them into every op (per-run weights
# make each convolution a grouped one), "unrolled" has one copy of the step per run, "map" is a
# lax.map loop over the runs. "auto" picks by backend (measured; see docs/sweeps.md).
SWEEP_FORMS = ("auto", "vmap", "unrolled", "map")
Metrics = dict[str, np.ndarray]


def sweep_form(form: str) -> str:
    """The form "auto" stands for on this backend: a copy of the step per run on CPU, where XLA runs
    the grouped convolutions of "vmap" slowly; "vmap" on accelerators, where they fill the chip."""
    if form not in SWEEP_FORMS:
        raise ConfigError(f"unknown sweep form {form!r}; expected one of {', '.join(SWEEP_FORMS)}")
    if form != "auto":
        return form
    return "unrolled" if jax.default_backend() == "cpu" else "vmap"


@dataclasses.dataclass(frozen=True)
class Layout:
    """How a training program's runs use the devices.

    Attributes:
      mode: for one run, "jit" (one jit of the step for the global batch, sharded over the devices
        when there are several), "pmap" or "shard_map" (the per-device step mapped over them); for
        several, "runs".
      num_runs: runs in the program.
      devices: the participating devices, over all processes, in axis order.
      local_devices: this process's share of them.
      form: for "runs", how they share the program (SWEEP_FORMS without "auto").
      unroll: K steps per call run unrolled (see `steps.train_steps`).
      data_devices: the devices one run's batch is split over; "runs" lays the devices out as a
        (runs, data) mesh of num_devices / data_devices groups, each holding num_runs / groups runs.
    """

    mode: str
    num_runs: int
    devices: tuple
    local_devices: tuple
    form: str | None
    unroll: bool
    data_devices: int = 1

    @classmethod
    def for_config(cls, config: ml_collections.ConfigDict, num_runs: int = 1,
                   form: str = "auto") -> "Layout":
        """The layout for `num_runs` runs of `config`'s kind, checked against the devices at hand.

        Raises:
          ConfigError: more devices asked for than there are, a batch that does not divide over
            them, D's minibatch groups that do not, or a sweep across processes.
        """
        num_local = devices_lib.local_count(config)
        # K steps per call run as a rolled loop: as fast as unrolled and quicker to compile, except
        # with the "xla" transposed convolution on CPU, whose gradients need unrolling there.
        unroll = config.model.conv_transpose == "xla" and jax.default_backend() == "cpu"
        participating = tuple(devices_lib.participating_devices(num_local))
        local = tuple(jax.local_devices()[:num_local])
        total = len(participating)
        if num_runs > 1:
            data = config.data_devices or total // math.gcd(num_runs, total)
            if total % data or num_runs % (total // data):
                raise ConfigError(f"{num_runs} runs on {total} devices with config.data_devices={data}: "
                                  f"the {total // data if total % data == 0 else 'uneven'} device "
                                  f"groups must divide the runs and the data devices the devices")
            if num_runs % jax.process_count():
                raise ConfigError(f"{num_runs} runs do not spread evenly over {jax.process_count()} "
                                  f"processes")
            _check_batch(config, data)
            return cls("runs", num_runs, participating, local, sweep_form(form), unroll, data)
        if config.data_devices not in (0, total):
            raise ConfigError(f"config.data_devices={config.data_devices} but the run has {total} "
                              f"device(s) (config.num_devices); a lone run's batch is split over all")
        _check_batch(config, total)
        mode = "jit" if total == 1 else config.parallel
        return cls(mode, 1, participating, local, None, unroll, total)

    @property
    def batch_axis(self) -> str | None:
        """The device axis the per-device step averages over, BatchNorm's too (None: the step is
        written for the whole batch: on one device, or "jit", where XLA inserts the reductions)."""
        if self.mode == "runs":
            return AXIS if self.data_devices > 1 else None
        return AXIS if self.mode in ("pmap", "shard_map") else None

    @property
    def batch_sharding(self) -> NamedSharding | None:
        """For "jit" on several devices, how the step's global batch is laid out: split over them."""
        if self.mode != "jit" or self.num_devices == 1:
            return None
        return NamedSharding(Mesh(np.array(self.devices), (AXIS,)), P(AXIS))

    def spec_options(self) -> dict[str, Any]:
        """What `GANSpec.from_config` needs to know of the layout: its device axis and batch layout."""
        return {"axis_name": self.batch_axis, "batch_sharding": self.batch_sharding}

    @property
    def num_devices(self) -> int:
        return len(self.devices)

    def describe(self) -> str:
        """E.g. "1 run on 4 cpu devices (pmap)" or "4 runs on 4 cpu devices (2 runs x 2 data
        devices, unrolled form)"."""
        how = self.mode
        if self.mode == "runs":
            groups = self.num_devices // self.data_devices
            how = f"{groups} run groups x {self.data_devices} data devices, {self.form} form"
        runs = f"{self.num_runs} run{'s' if self.num_runs > 1 else ''}"
        processes = f" of {jax.process_count()} processes" if jax.process_count() > 1 else ""
        return f"{runs} on {self.num_devices} {jax.default_backend()} device(s){processes} ({how})"


def _check_batch(config: ml_collections.ConfigDict, data_devices: int) -> None:
    """The batch (and D's minibatch groups) divide over the devices one run is split over."""
    if config.batch_size % data_devices:
        raise ConfigError(f"config.batch_size={config.batch_size} does not divide evenly over "
                          f"{data_devices} devices")
    group, per_device = config.model.d_minibatch_std, config.batch_size // data_devices
    if group and per_device % group:
        raise ConfigError(f"config.model.d_minibatch_std={group} does not divide each device's "
                          f"{per_device} images into whole groups")


class ParallelStep:
    """The train step compiled for a layout, and its inputs and outputs moved to and from the host.

    `states` below is what the compiled step takes: one run's (replicated) state, or every run's
    states stacked along a leading run axis. Metrics come back per run, per step.
    """

    def __init__(self, layout: Layout, spec: GANSpec, hyperparams: list[Hyperparams] | None = None):
        """`hyperparams`: each run's (config.SWEEPABLE values); for one run, the spec's constants."""
        self.layout, self.spec = layout, spec
        if layout.mode == "runs" and layout.data_devices > 1:
            groups = layout.num_devices // layout.data_devices
            self._mesh = Mesh(np.array(layout.devices).reshape(groups, layout.data_devices),
                              (RUNS_AXIS, AXIS))
        else:
            self._mesh = Mesh(np.array(layout.devices), (RUNS_AXIS if layout.mode == "runs" else AXIS,))
        self._local_mesh = Mesh(np.array(layout.local_devices), (AXIS,))
        self._hyperparams = None
        if layout.mode == "runs":
            stacked = {name: np.asarray([hp[name] for hp in hyperparams],
                                        np.int32 if isinstance(spec.hyperparams[name], int) else np.float32)
                       for name in spec.hyperparams}
            self._hyperparams = self._place(stacked, per_run=True)
        self._compiled: dict[int, Callable] = {}

    # --- The compiled step --------------------------------------------------------------------------

    def train_steps(self, num_steps: int) -> Callable[[Any, TrainData], tuple[Any, Any]]:
        """`states, metrics = call(states, data)` running `num_steps` steps (compiled once per count).

        The input states are donated (do not reuse them). With num_steps > 1 each metric has a step
        axis.
        """
        if num_steps not in self._compiled:
            jitted, extra = self._jitted(num_steps), self._extra_args()
            self._compiled[num_steps] = lambda states, data: jitted(states, data, *extra)
        return self._compiled[num_steps]

    def compile_ahead(self, num_steps: int, states: Any, data: TrainData) -> tuple[Callable, Any]:
        """The step compiled now for these inputs' shapes: (`call(states, data)`, the compiled
        executable, whose `cost_analysis()` and `memory_analysis()` are XLA's own)."""
        extra = self._extra_args()
        compiled = self._jitted(num_steps).lower(states, data, *extra).compile()
        return (lambda states, data: compiled(states, data, *extra)), compiled

    def _extra_args(self) -> tuple:
        return (self._hyperparams,) if self.layout.mode == "runs" else ()

    def _step(self, num_steps: int) -> Callable:
        if num_steps == 1:
            return functools.partial(steps.train_step, gan=self.spec)
        return functools.partial(steps.train_steps, gan=self.spec, num_steps=num_steps,
                                 unroll=self.layout.unroll)

    def _jitted(self, num_steps: int) -> Callable:
        """The jitted step: `(states, data, *self._extra_args()) -> (states, metrics)`."""
        step, mode = self._step(num_steps), self.layout.mode
        if mode == "jit":
            # Over several devices the step itself lays its batch out over them (spec.batch_sharding);
            # state and data are replicated, so XLA inserts the reductions BatchNorm and the means of
            # the gradients need.
            return jax.jit(step, donate_argnums=0, compiler_options=devices_lib.compiler_options())
        if mode == "runs":
            # Each run's step averages over the data axis of its group when it has one.
            runs = self._runs_program(step if self.layout.data_devices == 1
                                      else functools.partial(step, axis_name=AXIS))
            if self.layout.num_devices == 1:
                return jax.jit(runs, donate_argnums=0, compiler_options=devices_lib.compiler_options())
            return jax.jit(jax.shard_map(runs, mesh=self._mesh,
                                         in_specs=(P(RUNS_AXIS), TrainData(P(), P(RUNS_AXIS), P()),
                                                   P(RUNS_AXIS)),
                                         out_specs=(P(RUNS_AXIS), P(RUNS_AXIS)), check_vma=False),
                           donate_argnums=0)
        per_device = functools.partial(step, axis_name=AXIS)
        if mode == "pmap":
            local = self.layout.local_devices
            return jax.pmap(per_device, axis_name=AXIS, donate_argnums=0,
                            devices=None if len(local) == jax.local_device_count() else self.layout.devices)
        # shard_map: state, data and metrics replicated; the pmeans inside make them agree. check_vma
        # is off so that, as under pmap, jax.grad of replicated parameters gives each device's local
        # gradient (with it on, grad would already psum over devices, and the step's pmean of the
        # gradients would then be N times too large).
        mapped = jax.shard_map(per_device, mesh=self._mesh, in_specs=(P(), P()), out_specs=(P(), P()),
                               check_vma=False)
        return jax.jit(mapped, donate_argnums=0)

    def _runs_program(self, step: Callable) -> Callable:
        """`(states, data, hps) -> (states, metrics)` over stacked runs, in the layout's form."""
        def one(state, orders, hp, images, labels):
            return step(state, TrainData(images, orders, labels), hp=hp)

        form = self.layout.form
        if form == "vmap":
            def runs(states, data, hps):
                return jax.vmap(one, in_axes=(0, 0, 0, None, None))(states, data.orders, hps,
                                                                     data.images, data.labels)
        elif form == "map":
            def runs(states, data, hps):
                return jax.lax.map(lambda args: one(*args, data.images, data.labels),
                                   (states, data.orders, hps))
        else:  # unrolled: a copy of the step per run, each reading its slice of the stacked inputs
            def runs(states, data, hps):
                outputs = [one(*jax.tree.map(lambda x: x[i], (states, data.orders, hps)), data.images,
                               data.labels) for i in range(data.orders.shape[0])]
                return jax.tree.map(lambda *leaves: jax.numpy.stack(leaves), *outputs)
        return runs

    # --- Inputs and outputs -------------------------------------------------------------------------

    def put_states(self, host_states: list[HostState]) -> Any:
        """The runs' host states laid out for the step (replicated, or stacked over the runs)."""
        if self.layout.mode == "runs":
            return devices_lib.typed_key(self._place(devices_lib.stack(host_states), per_run=True))
        (host_state,) = host_states
        return devices_lib.typed_key(self._place(host_state))

    def get_states(self, states: Any) -> list[HostState]:
        """One host state per run (every run's on every process): numpy leaves, the key as raw key
        data."""
        if self.layout.mode == "runs":
            host = _gather(devices_lib.with_key_data(states))
            return devices_lib.unstack(host, self.layout.num_runs)
        return [self._one_copy(devices_lib.with_key_data(states))]

    def put_data(self, images: np.ndarray, labels: np.ndarray | None) -> TrainData:
        """The training split (and its labels) on every participating device, once per run; the data
        orders follow with `with_orders`."""
        return TrainData(self._place(images), None, None if labels is None else self._place(labels))

    def with_orders(self, data: TrainData, orders: list[np.ndarray]) -> TrainData:
        """`data` with each run's data order of the epochs at hand (see `steps.data_orders`)."""
        if self.layout.mode == "runs":
            return data._replace(orders=self._place(np.stack(orders), per_run=True))
        (order,) = orders
        return data._replace(orders=self._place(order))

    def get_metrics(self, metrics: Any) -> list[list[Metrics]]:
        """A call's metrics on the host: per run, one dict per step."""
        if self.layout.mode == "runs":
            return [_per_step(values) for values in
                    devices_lib.unstack(_gather(metrics), self.layout.num_runs)]
        return [_per_step(self._one_copy(metrics))]

    def _place(self, tree: Any, per_run: bool = False) -> Any:
        mode = self.layout.mode
        if mode == "runs":
            return _global(tree, NamedSharding(self._mesh, P(RUNS_AXIS) if per_run else P()))
        if mode == "jit" and self.layout.num_devices == 1:
            return jax.device_put(tree, self.layout.local_devices[0])
        if mode == "pmap":
            # pmap takes per-process arrays with a leading axis of local devices.
            n = len(self.layout.local_devices)
            stacked = jax.tree.map(lambda x: np.broadcast_to(x, (n, *np.shape(x))), tree)
            return jax.device_put(stacked, NamedSharding(self._local_mesh, P(AXIS)))
        sharding = NamedSharding(self._mesh, P())
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
                            tree)

    def _one_copy(self, tree: Any) -> Any:
        if self.layout.mode == "pmap":
            return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data)[0], tree)
        if self.layout.num_devices > 1:  # replicated: any one shard is the whole
            return jax.tree.map(lambda x: np.asarray(x.addressable_shards[0].data), tree)
        return jax.device_get(tree)


def _global(tree: Any, sharding: NamedSharding) -> Any:
    """Host arrays, whole on every process, as global arrays of `sharding`: each process places the
    pieces its devices hold (one process: what device_put does)."""
    if jax.process_count() == 1:
        return jax.device_put(tree, sharding)
    return jax.tree.map(lambda x: jax.make_array_from_callback(
        np.shape(x), sharding, lambda index: np.asarray(x)[index]), tree)


def _gather(tree: Any) -> Any:
    """Global arrays as whole host arrays on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils
    return multihost_utils.process_allgather(tree, tiled=True)


def _per_step(metrics: Metrics) -> list[Metrics]:
    """{name: (steps,)} -> one {name: scalar} per step ({name: scalar} is one step already)."""
    if np.ndim(next(iter(metrics.values()))) == 0:
        return [metrics]
    return [dict(zip(metrics, values)) for values in zip(*metrics.values())]
