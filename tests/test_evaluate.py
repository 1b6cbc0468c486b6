"""Tests of `gan_jax.evaluate` and `gan_jax.evaluation.scoring`: checkpoint evaluation, scoring any
images, the reference cache, the CLI.

One tiny run is trained once per session (conftest's `trained_workdir`, shared with
tests/test_sample.py). Its metrics are computed with the shipped MNIST evaluator against the run's
synthetic 16-image test split: meaningless numbers, but every mechanism runs. Tests that need real
MNIST read it from GAN_JAX_MNIST_DIR and skip without it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess

import jax
import numpy as np
import pytest

from helpers import MNIST_DIR_VAR, PYTHON
from gan_jax import evaluate
from gan_jax.data import batches, idx, sources
from gan_jax.errors import DataError, UserError
from gan_jax.evaluation import images, reference, scoring
from gan_jax.evaluation.restored import load_run
from gan_jax.model import inference
from gan_jax.reporting import pictures

NUM_SAMPLES = 64  # enough for every metric (precision/recall need 4, the score's 10 splits need 10)


@pytest.fixture(scope="module")
def workdir(trained_workdir) -> str:
    return trained_workdir


@pytest.fixture(scope="module")
def evaluated(workdir) -> tuple[int, dict]:
    step, result, path = scoring.evaluate_checkpoint(workdir, num_samples=NUM_SAMPLES)
    assert path == os.path.join(workdir, "eval", f"step_{step:07d}.json")
    return step, result


def _one_error_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


# --- Checkpoints ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_checkpoint_reports_every_metric_in_range(workdir, evaluated):
    step, result = evaluated
    assert step == 6  # the latest checkpoint
    assert set(result) == set(scoring.METRIC_KEYS) | {"generator"}
    assert result["generator"] == "ema"  # the run keeps one: it is the default
    assert result["fid"] >= 0 and math.isfinite(result["kid"]) and result["kid_std"] >= 0
    assert 1 - 1e-9 <= result["score"] <= 10 and result["score_std"] >= 0
    for name in ("precision", "recall", "d_acc"):
        assert 0 <= result[name] <= 1, name
    assert 0 <= result["coverage_entropy"] <= math.log(10) + 1e-9
    histogram = result["class_histogram"]
    assert len(histogram) == 10 and all(isinstance(c, int) for c in histogram)
    assert sum(histogram) == NUM_SAMPLES
    with open(os.path.join(workdir, "eval", "step_0000006.json")) as f:
        written = json.load(f)
    assert written == {"step": 6, "num_samples": NUM_SAMPLES, "seed": 0, **result}
    assert os.path.isfile(os.path.join(workdir, "eval", "reference_mnist.npz"))


def test_evaluation_is_deterministic_and_picks_the_step(workdir, evaluated):
    # The second call reads the reference statistics from the cache the first one wrote.
    assert scoring.evaluate_checkpoint(workdir, num_samples=NUM_SAMPLES)[:2] == evaluated
    step, result, _ = scoring.evaluate_checkpoint(workdir, num_samples=NUM_SAMPLES, step=4)
    assert step == 4 and result != evaluated[1]
    assert os.path.isfile(os.path.join(workdir, "eval", "step_0000004.json"))
    _, other_seed, _ = scoring.evaluate_checkpoint(workdir, num_samples=NUM_SAMPLES, seed=1)
    assert other_seed["fid"] != evaluated[1]["fid"]


def test_training_evaluator_scores_the_generator(workdir):
    run = load_run(workdir)
    evaluate_generator = scoring.make_training_evaluator(run.config, workdir, num_samples=32)
    result = evaluate_generator(run.state)
    assert set(result) == {f"eval_{name}{suffix}" for name in ("fid", "kid", "score")
                           for suffix in ("", "_ema")}
    assert all(isinstance(v, float) and math.isfinite(v) for v in result.values())
    assert evaluate_generator(run.state) == result  # fixed noise
    without_ema = evaluate_generator(run.state.replace(generator_ema=None))
    assert without_ema == {k: v for k, v in result.items() if not k.endswith("_ema")}


def test_the_ema_generator_is_the_default_and_noema_picks_the_raw_one(workdir, evaluated):
    _, with_ema = evaluated
    step, raw, path = scoring.evaluate_checkpoint(workdir, num_samples=NUM_SAMPLES, use_ema=False)
    assert raw["generator"] == "raw" and raw["fid"] != with_ema["fid"]
    assert path == os.path.join(workdir, "eval", "step_0000006_raw.json")
    with open(path) as f:
        assert json.load(f)["fid"] == raw["fid"]
    # The default really samples the EMA variables the checkpoint holds.
    run = load_run(workdir)
    noise = inference.latent_noise(0, NUM_SAMPLES, run.config.latent_dim)
    ema_images = inference.generate_images(run.spec.generator, dict(run.state.generator_ema), noise)
    test_images = sources.load_split(run.config.data, "test").images
    assert scoring.evaluate_samples(ema_images, "mnist", test_images)["fid"] == with_ema["fid"]


# --- Scoring images and the reference cache ------------------------------------------------------------


def _random_uint8(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 28, 28), dtype=np.uint8)


def test_reference_cache_is_reused_and_keyed_by_the_test_images(tmp_path):
    samples, real, other_real = _random_uint8(12, 0), _random_uint8(16, 1), _random_uint8(16, 2)
    cache = str(tmp_path / "eval" / "reference_mnist.npz")
    uncached = scoring.evaluate_samples(samples, "mnist", real)
    assert scoring.evaluate_samples(samples, "mnist", real, reference_cache=cache) == uncached
    written = os.stat(cache)
    assert scoring.evaluate_samples(samples, "mnist", real, reference_cache=cache) == uncached
    reread = os.stat(cache)
    assert (reread.st_ino, reread.st_mtime_ns) == (written.st_ino, written.st_mtime_ns)  # not rewritten
    # Another test set must not be scored against the cached statistics of the first.
    other = scoring.evaluate_samples(samples, "mnist", other_real, reference_cache=cache)
    assert other == scoring.evaluate_samples(samples, "mnist", other_real)
    assert other["fid"] != uncached["fid"]
    # A damaged cache is recomputed, not trusted.
    open(cache, "wb").write(b"not an npz")
    assert scoring.evaluate_samples(samples, "mnist", real, reference_cache=cache) == uncached


def test_reference_cache_is_recomputed_for_other_evaluator_weights(tmp_path):
    """The cache is keyed by the evaluator's weights too: statistics of one evaluator's feature space
    are never read for another's."""
    from gan_jax import evaluator as evaluator_lib
    real = _random_uint8(16, 1)[..., None]
    shipped = reference.load_evaluator("mnist")
    retrained = evaluator_lib.Evaluator(
        jax.tree.map(lambda p: p * 1.5, shipped.params), "mnist",
        {**shipped.metadata, "params_sha256": "another evaluator's weights"})
    cache = str(tmp_path / "reference_mnist.npz")
    first = reference.reference_statistics(shipped, real, cache)
    other = reference.reference_statistics(retrained, real, cache)
    np.testing.assert_array_equal(other.features, retrained.features(real))
    assert not np.allclose(other.features, first.features)
    again = reference.reference_statistics(shipped, real, cache)
    np.testing.assert_array_equal(again.features, first.features)


