"""Sweeps: run i of a sweep is `gan_jax.train`'s run with its seed and values, its folder works with
every other command, structural keys are refused, and an interrupted sweep resumes exactly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import jax.numpy as jnp
import numpy as np
import pytest

from helpers import (PYTHON, REPO, TOLERANCE, assert_one_line_error, assert_same_training,
                     interrupt_after, tiny_config, trees_equal)
from gan_jax import evaluate, sample, sweep, train
from gan_jax.errors import ConfigError
from gan_jax.evaluation.restored import load_run
from gan_jax.reporting.metrics_log import read_metrics
from gan_jax.training import runs as runs_lib
from gan_jax.training import steps
from gan_jax.training.control import Interrupted
from gan_jax.training.runs import RunsFailed

NUM_STEPS = 6  # experiments/mnist.py:tiny: logs every 2, samples every 3, checkpoints every 4
SEEDS, VARY = [0, 1], {"g_lr": [1e-4, 3e-4]}


def metrics_of(workdir):
    return [{k: v for k, v in r.items() if k != "steps_per_s"}
            for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))]


@pytest.fixture(scope="module")
def swept(idx_dir, tmp_path_factory):
    """Four runs (2 seeds x 2 learning rates) of the tiny config in one program: (folder, states)."""
    workdir = str(tmp_path_factory.mktemp("sweep"))
    return workdir, sweep.run_sweep(tiny_config(idx_dir), workdir, SEEDS, VARY)


@pytest.mark.slow
def test_the_runs_are_the_product_of_seeds_and_values(swept):
    workdir, states = swept
    with open(os.path.join(workdir, "sweep.json")) as f:
        record = json.load(f)
    assert [(r["name"], r["seed"], r["values"]) for r in record["runs"]] == [
        ("run_000", 0, {"g_lr": 1e-4}), ("run_001", 0, {"g_lr": 3e-4}),
        ("run_002", 1, {"g_lr": 1e-4}), ("run_003", 1, {"g_lr": 3e-4})]
    assert all(r["status"] == "finished at step 6" for r in record["runs"])
    assert len(states) == 4 and all(int(s.step) == NUM_STEPS for s in states)
    for run in record["runs"]:
        with open(os.path.join(workdir, run["name"], "config.json")) as f:
            config = json.load(f)
        assert (config["seed"], config["g_lr"]) == (run["seed"], run["values"]["g_lr"])
        assert sorted(os.listdir(os.path.join(workdir, run["name"], "checkpoints"))) == ["4", "6"]


@pytest.mark.slow
def test_each_run_is_the_run_train_makes_with_its_seed_and_values(swept, idx_dir, tmp_path):
    """Same initial parameters, data order and noise: metrics within float rounding (the sweep's
    hyperparameters are arrays, the single run's constants)."""
    workdir, states = swept
    for index in (0, 3):  # two seeds, two learning rates
        seed, g_lr = [(0, 1e-4), (0, 3e-4), (1, 1e-4), (1, 3e-4)][index]
        alone_dir = str(tmp_path / f"alone_{index}")
        alone = train.train_and_evaluate(tiny_config(idx_dir, seed=seed, g_lr=g_lr), alone_dir)
        swept_metrics = metrics_of(os.path.join(workdir, f"run_{index:03d}"))
        assert [r["step"] for r in swept_metrics] == [r["step"] for r in metrics_of(alone_dir)]
        for got, want in zip(swept_metrics, metrics_of(alone_dir)):
            for name in ("d_loss", "g_loss", "d_real", "d_fake"):
                assert got[name] == pytest.approx(want[name], abs=TOLERANCE), (index, name)
        assert_same_training(states[index], alone, gauge_atol=2 * 3e-4 * NUM_STEPS)


@pytest.mark.slow
def test_past_an_epochs_end_each_run_takes_its_next_epochs_order(idx_dir, tmp_path):
    """64 images at batch 8: steps 9-10 are the second epoch's, in each run's own new order."""
    sweep.run_sweep(tiny_config(idx_dir, num_steps=10), str(tmp_path / "sweep"), [1], {})
    train.train_and_evaluate(tiny_config(idx_dir, seed=1, num_steps=10), str(tmp_path / "alone"))
    swept, alone = metrics_of(str(tmp_path / "sweep" / "run_000")), metrics_of(str(tmp_path / "alone"))
    assert [r["step"] for r in swept] == [r["step"] for r in alone] and swept[-1]["step"] == 10
    for got, want in zip(swept, alone):
        for name in ("d_loss", "g_loss", "d_real", "d_fake"):
            assert got[name] == pytest.approx(want[name], abs=TOLERANCE), (got["step"], name)


@pytest.mark.slow
def test_a_runs_folder_works_with_evaluate_sample_and_train(swept, idx_dir, tmp_path):
    workdir, states = swept
    run_dir = str(tmp_path / "run_001")
    shutil.copytree(os.path.join(workdir, "run_001"), run_dir)
    restored = load_run(run_dir)
    assert trees_equal(restored.state, states[1]) and restored.config.g_lr == 3e-4
    assert "4-image sample" in sample.sample(workdir=run_dir, num=4, npy=str(tmp_path / "s.npy"))
    resumed = train.train_and_evaluate(tiny_config(idx_dir, seed=0, g_lr=3e-4, num_steps=8), run_dir)
    assert int(resumed.step) == 8


@pytest.mark.slow
def test_evaluate_scores_every_run_and_each_group_of_seeds(swept, tmp_path):
    workdir, _ = swept
    out = str(tmp_path / "sweep_eval.json")
    printed, written = evaluate.evaluate(workdir=workdir, num_samples=16, json_path=out)
    assert written == [out]
    assert "4 runs" in printed and "g_lr=0.0001: 2 seeds (0, 1)" in printed
    with open(out) as f:
        result = json.load(f)
    assert [r["name"] for r in result["runs"]] == ["run_000", "run_001", "run_002", "run_003"]
    first_group = result["groups"][0]
    assert first_group["runs"] == ["run_000", "run_002"] and first_group["values"] == {"g_lr": 1e-4}
    fids = [result["runs"][0]["fid"], result["runs"][2]["fid"]]
    assert first_group["fid"]["mean"] == pytest.approx(np.mean(fids))
    assert first_group["fid"]["std"] == pytest.approx(np.std(fids, ddof=1))
    assert (first_group["fid"]["min"], first_group["fid"]["max"]) == (min(fids), max(fids))


@pytest.mark.parametrize("vary, message", [
    ({"batch_size": [8, 16]}, "config.batch_size cannot vary within a sweep: it changes the program"),
    ({"model.g_width": [8]}, "config.model.g_width cannot vary within a sweep: it changes the program"),
    ({"learning_rate": [1.0]}, "config.learning_rate cannot vary within a sweep: it is not a config key"),
])
def test_keys_that_change_the_program_cannot_vary(vary, message):
    (key, values), = vary.items()
    with pytest.raises(ConfigError, match=message):
        runs_lib.parse_values(f"{key}={','.join(map(str, values))}")


def test_terms_are_on_for_all_runs_or_for_none(idx_dir):
    with pytest.raises(ConfigError, match="r1_gamma must be all zero or all non-zero"):
        runs_lib.plan_sweep(tiny_config(idx_dir, **{"model.d_norm": "none"}), "sweep", [0],
                            {"r1_gamma": [0.0, 1.0]})
    with pytest.raises(ConfigError, match="seed twice"):
        runs_lib.plan_sweep(tiny_config(idx_dir), "sweep", [0, 0], {})
    planned = runs_lib.plan_sweep(tiny_config(idx_dir, ema_decay=0.9), "sweep", [3],
                                  {"ema_decay": [0.9, 0.99], "d_lr": [1e-4, 2e-4]})
    assert [run.workdir for run in planned] == [f"sweep/run_00{i}" for i in range(4)]
    assert [(r.seed, r.values) for r in planned] == [
        (3, {"ema_decay": 0.9, "d_lr": 1e-4}), (3, {"ema_decay": 0.9, "d_lr": 2e-4}),
        (3, {"ema_decay": 0.99, "d_lr": 1e-4}), (3, {"ema_decay": 0.99, "d_lr": 2e-4})]


@pytest.mark.slow
def test_an_interrupted_sweep_resumes_to_the_uninterrupted_one(swept, idx_dir, tmp_path, monkeypatch):
    workdir = str(tmp_path / "interrupted")
    with monkeypatch.context() as patched:
        interrupt_after(patched, 3)
        with pytest.raises(Interrupted, match="interrupted at step 3"):
            sweep.run_sweep(tiny_config(idx_dir), workdir, SEEDS, VARY)
    with open(os.path.join(workdir, "sweep.json")) as f:  # it says so, not "training"
        assert {r["status"] for r in json.load(f)["runs"]} == {"interrupted at step 3"}
    assert all(os.listdir(os.path.join(workdir, f"run_{i:03d}", "checkpoints")) == ["3"] for i in range(4))
    resumed = sweep.run_sweep(tiny_config(idx_dir), workdir, SEEDS, VARY)
    reference_dir, reference = swept
    for index in range(4):
        assert trees_equal(resumed[index], reference[index])
        name = f"run_{index:03d}"
        assert metrics_of(os.path.join(workdir, name)) == metrics_of(os.path.join(reference_dir, name))
    # Resuming the folder as another sweep is refused.
    with pytest.raises(ConfigError, match="holds another sweep"):
        sweep.run_sweep(tiny_config(idx_dir), workdir, [0, 1, 2], VARY)


@pytest.mark.slow
def test_a_run_whose_loss_becomes_nan_stops_and_the_others_finish(idx_dir, tmp_path, monkeypatch):
    """The run with g_lr 3e-4 gets a NaN loss at step 3 (injected); the other finishes."""
    original = steps.train_step

    def nan_for_one_run(state, data, *, gan, hp=None, axis_name=None):
        new, metrics = original(state, data, gan=gan, hp=hp, axis_name=axis_name)
        hit = (new.step == 3) & (hp["g_lr"] > 2e-4)
        return new, {**metrics, "g_loss": jnp.where(hit, jnp.nan, metrics["g_loss"])}
    monkeypatch.setattr(steps, "train_step", nan_for_one_run)
    workdir = str(tmp_path / "nan")
    with pytest.raises(RunsFailed, match=r"1 of 2 runs stopped: run_001: g_loss became nan at step 3; "
                                         r"stopped without saving \(last good checkpoint: step 2 in "):
        sweep.run_sweep(tiny_config(idx_dir, checkpoint_every=2), workdir, [0], VARY)
    with open(os.path.join(workdir, "sweep.json")) as f:
        status = {r["name"]: r["status"] for r in json.load(f)["runs"]}
    assert status["run_000"] == "finished at step 6" and "g_loss became nan at step 3" in status["run_001"]
    assert sorted(os.listdir(os.path.join(workdir, "run_000", "checkpoints"))) == ["2", "4", "6"]
    assert sorted(os.listdir(os.path.join(workdir, "run_001", "checkpoints"))) == ["2"]
    assert [r["step"] for r in read_metrics(os.path.join(workdir, "run_001", "metrics.jsonl"))] == [2]


@pytest.mark.slow
@pytest.mark.parametrize("form", ["vmap", "map"])
def test_every_form_trains_what_the_unrolled_form_trains(swept, idx_dir, tmp_path, form):
    _, reference = swept
    states = sweep.run_sweep(tiny_config(idx_dir, num_steps=2), str(tmp_path / form), [1], VARY, form)
    short = sweep.run_sweep(tiny_config(idx_dir, num_steps=2), str(tmp_path / "unrolled"), [1], VARY,
                            "unrolled")
    for got, want in zip(states, short):
        assert_same_training(got, want, gauge_atol=2 * 3e-4 * 2)


@pytest.mark.slow
def test_runs_spread_over_four_devices_train_what_one_device_trains(idx_dir, tmp_path):
    one = sweep.run_sweep(tiny_config(idx_dir, num_steps=2), str(tmp_path / "one"), SEEDS, VARY)
    four = sweep.run_sweep(tiny_config(idx_dir, num_steps=2, num_devices=4), str(tmp_path / "four"),
                           SEEDS, VARY)
    for got, want in zip(four, one):
        assert_same_training(got, want, gauge_atol=2 * 3e-4 * 2)


@pytest.mark.slow
def test_cli_refuses_a_structural_key_in_one_line(tmp_path, python_env, idx_dir):
    result = subprocess.run(
        [PYTHON, "-m", "gan_jax.sweep", "--config", os.path.join(REPO, "experiments", "mnist.py:tiny"),
         "--config.data.source=idx", f"--config.data.dir={idx_dir}", "--config.data.check_dataset=False",
         "--seeds=0,1",
         "--vary=batch_size=8,16", f"--workdir={tmp_path}"],
        env=python_env, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert_one_line_error(result.stderr, "config.batch_size cannot vary within a sweep")
    assert not os.listdir(tmp_path)
