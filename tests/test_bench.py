"""The benchmark: the analytic FLOP count, and that it measures the real step and reports every key."""

import json
import os
import subprocess

import numpy as np
import pytest

from helpers import PYTHON, REPO, load_experiment, tiny_config
from gan_jax import bench
from gan_jax.model import flops

JSON_KEYS = {"device_kind", "device_count", "jax_version", "batch_size", "steps_per_call", "compile_s",
             "steps_per_s", "images_per_s", "gflops_per_s", "peak_memory_bytes"}


def test_flop_count_of_the_default_model():
    # Forward multiply-adds per image, layer by layer (PyTorch shapes):
    g = [1 * 1 * 7 * 7 * 100 * 128,  # ConvT 100->128, k7, on 1x1: every input pixel meets 49 taps
         7 * 7 * 4 * 4 * 128 * 64,  # ConvT 128->64, k4 s2, on 7x7
         14 * 14 * 4 * 4 * 64 * 1]  # ConvT 64->1, k4 s2, on 14x14
    d = [14 * 14 * 4 * 4 * 1 * 64,  # Conv 1->64, k4 s2, 14x14 outputs
         7 * 7 * 4 * 4 * 64 * 128,  # Conv 64->128, k4 s2, 7x7 outputs
         6272]  # Dense 6272 -> 1
    config = load_experiment("mnist")
    assert flops.network_macs(config) == {"generator": g, "discriminator": d}
    g_fwd, d_fwd = sum(g), sum(d)
    # D step: G fwd, then for real and fake: D fwd + weight grads + input grads above layer 1.
    # G step: G fwd + D fwd + D input grads + G weight grads + G input grads above layer 1.
    macs = g_fwd + 2 * (3 * d_fwd - d[0]) + (3 * g_fwd - g[0]) + 2 * d_fwd
    assert flops.train_step_flops_per_image(config) == 2 * macs == 162_018_304


def test_flop_count_follows_the_config():
    config = load_experiment("mnist")
    base = flops.train_step_flops_per_image(config)
    config.model.g_width, config.model.d_width = 128, 128
    assert 3 * base < flops.train_step_flops_per_image(config) < 4 * base  # widths enter squared


@pytest.mark.slow
@pytest.mark.parametrize("steps_per_call", [1, 3])
def test_bench_times_the_real_step(idx_dir, steps_per_call, tmp_path):
    config = tiny_config(idx_dir, steps_per_call=steps_per_call, log_every=3, sample_every=3,
                         checkpoint_every=3)
    images = np.zeros((64, 28, 28, 1), np.uint8)
    row = bench.bench_one(config, images, num_steps=4, repeats=2, loop="auto",
                          profile_dir=str(tmp_path / "profile"))
    assert JSON_KEYS <= set(row)
    assert row["timed_steps"] == (4 if steps_per_call == 1 else 6)  # whole calls
    assert row["steps_per_s_min"] <= row["steps_per_s"] <= row["steps_per_s_max"]
    assert row["images_per_s"] == pytest.approx(row["steps_per_s"] * 8)
    assert row["gflops_per_s"] == pytest.approx(
        row["steps_per_s"] * 8 * flops.train_step_flops_per_image(config) / 1e9)
    assert row["peak_memory_bytes"] > 0 and row["compile_s"] > 0
    assert row["loop"] == ("single" if steps_per_call == 1 else "rolled")
    # XLA's own count beside the analytic one: the same order (it counts what the program runs).
    analytic = flops.train_step_flops_per_image(config) * 8 * steps_per_call
    assert 0.3 * analytic < row["xla_flops"] < 3 * analytic
    assert row["xla_bytes_accessed"] > 0 and row["xla_argument_size_bytes"] > images.nbytes
    assert row["xla_temp_size_bytes"] >= 0 and row["xla_output_size_bytes"] > 0
    traces = list((tmp_path / "profile").rglob("*.xplane.pb"))
    assert len(traces) == 1 and traces[0].stat().st_size > 0


@pytest.mark.slow
def test_bench_times_a_self_conditioned_step_and_sweep(idx_dir):
    """The step of a self-conditioned run draws G's classes from the clusters: the benchmark clusters
    its state first, as the loop does before step 0."""
    config = tiny_config(idx_dir, **{"self_condition.clusters": 3, "model.g_condition": "cbn",
                                     "model.d_condition": "projection"})
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28, 1), np.uint8)
    row = bench.bench_one(config, images, num_steps=2, repeats=1, loop="auto")
    assert row["steps_per_s"] > 0
    sweep_row = bench.bench_sweep(config, images, num_runs=2, num_steps=2, repeats=1, form="auto")
    assert sweep_row["run_steps_per_s"] > 0


@pytest.mark.slow
def test_cli_writes_json_lines(tmp_path, python_env):
    out = tmp_path / "bench.jsonl"
    result = subprocess.run(
        [PYTHON, "-m", "gan_jax.bench", "--config", os.path.join(REPO, "experiments", "mnist.py"),
         "--config.model.g_width=8", "--config.model.d_width=8", "--config.num_devices=1",
         "--batch_sizes=8,16", "--steps=2", "--repeats=1", f"--json={out}"],
        env=python_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["batch_size"] for r in rows] == [8, 16]
    assert all(JSON_KEYS <= set(r) for r in rows)
    assert not any(r["cpu_async_dispatch"] for r in rows)  # the CLI tuned the CPU runtime
    assert "GFLOP per image" in result.stdout and "steps/s" in result.stdout


@pytest.mark.slow
def test_cli_bad_list(tmp_path, python_env):
    result = subprocess.run(
        [PYTHON, "-m", "gan_jax.bench", "--config", os.path.join(REPO, "experiments", "mnist.py"),
         "--batch_sizes=64,abc"], env=python_env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "error: expected comma-separated integers" in result.stderr


@pytest.mark.slow
def test_epoch_runs_the_training_loop_and_reports_its_peak_memory(idx_dir):
    """--epoch: one epoch of train_and_evaluate (here 8 steps of 8 of 64 images) and its peak RSS."""
    config = tiny_config(idx_dir, log_every=4, sample_every=4, checkpoint_every=4)
    images = np.zeros((64, 28, 28, 1), np.uint8)
    row = bench.bench_epoch(config, images)
    assert row["epoch_steps"] == 8
    assert row["epoch_steps_per_s"] == pytest.approx(8 / row["epoch_seconds"])
    # The peak of the epoch is at least what the process holds at its end, and it is resident
    # memory of a JAX process: hundreds of MiB, not the whole life's peak of an earlier test.
    assert row["epoch_end_rss_bytes"] <= row["epoch_peak_rss_bytes"] < 8 << 30
