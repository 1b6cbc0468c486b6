"""Data parallelism: N devices and several processes train what one device trains.

Runs on fake CPU devices (conftest sets --xla_force_host_platform_device_count=4) and, for several
processes, on 127.0.0.1 with gloo collectives.
"""

import functools
import json
import os
import re
import signal
import time

import jax
import numpy as np
import pytest

from helpers import (ALL_TOOLS, REPO, TOLERANCE, assert_one_line_error, assert_same_training, free_port,
                     launch_process, parallel_step, put_data, tiny_config)
from gan_jax import train
from gan_jax.data import idx
from gan_jax.errors import ConfigError
from gan_jax.reporting.metrics_log import read_metrics
from gan_jax.training import devices, steps
from gan_jax.training.checkpoint import Checkpointer, abstract_host_state
from gan_jax.training.parallel import Layout
from gan_jax.training.spec import GANSpec
from gan_jax.training.state import abstract_train_state, create_train_state

NUM_STEPS = 20
BATCH = 16


def run_steps(config, images, num_steps):
    """(one host copy of the state, device state, metrics per step) after num_steps on config's devices."""
    parallel = parallel_step(config)
    state = create_train_state(parallel.spec, config.seed)
    data = put_data(parallel, images, state)
    state = parallel.put_states([devices.to_host(state)])
    metrics = []
    for _ in range(num_steps):
        state, step_metrics = parallel.train_steps(1)(state, data)
        metrics.extend(parallel.get_metrics(step_metrics)[0])
    return parallel.get_states(state)[0], state, metrics


@pytest.fixture(scope="module")
def images(idx_dir):
    return idx.load_split(idx_dir, "train").images


def _lr_bound(config, num_steps):
    # Adam moves a parameter by at most about lr per step (more only while nu is tiny); 2x margin.
    return 2 * max(config.g_lr, config.d_lr) * num_steps


@pytest.fixture(scope="module")
def one_device_trajectory(idx_dir, images):
    """The host state before each of NUM_STEPS one-device steps and after the last, and the metrics."""
    parallel = parallel_step(tiny_config(idx_dir, batch_size=BATCH))
    state = create_train_state(parallel.spec, seed=0)
    data = put_data(parallel, images, state)
    hosts, metrics = [devices.to_host(state)], []
    for _ in range(NUM_STEPS):
        state, step_metrics = parallel.train_steps(1)(parallel.put_states([hosts[-1]]), data)
        hosts.append(parallel.get_states(state)[0])
        metrics.extend(parallel.get_metrics(step_metrics)[0])
    return hosts, metrics


@pytest.mark.slow
@pytest.mark.parametrize("num_devices, mode", [(2, "pmap"), (4, "pmap"), (4, "shard_map"),
                                               (4, "jit")])
def test_n_devices_train_what_one_device_trains(one_device_trajectory, idx_dir, images, num_devices,
                                               mode):
    """Every step of the one-device run, taken on N devices from the same state, gives its result.

    Step by step, because over many steps float rounding differences grow: measured after 20 steps
    on 4 devices vs 1, up to 4e-4 in D's Adam moments, while every single step agrees within 2.4e-7.
    """
    config = tiny_config(idx_dir, batch_size=BATCH, num_devices=num_devices, parallel=mode)
    parallel = parallel_step(config)
    hosts, reference_metrics = one_device_trajectory
    data = put_data(parallel, images, hosts[0])
    for before, after, reference in zip(hosts, hosts[1:], reference_metrics):
        device_state, step_metrics = parallel.train_steps(1)(parallel.put_states([before]), data)
        # A gauge leaf's Adam step can be many lr when its noise gradient jumps: the run's bound.
        assert_same_training(parallel.get_states(device_state)[0], after,
                             gauge_atol=_lr_bound(config, NUM_STEPS))
        ((step_metrics,),) = parallel.get_metrics(step_metrics)
        for name in reference:
            assert abs(float(step_metrics[name]) - float(reference[name])) < TOLERANCE, name
    # Replicas are bit-identical to each other.
    for leaf in jax.tree.leaves(device_state.generator) + jax.tree.leaves(device_state.discriminator):
        shards = [np.asarray(s.data) for s in leaf.addressable_shards]
        if mode == "pmap":
            shards = list(shards[0]) if len(shards) == 1 else [s[0] for s in shards]
        assert all(np.array_equal(s, shards[0]) for s in shards)



