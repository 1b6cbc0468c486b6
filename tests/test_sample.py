"""Tests of `python -m gan_jax.sample`: grid PNG, .npy, latent interpolation, determinism, errors.

Samples come from the tiny run tests/test_evaluate.py evaluates (conftest's `trained_workdir`), trained
once per session.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
from PIL import Image

from helpers import PYTHON
from gan_jax import sample
from gan_jax.errors import UserError
from gan_jax.evaluation import sampling
from gan_jax.evaluation.restored import load_run
from gan_jax.model import inference
from gan_jax.reporting import pictures


@pytest.fixture(scope="module")
def workdir(trained_workdir) -> str:
    return trained_workdir


@pytest.mark.parametrize("num, shape", [(1, (1, 1)), (10, (3, 4)), (64, (8, 8)), (65, (8, 9))])
def test_grid_shape_is_near_square(num, shape):
    assert sampling.grid_shape(num) == shape


def test_slerp_ends_exactly_at_its_endpoints_and_keeps_the_norm():
    z0, z1 = np.array([3.0, 0.0, 0.0]), np.array([0.0, 3.0, 0.0])
    path = sampling.slerp(z0, z1, np.linspace(0, 1, 5))
    np.testing.assert_array_equal(path[0], z0)
    np.testing.assert_array_equal(path[-1], z1)
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), 3.0, rtol=1e-6)
    np.testing.assert_allclose(path[2], [3 / np.sqrt(2), 3 / np.sqrt(2), 0], rtol=1e-6)
    np.testing.assert_array_equal(sampling.slerp(z0, z0, np.array([0.5]))[0], z0)  # parallel: no 0/0


@pytest.mark.slow
def test_cli_writes_a_grid_and_an_npy(workdir, tmp_path, python_env):
    result = subprocess.run(
        [PYTHON, "-m", "gan_jax.sample", f"--workdir={workdir}", "--num=10", f"--out={tmp_path / 'g.png'}",
         f"--npy={tmp_path / 'g.npy'}", "--seed=3"],
        env=python_env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    grid = Image.open(tmp_path / "g.png")
    assert grid.format == "PNG" and grid.size == (4 * 28, 3 * 28)  # (width, height): 3 rows of 4
    images = np.load(tmp_path / "g.npy")
    assert images.shape == (10, 28, 28, 1) and images.dtype == np.uint8
    # The same seed in-process gives the same bytes; another seed other images.
    sample.sample(workdir=workdir, num=10, seed=3, out=str(tmp_path / "again.png"),
                      npy=str(tmp_path / "again.npy"))
    assert (tmp_path / "again.png").read_bytes() == (tmp_path / "g.png").read_bytes()
    assert (tmp_path / "again.npy").read_bytes() == (tmp_path / "g.npy").read_bytes()
    sample.sample(workdir=workdir, num=10, seed=4, npy=str(tmp_path / "other.npy"))
    assert not np.array_equal(np.load(tmp_path / "other.npy"), images)


def test_samples_come_from_the_ema_generator_unless_noema(workdir, tmp_path):
    sample.sample(workdir=workdir, num=8, npy=str(tmp_path / "ema.npy"))
    sample.sample(workdir=workdir, num=8, npy=str(tmp_path / "raw.npy"), use_ema=False)
    run = load_run(workdir)
    noise = inference.latent_noise(0, 8, run.config.latent_dim)
    for name, variables in (("ema", dict(run.state.generator_ema)), ("raw", run.state.generator.variables())):
        expected = pictures.to_uint8(inference.generate_images(run.spec.generator, variables, noise))
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"), expected)
    assert not np.array_equal(np.load(tmp_path / "ema.npy"), np.load(tmp_path / "raw.npy"))


def test_interpolation_strip_runs_from_seed_to_seed_plus_one(workdir, tmp_path):
    sample.sample(workdir=workdir, interpolate=True, seed=7, out=str(tmp_path / "strip.png"),
                      npy=str(tmp_path / "strip.npy"))
    assert Image.open(tmp_path / "strip.png").size == (10 * 28, 28)  # one row of 10
    strip = np.load(tmp_path / "strip.npy")
    assert strip.shape == (10, 28, 28, 1)
    for seed, end in ((7, strip[0]), (8, strip[-1])):
        sample.sample(workdir=workdir, num=1, seed=seed, npy=str(tmp_path / f"{seed}.npy"))
        # Same latent, batch of 10 vs of 1: equal up to float rounding, hence one grey level.
        np.testing.assert_allclose(np.load(tmp_path / f"{seed}.npy")[0], end, atol=1, rtol=0)


@pytest.mark.parametrize("kwargs, message", [
    (dict(), "nothing to write"),
    (dict(out="x.png", num=0), "--num=0"),
    (dict(out="x.png", num=1, interpolate=True), "at least 2"),
    (dict(out="x.png", step=5), "no checkpoint at step 5"),
])
def test_bad_input_is_one_error_line(kwargs, message, workdir, tmp_path):
    if "out" in kwargs:
        kwargs["out"] = str(tmp_path / kwargs["out"])
    with pytest.raises(UserError) as info:
        sample.sample(workdir=workdir, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "x.png").exists()


def test_empty_workdir_is_one_error_line(tmp_path):
    with pytest.raises(UserError) as info:
        sample.sample(workdir=str(tmp_path), out=str(tmp_path / "x.png"))
    assert str(info.value) == f"{tmp_path} holds no training run (no config.json)"


def test_the_picture_is_written_in_the_format_its_name_says(workdir, tmp_path):
    sample.sample(workdir=workdir, num=4, out=str(tmp_path / "grid.jpg"))
    sample.sample(workdir=workdir, num=4, out=str(tmp_path / "grid.PNG"))
    assert Image.open(tmp_path / "grid.jpg").format == "JPEG"
    assert Image.open(tmp_path / "grid.PNG").format == "PNG"
    with pytest.raises(UserError, match=r"cannot write a picture as \.gif; name it \.png or \.jpg"):
        sample.sample(workdir=workdir, num=4, out=str(tmp_path / "grid.gif"))
    assert not (tmp_path / "grid.gif").exists()
