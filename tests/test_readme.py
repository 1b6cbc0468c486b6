"""The README's "Use it from Python" example, run as written on the tests' tiny data.

The block after `<!-- readme:python -->` is read from README.md and run in this process with a few
lines swapped, each of which must be there exactly once: the data folder becomes the session's small
IDX dataset, the workdir a temporary folder, the run is shrunk as `helpers.tiny_config` shrinks it,
and the evaluation draws 64 samples. Everything else (imports, calls, names) runs unchanged, so an
example that drifts from the package fails here.
"""

from __future__ import annotations

import math
import os
import re
import sys

import numpy as np
import pytest

from helpers import REPO

MARKER = "<!-- readme:python -->"
NUM_STEPS = 6  # checkpoints at the end only: step 6
NUM_SAMPLES = 64  # enough for every metric (see tests/test_evaluate.py)


def readme_python_block() -> str:
    """The first ```python block after MARKER in README.md."""
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    assert readme.count(MARKER) == 1, f"README.md must mark its Python example once with {MARKER}"
    match = re.search(r"```python\n(.*?)\n```", readme[readme.index(MARKER):], re.DOTALL)
    assert match, f"no ```python block after {MARKER}"
    return match.group(1)


def swap(code: str, pattern: str, replacement: str) -> str:
    """`code` with the one line matching `pattern` (a regex for a whole line) replaced."""
    lines = code.split("\n")
    found = [i for i, line in enumerate(lines) if re.fullmatch(pattern, line)]
    assert len(found) == 1, f"the README's example must have one line matching {pattern!r}"
    lines[found[0]:found[0] + 1] = replacement.split("\n")
    return "\n".join(lines)


def runnable_example(data_dir: str, workdir: str) -> str:
    code = readme_python_block()
    code = swap(code, r'config\.data\.dir = "[^"]*".*', f"config.data.dir = {data_dir!r}\n"
                "config.data.check_dataset = False  # the tests' random blobs are not MNIST")
    code = swap(code, r"config\.num_steps = \d+.*", "\n".join([
        f"config.num_steps = {NUM_STEPS}",
        # helpers.tiny_config's narrow networks and small batch: a few seconds to compile.
        "config.batch_size = 8", "config.latent_dim = 16", "config.model.g_width = 8",
        "config.model.d_width = 8", "config.num_devices = 1"]))
    code = swap(code, r'workdir = "[^"]*".*', f"workdir = {workdir!r}")
    return swap(code, r"(step, metrics, path = evaluate_checkpoint\(workdir, num_samples=)\d+(\).*)",
                f"step, metrics, path = evaluate_checkpoint(workdir, num_samples={NUM_SAMPLES})")


@pytest.fixture
def restored_logging():
    """Puts back what the example's `setup_logging()` changes for the whole process."""
    from absl import logging as absl_logging

    from gan_jax.log import logger
    saved = (list(logger.handlers), logger.level, logger.propagate, sys.unraisablehook,
             absl_logging.get_verbosity())
    yield
    logger.handlers[:], logger.level, logger.propagate, sys.unraisablehook = saved[:4]
    absl_logging.set_verbosity(saved[4])


def test_the_readme_python_example_trains_loads_samples_and_evaluates(idx_dir, tmp_path, capsys,
                                                                      monkeypatch, restored_logging):
    monkeypatch.chdir(REPO)  # the example names its config file from the repository's root
    workdir = str(tmp_path / "from_python")
    namespace = {"__name__": "readme_example"}
    exec(compile(runnable_example(idx_dir, workdir), "README.md (Use it from Python)", "exec"), namespace)
    out, err = capsys.readouterr()

    # Trained and checkpointed as the command does, with its log lines (stderr is not a terminal here,
    # so one line per logged step instead of the progress bar).
    assert os.path.isdir(os.path.join(workdir, "checkpoints", str(NUM_STEPS)))
    assert f"gan_jax: step {NUM_STEPS}" in err, err
    # Loaded back and sampled.
    assert namespace["run"].step == NUM_STEPS
    images = namespace["images"]
    assert images.shape == (64, 28, 28, 1) and images.dtype == np.float32
    assert np.all(np.isfinite(images)) and images.min() >= -1 and images.max() <= 1
    assert os.path.getsize(os.path.join(workdir, "my_grid.png")) > 0
    # Evaluated: finite metrics, written where the README says, and the printed line.
    step, metrics, path = namespace["step"], namespace["metrics"], namespace["path"]
    assert step == NUM_STEPS
    assert path == os.path.join(workdir, "eval", f"step_{NUM_STEPS:07d}.json") and os.path.isfile(path)
    assert all(math.isfinite(metrics[key]) for key in ("fid", "kid", "score", "precision", "recall"))
    assert out.startswith(f"step {NUM_STEPS}: FID "), out