def test_discriminator_logits_give_d_acc():
    samples, real = _random_uint8(8, 0), _random_uint8(8, 1)
    result = scoring.evaluate_samples(samples, "mnist", real,
                                       discriminator_logits=(np.ones(8), np.r_[-np.ones(6), np.ones(2)]))
    assert result["d_acc"] == (1.0 + 0.75) / 2


@pytest.mark.parametrize("array, message", [
    (np.zeros((8, 28, 27), np.uint8), "N x 28 x 28 or N x 28 x 28 x 1"),
    (np.zeros((8, 28, 28, 3), np.uint8), "N x 28 x 28 or N x 28 x 28 x 1"),
    (np.zeros((0, 28, 28), np.uint8), "at least 4"),
    (np.full((8, 28, 28), 255.0, np.float32), "must lie in [-1, 1]"),
    (np.full((8, 28, 28), np.nan, np.float32), "NaN"),
    (np.zeros((8, 28, 28), np.int64), "dtype int64"),
])
def test_unfit_images_are_refused(array, message):
    with pytest.raises(DataError) as raised:
        images.as_images(array)
    assert message in str(raised.value)


# --- Command line --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_samples_cli_scores_uint8_and_float_images_alike(workdir, idx_dir, tmp_path, python_env):
    """The real entry point on uint8 (N, 28, 28), in-process on the same images as float (N, 28, 28, 1)."""
    run = load_run(workdir)
    noise = inference.latent_noise(5, 20, run.config.latent_dim)
    pixels = pictures.to_uint8(inference.generate_images(run.spec.generator, run.generator_variables(),
                                                         noise))
    np.save(tmp_path / "uint8.npy", pixels[..., 0])
    np.save(tmp_path / "float.npy", np.asarray(batches.to_model_range(pixels)))
    result = subprocess.run(
        [PYTHON, "-m", "gan_jax.evaluate", "--samples", str(tmp_path / "uint8.npy"), "--dataset=mnist",
         f"--data_dir={idx_dir}", "--json", str(tmp_path / "uint8.json")],
        env=python_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "FID" in result.stdout and "class histogram" in result.stdout
    evaluate.evaluate(samples=str(tmp_path / "float.npy"), dataset="mnist", data_dir=idx_dir,
                      json_path=str(tmp_path / "float.json"))
    from_uint8 = json.load(open(tmp_path / "uint8.json"))
    assert from_uint8 == json.load(open(tmp_path / "float.json"))
    assert from_uint8["num_samples"] == 20 and set(scoring.METRIC_KEYS) - set(from_uint8) == {"d_acc"}


def test_workdir_cli_writes_the_json(workdir, tmp_path):
    text, paths = evaluate.evaluate(workdir=workdir, num_samples=NUM_SAMPLES,
                                    json_path=str(tmp_path / "m.json"))
    assert paths == [os.path.join(workdir, "eval", "step_0000006.json"), str(tmp_path / "m.json")]
    written = json.load(open(tmp_path / "m.json"))
    assert set(scoring.METRIC_KEYS) <= set(written) and written["step"] == 6
    assert written == json.load(open(os.path.join(workdir, "eval", "step_0000006.json")))
    assert "D accuracy" in text


def _bad_samples(tmp_path) -> dict[str, str]:
    files = {"shape": np.zeros((8, 28, 27), np.uint8), "range": np.full((8, 28, 28), 200.0, np.float32),
             "empty": np.zeros((0, 28, 28, 1), np.uint8)}
    for name, array in files.items():
        np.save(tmp_path / f"{name}.npy", array)
    (tmp_path / "garbage.npy").write_bytes(b"not numpy")
    return {name: str(tmp_path / f"{name}.npy") for name in [*files, "garbage"]}


@pytest.mark.parametrize("case, message", [
    ("shape", "got shape (8, 28, 27)"),
    ("range", "must lie in [-1, 1], got values in [200, 200]"),
    ("empty", "0 image(s), at least 4 are needed"),
    ("garbage", "cannot read"),
    ("missing", "cannot read"),
    ("no dataset", "--samples needs one of --dataset"),
    ("empty workdir", "holds no training run"),
    ("missing step", "no checkpoint at step 5"),
    ("both", "exactly one of --workdir"),
])
def test_bad_input_is_one_error_line(case, message, workdir, idx_dir, tmp_path):
    files = _bad_samples(tmp_path)
    samples = dict(samples=files.get(case, str(tmp_path / "missing.npy")), dataset="mnist",
                   data_dir=idx_dir)
    kwargs = {
        "no dataset": dict(samples=files["shape"]),
        "empty workdir": dict(workdir=str(tmp_path)),
        "missing step": dict(workdir=workdir, step=5),
        "both": dict(workdir=workdir, samples=files["shape"]),
    }.get(case, samples)
    with pytest.raises(UserError) as info:
        evaluate.evaluate(**kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.slow
def test_cli_error_exits_1_without_traceback(workdir, python_env):
    result = subprocess.run([PYTHON, "-m", "gan_jax.evaluate", f"--workdir={workdir}", "--step=5"],
                            env=python_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert "no checkpoint at step 5" in _one_error_line(result.stderr) and "Traceback" not in result.stderr


# --- Real MNIST ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mnist_test():
    data_dir = os.environ.get(MNIST_DIR_VAR)
    if not data_dir:
        pytest.skip(f"{MNIST_DIR_VAR} not set")
    return data_dir, idx.load_split(data_dir, "test")


@pytest.fixture(scope="module")
def test_set_against_itself(mnist_test, tmp_path_factory) -> dict:
    """The real MNIST test split scored against itself through the --samples command."""
    data_dir, split = mnist_test
    folder = tmp_path_factory.mktemp("mnist_self")
    np.save(folder / "test.npy", split.images)
    evaluate.evaluate(samples=str(folder / "test.npy"), dataset="mnist", data_dir=data_dir,
                      json_path=str(folder / "m.json"))
    return json.load(open(folder / "m.json"))


@pytest.mark.slow
def test_real_test_set_against_itself_is_perfect(test_set_against_itself):
    result = test_set_against_itself
    assert result["fid"] < 1e-6
    assert 9.6 < result["score"] < 10
    assert result["precision"] == result["recall"] == 1.0
    assert result["coverage_entropy"] > 2.29
    assert abs(result["kid"]) < 3 * result["kid_std"]  # unbiased: zero within its spread


@pytest.mark.slow
def test_one_class_loses_coverage_and_recall(mnist_test, test_set_against_itself):
    _, split = mnist_test
    # 500 of the 1135 ones: smaller KID subsets and k-NN sets, a fraction of the time.
    one_class = scoring.evaluate_samples(split.images[split.labels == 1][:500], "mnist", split.images)
    every_class = test_set_against_itself
    assert one_class["coverage_entropy"] < 0.1 < every_class["coverage_entropy"]
    assert one_class["recall"] < 0.2 < every_class["recall"]
    assert one_class["precision"] > 0.9  # real images, just too few kinds of them
    assert one_class["score"] < 2
    assert one_class["fid"] > 100


# --- The real data moved, offline, or another dataset's: errors in this command's flags ---------------


def _run_with_data(workdir: str, folder, **data) -> str:
    """A copy of the trained run, its config.json's `data` updated (where its data was, its source)."""
    import shutil
    copy = str(folder / "run")
    shutil.copytree(workdir, copy)
    with open(os.path.join(copy, "config.json")) as f:
        config = json.load(f)
    config["data"].update(data)
    with open(os.path.join(copy, "config.json"), "w") as f:
        json.dump(config, f)
    return copy


def _published_mnist_test_split(idx_dir: str, monkeypatch) -> None:
    """The session's small IDX files stand in for the published MNIST test split (its hash is theirs)."""
    monkeypatch.setitem(idx.CANONICAL_SHA256, ("mnist", "test"),
                        idx.content_sha256(idx.load_split(idx_dir, "test")))


def test_a_run_whose_data_moved_names_data_dir_and_is_evaluated_with_it(workdir, evaluated, idx_dir,
                                                                          tmp_path):
    gone = str(tmp_path / "data_that_moved")
    run = _run_with_data(workdir, tmp_path, dir=gone)
    with pytest.raises(UserError) as info:
        evaluate.evaluate(workdir=run, num_samples=NUM_SAMPLES)
    assert str(info.value) == (f"the run's data {gone!r} does not exist any more; if it moved, give "
                               f"--data_dir with its new place")
    _, written = evaluate.evaluate(workdir=run, data_dir=idx_dir, num_samples=NUM_SAMPLES)
    with open(written[0]) as f:  # the same evaluation as where the data was
        assert json.load(f) == {"step": 6, "num_samples": NUM_SAMPLES, "seed": 0, **evaluated[1]}


def test_a_tfds_run_offline_names_data_dir_and_reads_the_idx_files(workdir, evaluated, idx_dir, tmp_path,
                                                                    monkeypatch):
    from gan_jax.data import tfds_builders
    monkeypatch.setattr(tfds_builders.GanJaxMnist, "BASE_URL", "https://nowhere.invalid/")
    run = _run_with_data(workdir, tmp_path, source="tfds", dir=str(tmp_path / "tfds"))
    with pytest.raises(UserError) as info:
        evaluate.evaluate(workdir=run, num_samples=NUM_SAMPLES)
    assert "cannot reach nowhere.invalid:443 to download mnist" in str(info.value)
    assert str(info.value).endswith("; give --data_dir FOLDER: the dataset's IDX files, or the "
                                    "tensorflow-datasets folder it was prepared in")
    # IDX files: those the tfds builders decode (the published ones) are the run's data; others not.
    with pytest.raises(UserError, match=r"the test split is not the published mnist \(its contents "
                                         r"differ\); point --data_dir at mnist's published files"):
        evaluate.evaluate(workdir=run, data_dir=idx_dir, num_samples=NUM_SAMPLES)
    _published_mnist_test_split(idx_dir, monkeypatch)
    _, written = evaluate.evaluate(workdir=run, data_dir=idx_dir, num_samples=NUM_SAMPLES)
    with open(written[0]) as f:
        assert json.load(f) == {"step": 6, "num_samples": NUM_SAMPLES, "seed": 0, **evaluated[1]}


def test_samples_against_another_datasets_files_name_the_flags(idx_dir, tmp_path, monkeypatch):
    _published_mnist_test_split(idx_dir, monkeypatch)
    np.save(tmp_path / "samples.npy", _random_uint8(8, 0))
    with pytest.raises(UserError) as info:
        evaluate.evaluate(samples=str(tmp_path / "samples.npy"), dataset="fashion_mnist", data_dir=idx_dir)
    assert str(info.value) == (f"{idx_dir} holds mnist's test split, but --dataset=fashion_mnist: give "
                               f"--dataset=mnist or point --data_dir at fashion_mnist's files")


@pytest.mark.slow
def test_samples_offline_without_data_dir_suggest_it(tmp_path, python_env):
    """The command with tensorflow-datasets unable to download (every request goes to a proxy that
    does not answer, and tfds's folder is empty): one line that names --data_dir, nothing written."""
    import socket
    with socket.socket() as probe:  # a port nothing listens on once this closes
        probe.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{probe.getsockname()[1]}"
    env = {name: value for name, value in python_env.items() if name.lower() != "no_proxy"}
    env.update(TFDS_DATA_DIR=str(tmp_path / "tfds"), HTTPS_PROXY=proxy, https_proxy=proxy,
               HTTP_PROXY=proxy, http_proxy=proxy)
    np.save(tmp_path / "samples.npy", _random_uint8(8, 0))
    result = subprocess.run([PYTHON, "-m", "gan_jax.evaluate", "--samples", str(tmp_path / "samples.npy"),
                             "--dataset=mnist"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1 and result.stdout == ""
    line = _one_error_line(result.stderr)
    assert "to download mnist through tensorflow-datasets (no network?)" in line
    assert line.endswith("; give --data_dir FOLDER, the folder of the dataset's IDX files")
    assert sorted(os.listdir(tmp_path)) == ["samples.npy"]