def test_the_key_changes_form_in_devices_py_only(idx_dir):
    """Host state <-> device state keeps the key bit for bit, and no other module of the package
    wraps or unwraps it (one place to change the key's implementation)."""
    import glob
    state = create_train_state(parallel_step(tiny_config(idx_dir)).spec, seed=3)
    host = devices.to_host(state)
    assert host.key.dtype == np.uint32
    np.testing.assert_array_equal(jax.random.key_data(devices.typed_key(host).key), host.key)
    np.testing.assert_array_equal(jax.random.key_data(devices.wrap_key(host.key)),
                                  jax.random.key_data(state.key))
    package = os.path.join(REPO, "gan_jax")
    elsewhere = [path for path in glob.glob(os.path.join(package, "**", "*.py"), recursive=True)
                 if path != os.path.join(package, "training", "devices.py")
                 and re.search(r"random\.(key_data|wrap_key_data)\b", open(path).read())]
    assert elsewhere == []

@pytest.mark.slow
@pytest.mark.parametrize("mode", ["pmap", "shard_map"])
def test_every_quality_tool_trains_alike_on_4_devices(idx_dir, images, mode):
    """Losses, penalties, spectral normalization, several D updates and the EMA: each of the first
    steps on 4 devices, from the one-device state before it, gives the one-device result."""
    config = tiny_config(idx_dir, batch_size=BATCH, **ALL_TOOLS)
    one = parallel_step(config)
    four = parallel_step(tiny_config(idx_dir, batch_size=BATCH, num_devices=4, parallel=mode, **ALL_TOOLS))
    state = create_train_state(one.spec, seed=0)
    one_data, four_data = put_data(one, images, state), put_data(four, images, state)
    host = devices.to_host(state)
    for _ in range(3):
        expected, expected_metrics = one.train_steps(1)(one.put_states([host]), one_data)
        got, got_metrics = four.train_steps(1)(four.put_states([host]), four_data)
        host = one.get_states(expected)[0]
        assert_same_training(four.get_states(got)[0], host, gauge_atol=_lr_bound(config, 3))
        ((expected_metrics,),) = one.get_metrics(expected_metrics)
        ((got_metrics,),) = four.get_metrics(got_metrics)
        assert set(got_metrics) == {"d_loss", "g_loss", "d_real", "d_fake", "d_gp", "d_r1"}
        for name in expected_metrics:
            assert abs(float(got_metrics[name]) - float(expected_metrics[name])) < TOLERANCE, name


@pytest.mark.slow
def test_pmap_and_shard_map_agree_bitwise(idx_dir, images):
    pmapped, _, _ = run_steps(tiny_config(idx_dir, batch_size=BATCH, num_devices=4, parallel="pmap"),
                              images, 5)
    sharded, _, _ = run_steps(
        tiny_config(idx_dir, batch_size=BATCH, num_devices=4, parallel="shard_map"), images, 5)
    for a, b in zip(jax.tree.leaves(pmapped), jax.tree.leaves(sharded)):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_n_devices_compute_the_same_generator_function(one_device_trajectory, idx_dir, images):
    """The gauge leaves differ, the function G trains with does not: its batch outputs agree closely.

    (In inference mode the running means lag the drifting biases by a few steps, which shows as a
    difference of order lr / std; with batch statistics the biases cancel exactly.)
    """
    config = tiny_config(idx_dir, batch_size=BATCH, num_devices=4)
    host, _, _ = run_steps(config, images, NUM_STEPS)
    gan = GANSpec.from_config(tiny_config(idx_dir))
    noise = jax.random.normal(jax.random.key(0), (BATCH, config.latent_dim))
    apply = jax.jit(lambda g: gan.generator.apply(g.variables(), noise, train=True,
                                                  mutable=["batch_stats"])[0])
    one_device = one_device_trajectory[0][-1]
    np.testing.assert_allclose(apply(host.generator), apply(one_device.generator), atol=TOLERANCE)


