"""The training loop in-process: bit-identical reruns, stop-and-resume, and each bad-input case."""

import json
import logging
import os
import shutil

import jax
import jax.numpy as jnp
import pytest

from PIL import Image
from helpers import ALL_TOOLS, before_each_call, interrupt_after, read_tensorboard, tiny_config, trees_equal
from gan_jax import cli, train
from gan_jax.errors import CheckpointError, ConfigError, DataError, NonFiniteLossError, UserError
from gan_jax.model import losses
from gan_jax.reporting.metrics_log import read_metrics
from gan_jax.training import devices
from gan_jax.training.control import Interrupted
from gan_jax.training.loop import TrainingResult

NUM_STEPS = 6  # experiments/mnist.py:tiny: logs every 2, samples every 3, checkpoints every 4


def numeric_metrics(workdir):
    """metrics.jsonl without the wall-clock field, the only one allowed to differ between runs."""
    return [{k: v for k, v in r.items() if k != "steps_per_s"}
            for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))]


def params_of(state):
    """Everything in a (host) training state: parameters, statistics, Adam states, key, step."""
    return (state.generator, state.discriminator, state.key, state.step)


@pytest.fixture(scope="module")
def reference(idx_dir, tmp_path_factory):
    """One uninterrupted tiny run: (workdir, final state)."""
    workdir = str(tmp_path_factory.mktemp("reference"))
    return workdir, train.train_and_evaluate(tiny_config(idx_dir), workdir)


def test_run_leaves_its_artifacts(reference):
    workdir, state = reference
    assert int(state.step) == NUM_STEPS
    assert [r["step"] for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))] == [2, 4, 6]
    assert sorted(os.listdir(os.path.join(workdir, "samples"))) == ["step_0000003.png",
                                                                   "step_0000006.png"]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4", "6"]
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["num_steps"] == NUM_STEPS


def test_two_runs_are_bit_identical(reference, idx_dir, tmp_path):
    workdir, state = reference
    again = train.train_and_evaluate(tiny_config(idx_dir), str(tmp_path))
    assert trees_equal(params_of(again), params_of(state))
    assert numeric_metrics(str(tmp_path)) == numeric_metrics(workdir)


def test_another_seed_trains_another_model(reference, idx_dir, tmp_path):
    _, state = reference
    other = train.train_and_evaluate(tiny_config(idx_dir, seed=1), str(tmp_path))
    assert not trees_equal(other.generator.params, state.generator.params)


@pytest.fixture(scope="module")
def interrupted(idx_dir, tmp_path_factory):
    """A tiny run stopped by SIGTERM after 3 steps: its workdir."""
    workdir = str(tmp_path_factory.mktemp("interrupted"))
    with pytest.MonkeyPatch.context() as monkeypatch:
        interrupt_after(monkeypatch, 3)
        with pytest.raises(Interrupted, match="interrupted at step 3"):
            train.train_and_evaluate(tiny_config(idx_dir), workdir)
    return workdir


def test_sigterm_saves_a_checkpoint_at_the_current_step(interrupted):
    assert sorted(os.listdir(os.path.join(interrupted, "checkpoints"))) == ["3"]
    assert [r["step"] for r in read_metrics(os.path.join(interrupted, "metrics.jsonl"))] == [2]


def test_stop_and_resume_is_bit_identical_to_an_uninterrupted_run(reference, interrupted, idx_dir,
                                                                   tmp_path):
    workdir = str(tmp_path / "resumed")
    shutil.copytree(interrupted, workdir)
    resumed = train.train_and_evaluate(tiny_config(idx_dir), workdir)
    reference_dir, reference_state = reference
    assert trees_equal(params_of(resumed), params_of(reference_state))
    assert numeric_metrics(workdir) == numeric_metrics(reference_dir)


def _scalars(workdir):
    """What TensorBoard shows of a run's scalars, but the wall-clock one."""
    return [(step, tag, value) for step, tag, kind, value in
            read_tensorboard(os.path.join(workdir, "tensorboard"))
            if kind == "scalar" and tag != "steps_per_s"]


