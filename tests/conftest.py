"""The tests' environment (four fake CPU devices, one compilation cache) and their shared fixtures.

Shared helpers are in helpers.py. Markers: `slow` for subprocess, multi-process, evaluator-training and
long tests, so `python -m pytest -m "not slow"` is the quick loop.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

# Four fake CPU devices for the multi-device tests; set before anything imports JAX. Single-device
# numerics do not change with this flag, and the single-device tests ask for one device.
NUM_FAKE_DEVICES = 4
os.environ["XLA_FLAGS"] = " ".join(
    [os.environ.get("XLA_FLAGS", ""), f"--xla_force_host_platform_device_count={NUM_FAKE_DEVICES}"])
# One compilation cache for the whole test run, in-process and in the commands the tests start: the
# tests compile the same small steps many times (each run builds its own jit), and a step costs
# seconds to compile here. A cached executable is the very program a compilation would give.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="gan_jax_tests_jit_cache_")
    atexit.register(shutil.rmtree, os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")

import pytest

from helpers import REPO, tiny_config, write_idx_dataset


@pytest.fixture(scope="session")
def idx_dir(tmp_path_factory) -> str:
    return write_idx_dataset(str(tmp_path_factory.mktemp("idx_data")))


@pytest.fixture(scope="session")
def trained_workdir(tmp_path_factory, idx_dir) -> str:
    """A tiny run (6 steps, checkpoints at 4 and 6) keeping an EMA generator, trained once per
    session for the tests that evaluate and sample it (tests/test_evaluate.py, tests/test_sample.py)."""
    from gan_jax.train import train_and_evaluate
    workdir = str(tmp_path_factory.mktemp("evaluated_run"))
    train_and_evaluate(tiny_config(idx_dir, ema_decay=0.5), workdir)
    return workdir


@pytest.fixture(scope="session")
def python_env():
    """Environment for CLI subprocesses: this repo importable, output unbuffered."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.fixture
def two_device_env(python_env):
    """Each process of a two-process run gets 2 fake CPU devices (4 in all)."""
    return dict(python_env, XLA_FLAGS="--xla_force_host_platform_device_count=2")
