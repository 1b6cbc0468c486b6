"""`python -m gan_jax.train` as a user runs it: artifacts, one-line errors, SIGTERM and resume."""

import json
import os
import platform
import signal
import subprocess
import time

import pytest
from PIL import Image

from helpers import MNIST_DIR_VAR, PYTHON, REPO, TINY, assert_one_line_error, idx_args, write_idx_dataset

pytestmark = pytest.mark.slow  # every test here starts the commands as subprocesses

def run_cli(args, env, timeout=300):
    return subprocess.run([PYTHON, "-m", "gan_jax.train", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def cli_data(tmp_path_factory):
    return write_idx_dataset(str(tmp_path_factory.mktemp("cli_data")))


def test_cli_run_writes_every_artifact(cli_data, tmp_path, python_env):
    workdir = tmp_path / "run"
    result = run_cli([*TINY, *idx_args(cli_data), f"--workdir={workdir}"], python_env)
    assert result.returncode == 0, result.stderr
    with open(workdir / "config.json") as f:
        config = json.load(f)
    assert config["batch_size"] == 8 and config["data"]["dir"] == cli_data
    records = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert [r["step"] for r in records] == [2, 4, 6]
    for record in records:
        assert {"step", "epoch", "d_loss", "g_loss", "d_real", "d_fake", "steps_per_s"} <= set(record)
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(workdir / "tensorboard"))
    assert sorted(os.listdir(workdir / "samples")) == ["step_0000003.png", "step_0000006.png"]
    assert Image.open(workdir / "samples" / "step_0000006.png").size == (8 * 28, 8 * 28)
    assert Image.open(workdir / "losses.png").format == "PNG"
    gif = Image.open(workdir / "progress.gif")
    assert gif.format == "GIF" and gif.n_frames == 2
    assert sorted(os.listdir(workdir / "checkpoints")) == ["4", "6"]
    # Not a terminal: one log line per logged step instead of a progress bar.
    assert result.stderr.count("gan_jax: step ") == 3


def test_workdir_defaults_to_runs_and_the_config_stem(cli_data, tmp_path, python_env):
    result = subprocess.run([PYTHON, "-m", "gan_jax.train", *TINY, *idx_args(cli_data),
                             "--config.num_steps=1"], cwd=tmp_path, env=python_env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "runs" / "mnist" / "checkpoints" / "1").is_dir()


@pytest.mark.parametrize("extra, message", [
    (["--config.batch_size=0"], "error: config.batch_size=0 is invalid"),
    (["--config.data.source=ftp"], "error: config.data.source='ftp' is invalid"),
    (["--config.data.name=cifar10"], "error: config.data.name='cifar10' is invalid"),
    (["--config.data.dir=/nonexistent/mnist"], "error: data.dir '/nonexistent/mnist' is not a folder"),
])
def test_bad_input_is_one_line_and_non_zero(extra, message, cli_data, tmp_path, python_env):
    result = run_cli([*TINY, *idx_args(cli_data), *extra, f"--workdir={tmp_path}"], python_env)
    assert result.returncode == 1
    assert assert_one_line_error(result.stderr, message).startswith(message)


def test_unknown_config_key_is_refused(cli_data, tmp_path, python_env):
    result = run_cli([*TINY, *idx_args(cli_data), "--config.batchsize=3", f"--workdir={tmp_path}"],
                     python_env)
    assert result.returncode == 2
    assert assert_one_line_error(result.stderr, "error: bad command line: unknown config key "
                                                "'batchsize'. Did you mean 'batch_size'?")


def test_missing_config_file_is_refused(tmp_path, python_env):
    result = run_cli(["--config", str(tmp_path / "nope.py"), f"--workdir={tmp_path}"], python_env)
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "nope.py")


def test_malformed_data_file(tmp_path, python_env):
    data = write_idx_dataset(str(tmp_path / "data"))
    with open(os.path.join(data, "train-images-idx3-ubyte.gz"), "wb") as f:
        f.write(b"garbage")
    result = run_cli([*TINY, *idx_args(data), f"--workdir={tmp_path / 'run'}"], python_env)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "train-images-idx3-ubyte.gz")