@pytest.mark.slow
def test_tensorboard_after_a_resume_holds_the_uninterrupted_runs_scalars(reference, idx_dir, tmp_path):
    """Stopped at step 4, a log step: its scalars were written before the checkpoint and stay."""
    workdir = str(tmp_path)
    with pytest.MonkeyPatch.context() as monkeypatch:
        interrupt_after(monkeypatch, 4)
        with pytest.raises(Interrupted, match="interrupted at step 4"):
            train.train_and_evaluate(tiny_config(idx_dir), workdir)
    train.train_and_evaluate(tiny_config(idx_dir), workdir)
    scalars = _scalars(workdir)
    assert sorted({step for step, _, _ in scalars}) == [2, 4, 6]
    assert sorted(scalars) == sorted(_scalars(reference[0]))


def test_resume_drops_metrics_logged_after_the_last_checkpoint(reference, idx_dir, tmp_path):
    """A run killed hard after logging step 6 but before saving it resumes from step 4 cleanly."""
    reference_dir, reference_state = reference
    workdir = str(tmp_path / "killed")
    shutil.copytree(reference_dir, workdir)
    shutil.rmtree(os.path.join(workdir, "checkpoints", "6"))
    resumed = train.train_and_evaluate(tiny_config(idx_dir), workdir)
    assert trees_equal(params_of(resumed), params_of(reference_state))
    assert numeric_metrics(workdir) == numeric_metrics(reference_dir)


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(interrupted, idx_dir, tmp_path,
                                                           monkeypatch):
    workdir = str(tmp_path / "nan")
    shutil.copytree(interrupted, workdir)
    monkeypatch.setattr(losses, "generator_loss", lambda kind, logits: jnp.full((), jnp.nan))
    with pytest.raises(NonFiniteLossError, match="g_loss became nan at step 4.*step 3") as info:
        train.train_and_evaluate(tiny_config(idx_dir), workdir)
    assert "\n" not in str(info.value)
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["3"]
    assert [r["step"] for r in read_metrics(os.path.join(workdir, "metrics.jsonl"))] == [2]


def test_a_relative_data_dir_is_recorded_absolute(idx_dir, tmp_path, monkeypatch):
    """So that evaluate and sample find the run's data from any folder."""
    monkeypatch.chdir(os.path.dirname(idx_dir))
    workdir = str(tmp_path / "run")
    train.train_and_evaluate(tiny_config(os.path.basename(idx_dir), num_steps=1), workdir)
    with open(os.path.join(workdir, "config.json")) as f:
        assert json.load(f)["data"]["dir"] == idx_dir


def test_a_finished_run_asked_for_fewer_steps_trains_nothing_and_says_so(reference, idx_dir, tmp_path,
                                                                          caplog, capsys):
    """Resumed with a smaller num_steps: the log and the command's last line say that nothing was
    trained, the run's checkpoints and metrics stay as they were, and no TensorBoard event file is
    added (the writer opens at its first record)."""
    workdir = str(tmp_path / "finished")
    shutil.copytree(reference[0], workdir)
    event_files = sorted(os.listdir(os.path.join(workdir, "tensorboard")))
    metrics = numeric_metrics(workdir)
    caplog.set_level(logging.INFO, logger="gan_jax")
    status = cli.training_command("gan_jax.train", workdir,
                                  lambda: train.train(tiny_config(idx_dir, num_steps=4), workdir))
    assert status == 0
    assert "nothing to train: the run is at step 6, and config asks for 4" in caplog.text
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"nothing trained: the run is already at step 6, and the config asks for 4; outputs in "
        f"{workdir}")
    assert sorted(os.listdir(os.path.join(workdir, "tensorboard"))) == event_files
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4", "6"]
    assert numeric_metrics(workdir) == metrics


def test_a_sweep_that_trains_nothing_says_so_for_all_its_runs(tmp_path, capsys):
    """The summary line's grammar for several runs (what `gan_jax.sweep` prints)."""
    finished = TrainingResult(states=[None, None, None], start_step=6, total_steps=4)
    assert cli.training_command("gan_jax.sweep", str(tmp_path), lambda: finished) == 0
    assert capsys.readouterr().err.startswith("nothing trained: 3 runs are already at step 6, and "
                                              "the config asks for 4; outputs in ")


