"""What the tests share: the real config shrunk for speed (in Python and as command-line flags), small
IDX datasets written on the spot, comparisons of training states, TensorBoard files read back, and the
check of a command's one-line error. The test modules import it (never each other); conftest.py holds
only the environment and the fixtures.
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np

from gan_jax.data import idx

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tests that need real MNIST read its folder from here; .ci/run sets it, and they skip without it.
MNIST_DIR_VAR = "GAN_JAX_MNIST_DIR"


def load_experiment(name: str, variant: str = ""):
    """get_config() of experiments/<name>.py, loaded by path as the CLI does."""
    from gan_jax.config import load_config_file
    return load_config_file(os.path.join(REPO, "experiments", f"{name}.py"), variant)


def write_idx_dataset(folder: str, num_train: int = 64, num_test: int = 16, seed: int = 0,
                      compress: bool = True, class_images: bool = False) -> str:
    """A small MNIST-shaped dataset of random blobs as the four IDX files; returns the folder.

    With `class_images`, labels cycle through the 10 classes and each class's images are brighter in
    their own band of rows, so a conditional GAN has something per class to learn.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    suffix = ".gz" if compress else ""
    for split, n in (("train", num_train), ("t10k", num_test)):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=(n,), dtype=np.uint8)
        if class_images:
            labels = (np.arange(n) % 10).astype(np.uint8)
            images = rng.integers(0, 64, size=(n, 28, 28), dtype=np.uint8)
            for i, label in enumerate(labels):
                images[i, 2 * label:2 * label + 8] += 191
        idx.write_idx(os.path.join(folder, f"{split}-images-idx3-ubyte{suffix}"), images, compress)
        idx.write_idx(os.path.join(folder, f"{split}-labels-idx1-ubyte{suffix}"), labels, compress)
    return folder


# Biases directly followed by BatchNorm have a zero gradient in exact arithmetic: BatchNorm subtracts
# them again. Their computed gradient is float rounding noise, which Adam normalizes into full-size
# steps of about lr, so they (with their Adam moments and the running means they shift) wander
# differently on any change of summation order. They do not change what the networks compute.
GAUGE = ("ConvTranspose_0/bias", "ConvTranspose_1/bias", "Conv_1/bias", "batch_stats/BatchNorm_0/mean",
         "batch_stats/BatchNorm_1/mean")
TOLERANCE = 1e-5  # measured: at most 2.4e-7 absolute for one step on 2 or 4 devices vs 1


def trees_equal(a, b) -> bool:
    """Same structure and every leaf exactly equal."""
    import jax.numpy as jnp
    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        jax.tree.leaves(jax.tree.map(lambda x, y: bool(jnp.array_equal(x, y)), a, b)))


def leaves_by_name(tree):
    """{"generator/params/ConvTranspose_0/kernel": array, ...} for a (host) training state."""
    from gan_jax.training.checkpoint import path_name
    return {path_name(path): np.asarray(leaf) for path, leaf in
            jax.tree_util.tree_flatten_with_path(tree)[0]}


def assert_same_training(a, b, gauge_atol):
    """Every leaf within TOLERANCE, except gauge leaves (within a few Adam steps); step and key exact."""
    a, b = leaves_by_name(a), leaves_by_name(b)
    assert a.keys() == b.keys()
    for name in a:
        if name in ("step", "key"):
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)
        elif any(g in name for g in GAUGE):
            np.testing.assert_allclose(a[name], b[name], atol=gauge_atol, rtol=0, err_msg=name)
        else:
            np.testing.assert_allclose(a[name], b[name], atol=TOLERANCE, rtol=0, err_msg=name)



def read_tensorboard(logdir: str) -> list[tuple[int, str, str, float | None]]:
    """(step, tag, "scalar" or "image", value) of every summary TensorBoard shows from a folder's event
    files, in write order; read with the event protobuf and the TFRecord framing, no TensorFlow.

    As TensorBoard does, a SessionLog START event at step P (what `purge_step` writes) drops the
    summaries read so far at steps >= P.
    """
    import glob
    import struct

    from tensorboardX.proto import event_pb2

    def events(path):
        with open(path, "rb") as f:
            data = f.read()
        position, events = 0, []
        while position < len(data):  # each record: length (u64), its crc, the event, the event's crc
            (length,) = struct.unpack("<Q", data[position:position + 8])
            events.append(event_pb2.Event.FromString(data[position + 12:position + 12 + length]))
            position += 12 + length + 4
        return events

    # In the order the runs wrote them: by the time of each file's first event.
    # (A writer killed before its first flush leaves an empty file.)
    files = sorted(filter(None, (events(p) for p in glob.glob(os.path.join(logdir, "events.out.*")))),
                   key=lambda file_events: file_events[0].wall_time)
    summaries = []
    for event in (event for file_events in files for event in file_events):
        if event.HasField("session_log") and event.session_log.status == event.session_log.START:
            summaries = [s for s in summaries if s[0] < event.step]
        for value in event.summary.value:
            if value.HasField("image"):
                summaries.append((event.step, value.tag, "image", None))
            else:
                summaries.append((event.step, value.tag, "scalar", value.simple_value))
    return summaries