def test_a_nan_at_the_first_step_says_that_no_checkpoint_was_saved(cli_data, tmp_path, python_env):
    """G's loss is NaN at step 1 (injected by tests/fault_injection), before any checkpoint: the line
    says there is none, not "last good checkpoint: step None"."""
    env = dict(python_env, GAN_JAX_TEST_FAULT="nan_loss_at_step=1",
               PYTHONPATH=os.path.join(REPO, "tests", "fault_injection") + os.pathsep
               + python_env["PYTHONPATH"])
    workdir = tmp_path / "run"
    result = run_cli([*TINY, *idx_args(cli_data), f"--workdir={workdir}"], env)
    assert result.returncode == 1
    line = assert_one_line_error(result.stderr, "g_loss became nan at step 1")
    assert line == ("error: g_loss became nan at step 1; stopped without saving (no checkpoint was "
                    "saved before it)")
    assert not list(workdir.glob("checkpoints/*"))  # none was saved, and none is claimed


def test_sigterm_saves_exits_zero_and_the_printed_command_resumes(cli_data, tmp_path, python_env):
    """The run is started as the README shows (`--workdir DIR`, with a space); the command it prints
    on SIGTERM, pasted into a shell, resumes it."""
    workdir = tmp_path / "a run's folder"  # a space and a quote: the printed command must quote it
    # No periodic checkpoint: the only one is what SIGTERM saves, whichever step the signal meets.
    args = [*TINY, *idx_args(cli_data), "--config.num_steps=100000", "--config.log_every=1",
            "--config.checkpoint_every=100000", "--workdir", str(workdir)]
    process = subprocess.Popen([PYTHON, "-m", "gan_jax.train", *args], env=python_env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               stdin=subprocess.DEVNULL)
    metrics = workdir / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.exists() and metrics.read_text().count("\n") >= 3):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    steps = [int(name) for name in os.listdir(workdir / "checkpoints")]
    assert len(steps) == 1 and steps[0] >= 3 and f"interrupted at step {steps[0]};" in stderr
    command = stderr.strip().splitlines()[-1].split("Resume with: ", 1)[1]
    assert command.startswith("python -m gan_jax.train ")
    # The printed command, run by a shell (with a shorter run appended, so that it ends).
    shell_env = dict(python_env, PATH=os.path.dirname(PYTHON) + os.pathsep + python_env["PATH"])
    result = subprocess.run(["bash", "-c", f"{command} --config.num_steps={steps[0] + 2}"],
                            env=shell_env, capture_output=True, text=True, timeout=300,
                            stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"resuming from the checkpoint at step {steps[0]}" in result.stderr
    assert max(int(n) for n in os.listdir(workdir / "checkpoints")) == steps[0] + 2


@pytest.mark.skipif(not os.environ.get(MNIST_DIR_VAR), reason=f"set {MNIST_DIR_VAR} to real MNIST")
def test_real_mnist_trains(tmp_path, python_env):
    """A short run on real MNIST with the real model: D learns to tell real from fake."""
    result = run_cli(["--config", os.path.join(REPO, "experiments", "mnist.py"),
                      *idx_args(os.environ[MNIST_DIR_VAR]), "--config.num_steps=30",
                      "--config.log_every=30", "--config.sample_every=30",
                      "--config.checkpoint_every=30", f"--workdir={tmp_path}"], python_env, timeout=600)
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert record["d_real"] > record["d_fake"]
    assert 0 < record["d_loss"] < 1.0


FREED_MEMORY_PROBE = """
import ctypes, resource, sys
from gan_jax import cli
applied = cli.tune_cpu_runtime() if sys.argv[1] == "tuned" else None
import jax
libc = ctypes.CDLL("libc.so.6")
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 200 << 20  # larger than any block glibc would keep by default
def cycle():
    block = libc.malloc(size)
    ctypes.memset(block, 1, size)  # touch every page
    libc.free(block)
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
cycle()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(faults, jax.config.read("jax_cpu_enable_async_dispatch"), applied)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator tuning is glibc's")
def test_tuned_cpu_runtime_reuses_freed_memory(python_env):
    """cli.tune_cpu_runtime: a freed large block is reused without page faults, dispatch is
    synchronous; without it the same cycle faults every page in again."""
    def probe(mode):
        result = subprocess.run([PYTHON, "-c", FREED_MEMORY_PROBE, mode], env=python_env,
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        faults, async_dispatch, applied = result.stdout.split(maxsplit=2)
        return int(faults), async_dispatch, applied.strip()

    pages = (200 << 20) // 4096
    tuned_faults, tuned_async, applied = probe("tuned")
    assert applied == "{'sync_dispatch': True, 'malloc_keeps_freed': True}"
    assert tuned_async == "False" and tuned_faults < pages // 50
    default_faults, default_async, _ = probe("default")
    assert default_async == "True" and default_faults > pages // 2