def test_batch_must_divide_over_devices(idx_dir):
    with pytest.raises(ConfigError, match="does not divide evenly over 4 devices"):
        Layout.for_config(tiny_config(idx_dir, batch_size=10, num_devices=4))
    with pytest.raises(ConfigError, match="only 4 cpu device"):
        Layout.for_config(tiny_config(idx_dir, num_devices=8))
    with pytest.raises(ConfigError, match="d_minibatch_std=4 does not divide each device's 2 images"):
        Layout.for_config(tiny_config(idx_dir, num_devices=4, **{"model.d_minibatch_std": 4}))


def _convolutions_in_ynnpack_fusions(hlo: str) -> int:
    """How many convolutions of compiled HLO text XLA:CPU handed to YNNPACK."""
    called = re.findall(r"calls=(%[\w.\-]+),[^\n]*\"__ynn_fusion\"", hlo)
    bodies = [re.search(re.escape(name) + r" [^\n]*\{\n(.*?)\n\}", hlo, re.S).group(1)
              for name in called]
    return sum(body.count(" convolution(") for body in bodies)


@pytest.mark.slow
def test_cpu_train_step_keeps_its_convolutions_out_of_ynnpack(idx_dir, images):
    """On CPU the step compiles with devices.compiler_options(): convolutions on XLA's Eigen path,
    measured faster for this model than YNNPACK, which XLA picks by default."""
    # YNNPACK takes only convolutions with more than 16 features on one side.
    config = tiny_config(idx_dir, **{"model.g_width": 16, "model.d_width": 16})
    parallel = parallel_step(config)
    state = create_train_state(parallel.spec, seed=0)
    data = put_data(parallel, images, state)
    _, compiled = parallel.compile_ahead(1, parallel.put_states([devices.to_host(state)]), data)
    ours = compiled.as_text()
    assert ours.count(" convolution(") >= 10
    assert _convolutions_in_ynnpack_fusions(ours) == 0
    # Without the options XLA does hand them to YNNPACK, so the check above can fail.
    defaults = jax.jit(functools.partial(steps.train_step, gan=parallel.spec))
    assert _convolutions_in_ynnpack_fusions(defaults.lower(state, data).compile().as_text()) > 0


def test_compiler_options_fall_back_to_defaults_where_xla_lacks_them(monkeypatch):
    known = devices.compiler_options()
    assert known and known == devices._CPU_COMPILER_OPTIONS  # this XLA knows them
    monkeypatch.setattr(devices, "_CPU_COMPILER_OPTIONS", {"xla_cpu_no_such_option": "1"})
    devices.compiler_options.cache_clear()
    try:
        assert devices.compiler_options() == {}
    finally:
        devices.compiler_options.cache_clear()


