"""A sweep over two processes when it is stopped or loses a process (2 local processes x 2 fake CPU
devices each, gloo collectives on 127.0.0.1): SIGTERM on either process saves every run at one step
and ends both; a peer that dies ends the other within the distributed timeout.

The sweep that runs to its end over two processes is in test_parallel.py.
"""

import json
import os
import re
import signal
import time

import pytest

from helpers import free_port, launch_process

# 4 runs that go on until stopped; a log record every 2 steps, where the processes agree to stop.
LONG = ["--seeds=0,1,2,3", "--config.num_steps=1000000", "--config.log_every=2",
        "--config.sample_every=1000000", "--config.checkpoint_every=1000000"]


class _Sweep:
    """Both processes of a 4-run sweep that goes on until stopped, and their output."""

    def __init__(self, workdir, data_dir, env):
        port, self.workdir = free_port(), workdir
        self.logs = [workdir.parent / f"{workdir.name}_process_{i}.log" for i in range(2)]
        files = [open(path, "w") for path in self.logs]
        self.processes = [launch_process("gan_jax.sweep", i, port, workdir, data_dir, LONG, env, f)
                          for i, f in enumerate(files)]
        for f in files:
            f.close()  # the processes hold their own copies

    def output(self, index: int) -> str:
        return self.logs[index].read_text()

    def wait_until_training(self) -> None:
        """Until process 0 has logged run_000's first steps (or fails the test with the output)."""
        metrics, deadline = self.workdir / "run_000" / "metrics.jsonl", time.monotonic() + 240
        while not metrics.exists():
            if any(p.poll() is not None for p in self.processes) or time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"the sweep did not start: {[self.output(i)[-2000:] for i in range(2)]}")
            time.sleep(0.2)

    def wait(self, seconds: float) -> None:
        """Until both processes end (or fails the test with their output, killing them)."""
        deadline = time.monotonic() + seconds
        while any(p.poll() is None for p in self.processes):
            if time.monotonic() > deadline:
                self.kill()
                pytest.fail(f"the processes did not end within {seconds} s: "
                            f"{[self.output(i)[-2000:] for i in range(2)]}")
            time.sleep(0.2)

    def kill(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.kill()
            process.wait()


@pytest.mark.slow
@pytest.mark.parametrize("signalled", [0, 1])
def test_sigterm_on_either_process_saves_every_run_and_stops_both(idx_dir, tmp_path, two_device_env,
                                                                  signalled):
    workdir = tmp_path / "sweep"
    sweep = _Sweep(workdir, idx_dir, two_device_env)
    try:
        sweep.wait_until_training()
        sweep.processes[signalled].send_signal(signal.SIGTERM)
        sweep.wait(300)  # a stop waits for the next logged step and four saves; slow machines
    finally:
        sweep.kill()
    steps = set()
    for index, process in enumerate(sweep.processes):
        output = sweep.output(index)
        assert process.returncode == 0, output[-3000:]
        # Each process ends with the one line that says where it stopped and how to resume.
        match = re.search(r"interrupted at step (\d+)[^\n]*Resume with: python -m gan_jax.sweep",
                          output.strip().splitlines()[-1])
        assert match, output[-3000:]
        steps.add(int(match.group(1)))
    (step,) = steps  # both processes stopped at the same step
    assert step % 2 == 0  # a step where they compare their flags
    with open(workdir / "sweep.json") as f:
        assert [r["status"] for r in json.load(f)["runs"]] == [f"interrupted at step {step}"] * 4
    for run in range(4):
        assert os.listdir(workdir / f"run_{run:03d}" / "checkpoints") == [str(step)]


@pytest.mark.slow
def test_a_dead_peer_ends_the_other_sweep_process_in_bounded_time(idx_dir, tmp_path, two_device_env):
    sweep = _Sweep(tmp_path / "dies", idx_dir, two_device_env)
    try:
        sweep.wait_until_training()
        sweep.processes[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        sweep.processes[0].wait(timeout=300)
        waited = time.monotonic() - killed_at
    finally:
        sweep.kill()
    assert sweep.processes[0].returncode != 0
    assert waited < 150  # --distributed_timeout=15 plus shutdown, with room for a slow, loaded machine
    # JAX's coordination service names the cause before it ends the process.
    assert "another task died" in sweep.output(0)
