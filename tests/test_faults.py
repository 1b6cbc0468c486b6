"""The README's fault table, row by row, through the real commands: each test injects the fault into
`python -m gan_jax.train` (or evaluate, sample) as a user's machine would meet it, and checks what the
user sees, the exit code, and that nothing already written is lost.

Faults no config can cause on purpose (a NaN at a chosen step, infinite parameters) are injected by
tests/fault_injection/sitecustomize.py, which the subprocess imports at start-up.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time

import numpy as np
import pytest

from helpers import PYTHON, REPO, TINY, assert_one_line_error, idx_args, read_tensorboard, write_idx_dataset

pytestmark = pytest.mark.slow  # every test here starts the commands as subprocesses

FAULT_INJECTION = os.path.join(REPO, "tests", "fault_injection")
# Every step logged, so whichever step a fault meets is a log step; checkpoints every 2 steps.
CADENCES = ["--config.log_every=1", "--config.sample_every=100000", "--config.checkpoint_every=2"]
LONG = 300  # steps of the runs that are stopped from outside (a few seconds of tiny steps)


def command(module, *args):
    return [PYTHON, "-m", f"gan_jax.{module}", *args]


def run(argv, env, timeout=300):
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def start(argv, env):
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)


def train_args(data, workdir, num_steps, *extra):
    return [*TINY, *idx_args(data), *CADENCES, f"--config.num_steps={num_steps}", f"--workdir={workdir}",
            *extra]


def wait_for_lines(path, count, process, timeout=240):
    """Waits until the file at `path` has `count` lines (the run logged that many steps)."""
    deadline = time.monotonic() + timeout
    while True:
        if os.path.exists(path):
            with open(path) as f:
                if f.read().count("\n") >= count:
                    return
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.05)


def records(workdir):
    """metrics.jsonl without the wall-clock field."""
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "steps_per_s"} for line in f]


def scalars(workdir):
    return sorted((step, tag, value) for step, tag, kind, value in
                  read_tensorboard(os.path.join(workdir, "tensorboard"))
                  if kind == "scalar" and tag != "steps_per_s")


def checkpoints(workdir):
    return sorted(os.listdir(os.path.join(workdir, "checkpoints")))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_idx_dataset(str(tmp_path_factory.mktemp("fault_data")))


@pytest.fixture(scope="module")
def six_steps(data, tmp_path_factory, python_env):
    """A finished 6-step run through the CLI (checkpoints 2, 4, 6): copied by the tests that need one."""
    workdir = str(tmp_path_factory.mktemp("six_steps") / "run")
    result = run(command("train", *train_args(data, workdir, 6)), python_env)
    assert result.returncode == 0, result.stderr
    return workdir


@pytest.fixture
def fault_env(python_env):
    """The environment of a subprocess that imports the fault injection first."""
    return dict(python_env, PYTHONPATH=FAULT_INJECTION + os.pathsep + python_env["PYTHONPATH"])


# --- Stopped from outside -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory, python_env):
    """A LONG-step run through the CLI that nothing stops: what the stopped runs must end up writing."""
    workdir = str(tmp_path_factory.mktemp("uninterrupted") / "run")
    result = run(command("train", *train_args(data, workdir, LONG)), python_env)
    assert result.returncode == 0, result.stderr
    return records(workdir), scalars(workdir)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGKILL], ids=["ctrl_c", "kill_9"])
def test_a_stopped_run_resumes_to_what_an_uninterrupted_run_writes(signum, uninterrupted, data, tmp_path,
                                                                   python_env):
    """Ctrl-C saves a checkpoint at the current step and exits 0; kill -9 saves nothing, and the resume
    starts from the last periodic checkpoint. Either way the resumed run's metrics.jsonl and
    TensorBoard scalars are exactly the uninterrupted run's, step for step."""
    workdir = str(tmp_path / "stopped")
    process = start(command("train", *train_args(data, workdir, LONG)), python_env)
    wait_for_lines(os.path.join(workdir, "metrics.jsonl"), 5, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    saved = max(int(name) for name in checkpoints(workdir) if name.isdigit())
    if signum == signal.SIGINT:
        assert process.returncode == 0, stderr
        assert f"interrupted at step {saved};" in stderr and "Resume with: python -m gan_jax.train" in stderr
    else:
        assert process.returncode == -signal.SIGKILL
    assert saved < LONG, "the run ended before the signal: nothing was tested"
    end = min(saved + 3, LONG)
    resumed = run(command("train", *train_args(data, workdir, end)), python_env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from the checkpoint at step {saved}" in resumed.stderr
    reference_records, reference_scalars = uninterrupted
    assert [r["step"] for r in records(workdir)] == list(range(1, end + 1))
    assert records(workdir) == reference_records[:end]
    assert scalars(workdir) == [s for s in reference_scalars if s[0] <= end]


def test_kill_9_in_the_middle_of_a_save_leaves_no_checkpoint_that_is_read(data, tmp_path, python_env):
    """A checkpoint every step keeps the run saving most of the time; kill it until one kill lands
    while orbax is writing (its temporary folder is left behind), then resume."""
    workdir = str(tmp_path / "run")
    every_step = ["--config.checkpoint_every=1", "--config.keep_checkpoints=2", "--config.model.g_width=32"]
    for attempt in range(20):
        process = start(command("train", *train_args(data, workdir, 100000, *every_step)), python_env)
        wait_for_lines(os.path.join(workdir, "metrics.jsonl"), 3 + attempt, process)
        time.sleep(np.random.default_rng(attempt).uniform(0, 0.3))
        process.kill()
        process.communicate()
        unfinished = [name for name in checkpoints(workdir) if "tmp" in name]
        if unfinished:
            break
    assert unfinished, "no kill landed during a save in 20 tries"
    finished = max(int(name) for name in checkpoints(workdir) if name.isdigit())
    resumed = run(command("train", *train_args(data, workdir, finished + 1, *every_step)), python_env)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from the checkpoint at step {finished}" in resumed.stderr


# --- Numbers that stop being numbers --------------------------------------------------------------------


@pytest.mark.parametrize("fault, message", [
    ("nan_loss_at_step=5", "g_loss became nan at step 5"),
    ("inf_loss_at_step=5", "d_loss became inf at step 5"),
    ("inf_params_at_step=4", "parameters became NaN or infinite by step 4"),
])
def test_non_finite_numbers_stop_the_run_and_keep_the_last_good_checkpoint(fault, message, data,
                                                                          tmp_path, fault_env):
    """At a step that is neither a log nor a checkpoint step too: logging every 1000 steps here."""
    workdir = str(tmp_path / "run")
    result = run(command("train", *train_args(data, workdir, 20, "--config.log_every=1000")),
                 dict(fault_env, GAN_JAX_TEST_FAULT=fault))
    assert result.returncode == 1
    line = assert_one_line_error(result.stderr, message)
    assert "stopped without saving" in line
    # The last good checkpoint is the newest one before the fault.
    assert checkpoints(workdir) == (["2"] if fault.startswith("inf_params") else ["2", "4"])


# --- Damaged checkpoints --------------------------------------------------------------------------------


def damage(workdir, step):
    """Overwrites 1,000 bytes in the middle of the largest data file of a checkpoint with random ones:
    damage the files' own framing does not catch, only the arrays' content hashes (the start, the
    end and the metadata are tests/test_checkpoint.py's)."""
    folder = os.path.join(workdir, "checkpoints", str(step))
    paths = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]
    largest = max(paths, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.seek(os.path.getsize(largest) // 2)
        f.write(np.random.default_rng(step).integers(0, 256, 1000, dtype=np.uint8).tobytes())


def test_a_damaged_checkpoint_is_skipped_named_and_kept(six_steps, data, tmp_path, python_env):
    workdir = str(tmp_path / "run")
    shutil.copytree(six_steps, workdir)
    damage(workdir, 6)
    # Readers skip it for the newest good one and say so, changing nothing.
    sampled = run(command("sample", f"--workdir={workdir}", f"--npy={tmp_path / 's.npy'}"), python_env)
    assert sampled.returncode == 0, sampled.stderr
    assert "skipping the damaged checkpoint at step 6 in" in sampled.stderr
    assert "of step 4" in sampled.stderr
    for module, args in (("sample", [f"--npy={tmp_path / 't.npy'}"]), ("evaluate", ["--num_samples=16"])):
        explicit = run(command(module, f"--workdir={workdir}", "--step=6", *args), python_env)
        assert explicit.returncode == 1
        assert_one_line_error(explicit.stderr, "checkpoint at step 6 in")
        assert "is damaged" in explicit.stderr
    assert checkpoints(workdir) == ["2", "4", "6"]
    # Training resumes from step 4, sets step 6 aside, and the keep-3 rotation never deletes it.
    resumed = run(command("train", *train_args(data, workdir, 10)), python_env)
    assert resumed.returncode == 0, resumed.stderr
    assert "skipping the damaged checkpoint at step 6 in" in resumed.stderr
    assert "resuming from the checkpoint at step 4" in resumed.stderr
    assert checkpoints(workdir) == ["10", "6", "6.damaged", "8"]
    reference = str(tmp_path / "uninterrupted")
    assert run(command("train", *train_args(data, reference, 10)), python_env).returncode == 0
    assert records(workdir) == records(reference)


def test_when_every_checkpoint_is_damaged_one_line_lists_them(six_steps, data, tmp_path, python_env):
    workdir = str(tmp_path / "run")
    shutil.copytree(six_steps, workdir)
    for step in (2, 4, 6):
        damage(workdir, step)
    result = run(command("train", *train_args(data, workdir, 10)), python_env)
    assert result.returncode == 1
    line = assert_one_line_error(result.stderr, "restores (step 6: ")
    assert "step 4: " in line and "step 2: " in line
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == [
        "2.damaged", "4.damaged", "6.damaged"]


# --- Two processes, one workdir -------------------------------------------------------------------------


def test_a_second_launch_on_a_training_workdir_is_refused(data, tmp_path, python_env):
    workdir = str(tmp_path / "run")
    first = start(command("train", *train_args(data, workdir, 100000)), python_env)
    wait_for_lines(os.path.join(workdir, "metrics.jsonl"), 3, first)
    second = run(command("train", *train_args(data, workdir, 100000)), python_env)
    assert second.returncode == 1
    assert_one_line_error(second.stderr, f"is in use by another training process (pid {first.pid} on "
                                         f"host {socket.gethostname()}")
    # Readers need no lock.
    sampled = run(command("sample", f"--workdir={workdir}", f"--npy={tmp_path / 's.npy'}"), python_env)
    assert sampled.returncode == 0, sampled.stderr
    # A holder killed hard leaves no stale lock: the next launch resumes.
    first.kill()
    first.communicate()
    saved = max(int(name) for name in checkpoints(workdir) if name.isdigit())
    third = run(command("train", *train_args(data, workdir, saved + 1)), python_env)
    assert third.returncode == 0, third.stderr


# --- Resuming with another config -----------------------------------------------------------------------


def test_resuming_with_other_hyperparameters_is_reported_and_recorded(six_steps, data, tmp_path,
                                                                      python_env):
    workdir = str(tmp_path / "run")
    shutil.copytree(six_steps, workdir)
    result = run(command("train", *train_args(data, workdir, 8, "--config.g_lr=0.0001")), python_env)
    assert result.returncode == 0, result.stderr
    assert "resuming at step 6 with a changed config: g_lr: 0.0002 -> 0.0001; num_steps: 6 -> 8" in (
        result.stderr)
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["g_lr"] == 0.0001
    with open(os.path.join(workdir, "config_history.jsonl")) as f:
        history = [json.loads(line) for line in f]
    assert [entry["step"] for entry in history] == [0, 6]
    assert history[1]["changed"] == {"g_lr": [0.0002, 0.0001], "num_steps": [6, 8]}
    assert history[0]["config"]["g_lr"] == 0.0002


def test_resuming_with_what_defines_another_run_is_refused(six_steps, data, tmp_path, python_env):
    workdir = str(tmp_path / "run")
    shutil.copytree(six_steps, workdir)
    before = {name: open(os.path.join(workdir, name)).read() for name in
              ("config.json", "config_history.jsonl", "metrics.jsonl")}
    result = run(command("train", *train_args(data, workdir, 8, "--config.seed=1",
                                              "--config.model.g_width=16")), python_env)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "cannot resume with a config that defines another run "
                                         "(model.g_width: 8 -> 16, seed: 0 -> 1)")
    assert {name: open(os.path.join(workdir, name)).read() for name in before} == before
    assert checkpoints(workdir) == ["2", "4", "6"]


# --- The machine ----------------------------------------------------------------------------------------


def _network_namespace_works() -> bool:
    try:
        return subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0
    except OSError:
        return False


@pytest.mark.skipif(not _network_namespace_works(),
                    reason="needs `unshare -rn` (user and network namespaces) to take the network away")
def test_no_network_is_one_line_within_seconds(tmp_path, python_env):
    """The tfds source on a machine without network (a fresh network namespace: no route, no DNS)."""
    start_time = time.monotonic()
    result = subprocess.run(["unshare", "-rn", *command(
        "train", *TINY, f"--config.data.dir={tmp_path / 'tfds'}", f"--workdir={tmp_path / 'run'}")],
        env=python_env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "cannot reach storage.googleapis.com:443 to download mnist")
    assert time.monotonic() - start_time < 60


def test_an_unwritable_workdir_is_one_line(data, tmp_path, python_env):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    result = run(command("train", *train_args(data, str(blocker / "run"), 2)), python_env)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "cannot write to workdir")
    assert blocker.read_text() == "not a folder"