@pytest.mark.slow
def test_resume_on_fewer_or_more_devices_than_saved_on(idx_dir, tmp_path):
    """Checkpoints hold one unreplicated copy: a 4-device run continues on 2 devices or 1, and a
    1-device run on 4."""
    base = dict(batch_size=BATCH, num_steps=NUM_STEPS, checkpoint_every=10, log_every=5,
                sample_every=10)
    uninterrupted = train.train_and_evaluate(tiny_config(idx_dir, num_devices=4, **base),
                                             str(tmp_path / "four"))
    half = dict(base, num_steps=NUM_STEPS // 2)
    for saved_on, resumed_on in ((4, 2), (4, 1), (1, 4)):
        workdir = str(tmp_path / f"{saved_on}_then_{resumed_on}")
        train.train_and_evaluate(tiny_config(idx_dir, num_devices=saved_on, **half), workdir)
        resumed = train.train_and_evaluate(tiny_config(idx_dir, num_devices=resumed_on, **base),
                                           workdir)
        assert_same_training(resumed, uninterrupted, gauge_atol=2 * 2e-4 * NUM_STEPS)


def _launch(process_id, port, workdir, data_dir, extra, env, module="gan_jax.train"):
    steps = [f"--config.num_steps={NUM_STEPS}", "--config.log_every=5", "--config.sample_every=10",
             "--config.checkpoint_every=10"]
    return launch_process(module, process_id, port, workdir, data_dir, [*steps, *extra], env)


@pytest.mark.slow
def test_two_processes_train_what_one_process_with_four_devices_trains(idx_dir, tmp_path,
                                                                        two_device_env):
    workdir, port = tmp_path / "two_processes", free_port()
    processes = [_launch(i, port, workdir, idx_dir, [], two_device_env) for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr
    single = train.train_and_evaluate(
        tiny_config(idx_dir, batch_size=BATCH, num_devices=4, num_steps=NUM_STEPS, log_every=5,
                    sample_every=10, checkpoint_every=10), str(tmp_path / "one_process"))
    checkpointer = Checkpointer(str(workdir / "checkpoints"), keep=3)
    gan = GANSpec.from_config(tiny_config(idx_dir))
    restored = checkpointer.restore(abstract_host_state(abstract_train_state(gan)))
    checkpointer.close()
    assert_same_training(restored, single, gauge_atol=2 * 2e-4 * NUM_STEPS)
    # Only process 0 wrote logs, samples and metrics: one record per logged step, not two.
    assert [r["step"] for r in read_metrics(str(workdir / "metrics.jsonl"))] == [5, 10, 15, 20]
    assert "gan_jax: step 5" in outputs[0][1] and "gan_jax: step 5" not in outputs[1][1]
    assert sorted(os.listdir(workdir / "samples")) == ["step_0000010.png", "step_0000020.png"]


@pytest.mark.slow
def test_a_dead_peer_ends_the_other_process_in_bounded_time(idx_dir, tmp_path, two_device_env):
    workdir, port = tmp_path / "dies", free_port()
    long_run = ["--config.num_steps=1000000", "--config.checkpoint_every=1000000"]
    processes = [_launch(i, port, workdir, idx_dir, long_run, two_device_env) for i in range(2)]
    metrics = workdir / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not metrics.exists():
        assert all(p.poll() is None for p in processes) and time.monotonic() < deadline
        time.sleep(0.2)
    processes[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    _, stderr = processes[0].communicate(timeout=120)
    assert processes[0].returncode != 0
    assert time.monotonic() - killed_at < 90  # --distributed_timeout=15 plus shutdown
    # JAX's coordination service names the cause before it ends the process.
    assert "another task died" in stderr
    processes[1].communicate()


def test_jit_over_four_devices_partitions_the_step_and_stays_close_over_twenty_steps(
        one_device_trajectory, idx_dir, images):
    """"jit" is the one-device step with its batch laid out over the devices: XLA splits the work and
    inserts the reductions (all-reduces in the program), and the run drifts from the one-device run
    only by float rounding: within 1e-2 over 20 steps (the measured drift of the other modes)."""
    config = tiny_config(idx_dir, batch_size=BATCH, num_devices=4, parallel="jit")
    parallel = parallel_step(config)
    state = create_train_state(parallel.spec, seed=0)
    data = put_data(parallel, images, state)
    _, compiled = parallel.compile_ahead(1, parallel.put_states([devices.to_host(state)]), data)
    assert "all-reduce" in compiled.as_text()
    _, _, metrics = run_steps(config, images, NUM_STEPS)
    for got, want in zip(metrics, one_device_trajectory[1]):
        for name in want:
            assert abs(float(got[name]) - float(want[name])) < 1e-2, name


def test_a_sweep_on_a_runs_by_data_mesh_trains_what_each_run_trains_alone(idx_dir, tmp_path):
    """2 runs on 4 devices: 2 groups of 2 data devices; each run is `gan_jax.train`'s on 2 devices."""
    from gan_jax import sweep
    from gan_jax.training.parallel import Layout
    config = tiny_config(idx_dir, batch_size=BATCH, num_devices=4, num_steps=2, log_every=1)
    layout = Layout.for_config(config, num_runs=2)
    assert (layout.data_devices, layout.num_devices) == (2, 4)
    sweep.run_sweep(config, str(tmp_path / "sweep"), [0, 1], {})
    for seed in (0, 1):
        alone = str(tmp_path / f"alone_{seed}")
        train.train_and_evaluate(tiny_config(idx_dir, batch_size=BATCH, num_devices=2, num_steps=2,
                                             log_every=1, seed=seed), alone)
        swept = read_metrics(str(tmp_path / "sweep" / f"run_{seed:03d}" / "metrics.jsonl"))
        for got, want in zip(swept, read_metrics(os.path.join(alone, "metrics.jsonl"))):
            for name in ("d_loss", "g_loss", "d_real", "d_fake"):
                assert abs(got[name] - want[name]) < TOLERANCE, (seed, got["step"], name)


@pytest.mark.parametrize("runs, overrides, message", [
    (4, {"data_devices": 3}, "4 runs on 4 devices with config.data_devices=3"),
    (3, {"data_devices": 2}, "3 runs on 4 devices with config.data_devices=2"),
    (2, {"data_devices": 2, "batch_size": 9}, "batch_size=9 does not divide evenly over 2 devices"),
    (1, {"data_devices": 2}, "config.data_devices=2 but the run has 4 device"),
])
def test_a_mesh_that_does_not_divide_is_one_line_naming_the_numbers(idx_dir, runs, overrides, message):
    from gan_jax.training.parallel import Layout
    with pytest.raises(ConfigError, match=message):
        Layout.for_config(tiny_config(idx_dir, num_devices=4, **overrides), num_runs=runs)


@pytest.mark.slow
def test_a_sweep_over_two_processes_trains_what_one_process_trains(idx_dir, tmp_path, two_device_env):
    """4 runs over 2 processes x 2 devices: every run's folder, written by process 0, holds what a
    one-process sweep on 4 devices writes (steps 1-2 within float rounding)."""
    from gan_jax import sweep
    workdir, port = tmp_path / "two_processes", free_port()
    short = ["--seeds=0,1,2,3", "--config.num_steps=2", "--config.log_every=1"]
    processes = [_launch(i, port, workdir, idx_dir, short, two_device_env, module="gan_jax.sweep")
                 for i in range(2)]
    outputs = [p.communicate(timeout=300) for p in processes]
    for process, (_, stderr) in zip(processes, outputs):
        assert process.returncode == 0, stderr
    assert "4 runs on 4 cpu device(s) of 2 processes" in outputs[0][1]
    sweep.run_sweep(tiny_config(idx_dir, batch_size=BATCH, num_devices=4, num_steps=2, log_every=1),
                    str(tmp_path / "one_process"), [0, 1, 2, 3], {})
    for run in ("run_000", "run_001", "run_002", "run_003"):
        two = read_metrics(str(workdir / run / "metrics.jsonl"))
        one = read_metrics(str(tmp_path / "one_process" / run / "metrics.jsonl"))
        assert [r["step"] for r in two] == [r["step"] for r in one] == [1, 2]
        for got, want in zip(two, one):
            for name in ("d_loss", "g_loss", "d_real", "d_fake"):
                assert abs(got[name] - want[name]) < TOLERANCE, (run, got["step"], name)
    with open(workdir / "sweep.json") as f:
        assert [r["status"] for r in json.load(f)["runs"]] == ["finished at step 2"] * 4


@pytest.mark.slow
def test_a_sweep_whose_runs_do_not_spread_over_the_processes_is_one_line(idx_dir, tmp_path,
                                                                         two_device_env):
    port = free_port()
    processes = [_launch(i, port, tmp_path / "odd", idx_dir, ["--seeds=0,1,2"], two_device_env,
                         module="gan_jax.sweep") for i in range(2)]
    for process in processes:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 1
        assert_one_line_error(stderr, "3 runs do not spread evenly over 2 processes")