def test_incompatible_checkpoint_refused_and_nothing_overwritten(reference, idx_dir, tmp_path):
    workdir = str(tmp_path / "other_shapes")
    shutil.copytree(reference[0], workdir)
    with open(os.path.join(workdir, "config.json")) as f:
        before = f.read()
    wider = tiny_config(idx_dir, **{"model.g_width": 16})
    with pytest.raises(ConfigError, match=r"defines another run \(model.g_width: 8 -> 16\)"):
        train.train_and_evaluate(wider, workdir)
    with open(os.path.join(workdir, "config.json")) as f:
        assert f.read() == before
    # Without config.json (a copied checkpoint folder, say) the checkpoint's shapes still say no.
    os.remove(os.path.join(workdir, "config.json"))
    with pytest.raises(CheckpointError, match="does not fit this config"):
        train.train_and_evaluate(wider, workdir)
    assert not os.path.exists(os.path.join(workdir, "config.json"))
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4", "6"]


def test_the_loop_holds_no_device_arrays_from_step_to_step(idx_dir, tmp_path, monkeypatch):
    """Between log steps the loop keeps sums on the host, not each step's device metrics: held device
    buffers pinned freed memory in glibc's heap under the CPU runtime tuning (cli.tune_cpu_runtime),
    which grew a process by ~7 MB per step to 8 GB (README, Memory)."""
    live = []
    before_each_call(monkeypatch, lambda: live.append(len(jax.live_arrays())))
    config = tiny_config(idx_dir, num_steps=40, log_every=40, sample_every=40, checkpoint_every=40)
    train.train_and_evaluate(config, str(tmp_path))
    assert len(live) == 40 and max(live[2:]) == min(live[2:]), live