def set_key(config, key: str, value) -> None:
    """config["model.g_width"] = value, for a dotted key, even to a value of another type."""
    *parents, leaf = key.split(".")
    target = config
    for parent in parents:
        target = target[parent]
    with target.ignore_type():
        target[leaf] = value


# Every quality tool at once (losses, penalties, spectral normalization, several D updates, the EMA,
# DiffAugment, the learning-rate decay), as tiny_config overrides.
ALL_TOOLS = {"loss": "wgan_gp", "gp_weight": 5.0, "r1_gamma": 1.0, "model.d_norm": "spectral",
             "d_steps": 2, "ema_decay": 0.9, "ema_start": 2, "augment": "color,translation,cutout",
             "lr_decay": "cosine"}


def tiny_config(data_dir: str, experiment: str = "mnist", **overrides):
    """experiments/<experiment>.py:tiny on small IDX data, with narrow networks so steps compile fast."""
    config = load_experiment(experiment, "tiny")
    config.data.source = "idx"
    config.data.dir = data_dir
    config.batch_size = 8
    config.latent_dim = 16
    config.model.g_width = 8
    config.model.d_width = 8
    config.num_devices = 1
    config.data.check_dataset = False  # random blobs, not the published MNIST
    for key, value in overrides.items():
        set_key(config, key, value)
    return config


PYTHON = sys.executable
# tiny_config as command-line flags, for the tests that start the commands (the data flags: idx_args).
TINY = ["--config", os.path.join(REPO, "experiments", "mnist.py:tiny"), "--config.batch_size=8",
        "--config.latent_dim=16", "--config.model.g_width=8", "--config.model.d_width=8",
        "--config.num_devices=1"]


def idx_args(data_dir):
    return ["--config.data.source=idx", f"--config.data.dir={data_dir}",
            "--config.data.check_dataset=False"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on, for a two-process run's coordinator."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_process(module: str, process_id: int, port: int, workdir, data_dir: str, extra: list[str],
                   env: dict, stdout=None):
    """One process of a two-process run of the tiny model (`python -m module`), 2 devices each,
    coordinated on 127.0.0.1:port; its output to `stdout` (a file, or None for pipes)."""
    import subprocess
    args = [PYTHON, "-m", module, "--config", os.path.join(REPO, "experiments", "mnist.py:tiny"),
            *idx_args(data_dir), "--config.batch_size=16", "--config.latent_dim=16",
            "--config.model.g_width=8", "--config.model.d_width=8", "--config.num_devices=2", *extra,
            f"--workdir={workdir}", f"--coordinator=127.0.0.1:{port}",
            f"--coordinator_bind_address=127.0.0.1:{port}", "--num_processes=2",
            f"--process_id={process_id}", "--distributed_timeout=15"]
    if stdout is None:
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL)
    return subprocess.Popen(args, env=env, stdout=stdout, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)


def assert_one_line_error(stderr: str, message: str) -> str:
    """The command's error is one line, `error: ...` holding `message`, and the last thing it printed;
    any lines before it are log lines (no traceback, no second error line). Returns the line."""
    lines = stderr.strip().splitlines()
    assert lines, "nothing on stderr"
    assert lines[-1].startswith("error: ") and message in lines[-1], stderr
    assert "Traceback" not in stderr, stderr
    assert not any(line.startswith("error") for line in lines[:-1]), stderr
    return lines[-1]


def parallel_step(config):
    """The compiled train step of one run of `config` on its devices, as the trainer builds it."""
    from gan_jax.training.parallel import Layout, ParallelStep
    from gan_jax.training.spec import GANSpec, hyperparams
    layout = Layout.for_config(config)
    return ParallelStep(layout, GANSpec.from_config(config, **layout.spec_options()),
                        [hyperparams(config)])


def put_data(parallel, images, state, labels=None):
    """The TrainData of a run starting at epoch 0 with `state`'s key, laid out for `parallel`."""
    from gan_jax.training import devices, steps
    key = state.key if jax.dtypes.issubdtype(state.key.dtype, jax.dtypes.prng_key) else \
        devices.wrap_key(state.key)
    return parallel.with_orders(parallel.put_data(images, labels),
                                [steps.data_orders(key, 0, len(images))])


def before_each_call(monkeypatch, hook) -> None:
    """Makes every call of the trainer's compiled step run `hook()` first (count calls, send a
    signal, look at live arrays)."""
    from gan_jax.training.parallel import ParallelStep
    train_steps = ParallelStep.train_steps

    def hooked(self, num_steps):
        call = train_steps(self, num_steps)

        def counted(states, data):
            hook()
            return call(states, data)
        return counted
    monkeypatch.setattr(ParallelStep, "train_steps", hooked)


def interrupt_after(monkeypatch, num_calls: int) -> None:
    """Makes the trainer's compiled step send this process SIGTERM after `num_calls` calls, as a
    scheduler would."""
    import signal
    calls = []

    def count():
        calls.append(None)
        if len(calls) == num_calls:
            os.kill(os.getpid(), signal.SIGTERM)
    before_each_call(monkeypatch, count)