def test_unwritable_workdir(idx_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(UserError, match="cannot write to workdir"):
        train.train_and_evaluate(tiny_config(idx_dir), str(blocker / "run"))


def test_bad_config_and_data_fail_before_any_work(idx_dir, tmp_path):
    with pytest.raises(ConfigError, match="batch_size=0"):
        train.train_and_evaluate(tiny_config(idx_dir, batch_size=0), str(tmp_path / "a"))
    assert not os.path.exists(tmp_path / "a")
    with pytest.raises(DataError, match="missing data file"):
        train.train_and_evaluate(tiny_config(str(tmp_path)), str(tmp_path / "b"))
    with pytest.raises(ConfigError, match="larger than the 64 training images"):
        train.train_and_evaluate(tiny_config(idx_dir, batch_size=128), str(tmp_path / "c"))
    # A start that fails writes nothing: no folder, no lock, no empty samples/ or checkpoints/.
    assert not any(os.path.exists(tmp_path / name) for name in ("a", "b", "c"))


def test_deterministic_flag_asks_xla_for_deterministic_ops(idx_dir, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
    devices.request_deterministic_xla(tiny_config(idx_dir).deterministic)
    assert os.environ["XLA_FLAGS"].split() == ["--xla_force_host_platform_device_count=1",
                                               "--xla_gpu_deterministic_ops=true"]
    monkeypatch.setenv("XLA_FLAGS", "")
    devices.request_deterministic_xla(tiny_config(idx_dir, deterministic=False).deterministic)
    assert os.environ["XLA_FLAGS"] == ""


@pytest.mark.slow
def test_steps_per_call_trains_like_single_steps(reference, idx_dir, tmp_path):
    """K steps per call: the same metrics records and, to float32 rounding, the same model."""
    from helpers import assert_same_training
    overrides = dict(steps_per_call=2, sample_every=4, checkpoint_every=4)
    single = train.train_and_evaluate(tiny_config(idx_dir, **dict(overrides, steps_per_call=1)),
                                      str(tmp_path / "k1"))
    batched = train.train_and_evaluate(tiny_config(idx_dir, **overrides), str(tmp_path / "k2"))
    assert_same_training(batched, single, gauge_atol=2 * 2e-4 * NUM_STEPS)
    a, b = numeric_metrics(str(tmp_path / "k2")), numeric_metrics(str(tmp_path / "k1"))
    assert [r["step"] for r in a] == [r["step"] for r in b] == [2, 4, 6]
    for ra, rb in zip(a, b):
        for name in ("d_loss", "g_loss", "d_real", "d_fake"):
            assert ra[name] == pytest.approx(rb[name], abs=1e-5)


@pytest.mark.slow
def test_eval_every_logs_sample_quality_of_both_generators(idx_dir, tmp_path):
    workdir = str(tmp_path)
    train.train_and_evaluate(tiny_config(idx_dir, eval_every=3, ema_decay=0.5), workdir)
    records = read_metrics(os.path.join(workdir, "metrics.jsonl"))
    assert [r["step"] for r in records] == [2, 3, 4, 6]
    evaluated = {r["step"]: r for r in records if "eval_fid" in r}
    assert sorted(evaluated) == [3, 6]  # every 3 steps, and always the last
    for record in evaluated.values():
        for suffix in ("", "_ema"):
            assert record[f"eval_fid{suffix}"] > 0 and 1 <= record[f"eval_score{suffix}"] <= 10
            assert f"eval_kid{suffix}" in record
        assert record["eval_fid"] != record["eval_fid_ema"]
    # Step 3 is an evaluation, not a log step: no losses, no speed.
    assert "steps_per_s" not in records[1] and "d_loss" not in records[1]
    assert Image.open(os.path.join(workdir, "quality.png")).format == "PNG"
    # TensorBoard holds the sample grid of every sample step and the evaluations.
    summaries = read_tensorboard(os.path.join(workdir, "tensorboard"))
    assert [(step, tag) for step, tag, kind, _ in summaries if kind == "image"] == [(3, "samples"),
                                                                                    (6, "samples")]
    assert {(step, tag) for step, tag, _, _ in summaries if tag.startswith("eval_fid")} == {
        (3, "eval_fid"), (3, "eval_fid_ema"), (6, "eval_fid"), (6, "eval_fid_ema")}


def test_a_log_record_is_the_mean_of_the_steps_since_the_previous_one(reference, idx_dir, tmp_path):
    train.train_and_evaluate(tiny_config(idx_dir, log_every=1), str(tmp_path))
    every_step = numeric_metrics(str(tmp_path))
    every_other = numeric_metrics(reference[0])  # log_every=2
    assert [r["step"] for r in every_step] == [1, 2, 3, 4, 5, 6]
    for record in every_other:
        pair = [r for r in every_step if record["step"] - 2 < r["step"] <= record["step"]]
        for name in ("d_loss", "g_loss", "d_real", "d_fake"):
            assert record[name] == pytest.approx((pair[0][name] + pair[1][name]) / 2, rel=1e-12)


# Every quality tool of the config at once: the guarantees of the tutorial's setup hold for them too.
@pytest.fixture(scope="module")
def all_tools_reference(idx_dir, tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("all_tools"))
    return workdir, train.train_and_evaluate(tiny_config(idx_dir, **ALL_TOOLS), workdir)


@pytest.mark.slow
def test_every_quality_tool_reruns_bit_identically(all_tools_reference, idx_dir, tmp_path):
    workdir, state = all_tools_reference
    assert state.generator_ema is not None and "d_gp" in numeric_metrics(workdir)[0]
    again = train.train_and_evaluate(tiny_config(idx_dir, **ALL_TOOLS), str(tmp_path))
    assert trees_equal(again, state)
    assert numeric_metrics(str(tmp_path)) == numeric_metrics(workdir)


@pytest.mark.slow
def test_every_quality_tool_resumes_bit_identically(all_tools_reference, idx_dir, tmp_path):
    workdir = str(tmp_path)
    with pytest.MonkeyPatch.context() as monkeypatch:
        interrupt_after(monkeypatch, 3)
        with pytest.raises(Interrupted, match="interrupted at step 3"):
            train.train_and_evaluate(tiny_config(idx_dir, **ALL_TOOLS), workdir)
    resumed = train.train_and_evaluate(tiny_config(idx_dir, **ALL_TOOLS), workdir)
    reference_dir, reference_state = all_tools_reference
    assert trees_equal(resumed, reference_state)
    assert numeric_metrics(workdir) == numeric_metrics(reference_dir)


def test_profile_steps_write_a_trace_that_tensorboard_and_perfetto_open(idx_dir, tmp_path):
    import glob
    train.train_and_evaluate(tiny_config(idx_dir, profile_steps="2,2"), str(tmp_path))
    traces = glob.glob(str(tmp_path / "profile" / "plugins" / "profile" / "*" / "*"))
    kinds = {os.path.basename(path).split(".", 1)[1] for path in traces if os.path.getsize(path) > 0}
    assert {"xplane.pb", "trace.json.gz"} <= kinds, traces  # XProf/TensorBoard's, and Perfetto's
