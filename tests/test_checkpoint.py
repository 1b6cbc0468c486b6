"""Checkpoint round trip of the whole state, incompatible and older checkpoints. (A save killed
half-way is tests/test_faults.py's: a real kill of a real save.)"""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from helpers import tiny_config, trees_equal
from gan_jax.training.checkpoint import Checkpointer, abstract_host_state
from gan_jax.errors import CheckpointError
from gan_jax.training.devices import to_host
from gan_jax.training.spec import GANSpec
from gan_jax.training.state import abstract_train_state, create_train_state


def host_state(gan, seed=0, step=0):
    return to_host(create_train_state(gan, seed).replace(step=jnp.int32(step)))


def abstract(gan):
    return abstract_host_state(abstract_train_state(gan))


@pytest.fixture(scope="module")
def gan(idx_dir):
    return GANSpec.from_config(tiny_config(idx_dir))


def test_round_trip_of_the_whole_state(gan, tmp_path):
    state = host_state(gan, seed=3, step=17)
    checkpointer = Checkpointer(str(tmp_path / "ckpt"), keep=2)
    checkpointer.save(state)
    checkpointer.wait()
    restored = checkpointer.restore(abstract(gan))
    checkpointer.close()
    assert int(restored.step) == 17
    # Every leaf comes back exactly, the training key's data included.
    assert trees_equal(restored, state)
    assert restored.key.dtype == np.uint32 and restored.key.shape == (2,)
    # Optimizer state keeps its optax types (restored against a target tree).
    assert type(restored.generator.opt_state[0]) is type(state.generator.opt_state[0])


def test_empty_folder_restores_nothing(gan, tmp_path):
    checkpointer = Checkpointer(str(tmp_path / "empty"), keep=1)
    assert checkpointer.restore(abstract(gan)) is None
    checkpointer.close()


def test_keeps_the_newest(gan, tmp_path):
    checkpointer = Checkpointer(str(tmp_path / "keep"), keep=2)
    for step in (1, 2, 3):
        checkpointer.save(host_state(gan, step=step))
        checkpointer.wait()
    assert checkpointer.latest_step() == 3
    assert sorted(os.listdir(checkpointer.directory)) == ["2", "3"]
    checkpointer.close()


def test_incompatible_checkpoint_is_a_clear_error(gan, idx_dir, tmp_path):
    checkpointer = Checkpointer(str(tmp_path / "other"), keep=1)
    checkpointer.save(host_state(gan))
    checkpointer.wait()
    wider = GANSpec.from_config(tiny_config(idx_dir, **{"model.g_width": 16}))
    with pytest.raises(CheckpointError, match="does not fit this config") as info:
        checkpointer.restore(abstract(wider))
    assert "\n" not in str(info.value)
    checkpointer.close()


OLD_RUN = os.path.join(os.path.dirname(__file__), "data", "run_v0.1.0")


def test_a_run_written_by_version_0_1_0_still_restores_and_resumes(idx_dir, tmp_path):
    """tests/data/run_v0.1.0 is a tiny run (4 steps) saved by gan_jax 0.1.0, before the quality
    tools: its config lacks their keys and its state has no EMA. It loads, samples and resumes."""
    import shutil

    from gan_jax import train
    from gan_jax.evaluation.restored import load_run
    from gan_jax.model.inference import generate_images
    workdir = str(tmp_path / "old")
    shutil.copytree(OLD_RUN, workdir)
    run = load_run(workdir)
    assert run.step == 4 and run.config.loss == "ns" and run.config.ema_decay == 0
    assert run.state.generator_ema is None and run.generator_name() == "raw"
    images = generate_images(run.spec.generator, run.generator_variables(), np.zeros((2, 16), np.float32))
    assert images.shape == (2, 28, 28, 1) and np.isfinite(images).all()
    # The run's config is today's tiny config with the new keys at their defaults (it trained 4 steps),
    # and the mode of several devices that was the default then (now "jit").
    config = tiny_config(idx_dir)
    differing = {k for k, v in config.items() if run.config[k] != v}
    assert differing == {"data", "num_steps", "parallel"} and run.config.num_steps == 4
    assert run.config.parallel == "pmap"
    state = train.train_and_evaluate(config, workdir)
    assert int(state.step) == 6



PRE_HASHES_RUN = os.path.join(os.path.dirname(__file__), "data", "run_pre_hashes")


def test_a_run_written_before_the_content_hashes_still_restores_and_resumes(idx_dir, tmp_path, caplog):
    """tests/data/run_pre_hashes is a tiny run (4 steps) saved at commit dd5b920, whose checkpoints
    carry the log window in their metadata but no content hashes: it loads unverified (a warning,
    not damage), samples and resumes, and its checkpoint is not set aside."""
    import json
    import shutil

    from gan_jax import train
    from gan_jax.evaluation.restored import load_run
    from gan_jax.model.inference import generate_images
    workdir = str(tmp_path / "pre_hashes")
    shutil.copytree(PRE_HASHES_RUN, workdir)
    run = load_run(workdir)
    assert any("checkpoint at step 4 in" in r.getMessage() and "restored unverified" in r.getMessage()
               for r in caplog.records)
    assert run.step == 4 and run.state.generator_ema is None
    images = generate_images(run.spec.generator, run.generator_variables(), np.zeros((2, 8), np.float32))
    assert images.shape == (2, 28, 28, 1) and np.isfinite(images).all()
    # The run's config is today's tiny config, narrower, with the new keys at their defaults.
    config = tiny_config(idx_dir, latent_dim=8, **{"model.g_width": 4, "model.d_width": 4})
    differing = {k for k, v in config.items() if run.config[k] != v}
    assert differing == {"data", "num_steps", "parallel"} and run.config.num_steps == 4
    assert run.config.parallel == "pmap"  # the default then
    state = train.train_and_evaluate(config, workdir)
    assert int(state.step) == 6
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["4", "6"]
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        assert [json.loads(line)["step"] for line in f] == [2, 4, 6]


def test_metadata_without_hashes_is_damage_unless_an_older_version_wrote_all_of_it():
    """Only keys that versions before the hashes wrote excuse their absence: anything else is damage."""
    from gan_jax.training import checkpoint
    state = {"step": np.int32(1)}
    for old_keys in (frozenset(), frozenset({"log_window"})):
        checkpoint._verify(state, None, "folder", 1, other_keys=old_keys)
    with pytest.raises(checkpoint.DamagedCheckpointError, match="content hashes are missing"):
        checkpoint._verify(state, None, "folder", 1, other_keys=frozenset({"log_window", "other"}))

@pytest.mark.slow
def test_round_trip_with_ema_and_spectral_norm(idx_dir, tmp_path):
    """The EMA and spectral normalization's vectors are part of the saved state."""
    gan = GANSpec.from_config(tiny_config(idx_dir, ema_decay=0.99, **{"model.d_norm": "spectral"}))
    state = host_state(gan, seed=1, step=3)
    assert state.generator_ema is not None and state.discriminator.batch_stats
    checkpointer = Checkpointer(str(tmp_path / "ckpt"), keep=1)
    checkpointer.save(state)
    checkpointer.wait()
    restored = checkpointer.restore(abstract(gan))
    checkpointer.close()
    assert trees_equal(restored, state)
    # A run without EMA cannot resume this state silently: the shapes say so.
    plain = GANSpec.from_config(tiny_config(idx_dir, **{"model.d_norm": "spectral"}))
    reopened = Checkpointer(str(tmp_path / "ckpt"), keep=1)
    with pytest.raises(CheckpointError, match="does not fit this config.*generator_ema"):
        reopened.restore(abstract(plain))
    reopened.close()


def test_a_reader_lists_again_when_a_training_run_rotates_a_checkpoint_away(gan, tmp_path, caplog,
                                                                            monkeypatch):
    """evaluate and sample read without the lock, so a run training in the folder may delete the
    checkpoint they are reading (keep-N rotation): that is no damage, and the newest one is read."""
    writer = Checkpointer(str(tmp_path / "ckpt"), keep=2)
    for step in (1, 2):
        writer.save(host_state(gan, step=step))
        writer.wait()
    reader = Checkpointer(str(tmp_path / "ckpt"), keep=2)
    original = Checkpointer.restore_at

    def restore_at_while_training_goes_on(self, abstract_state, step):
        if step == 2 and not os.path.exists(os.path.join(writer.directory, "4")):
            for new_step in (3, 4):  # the trainer saves twice: 1 and 2 rotate away
                writer.save(host_state(gan, step=new_step))
                writer.wait()
        return original(self, abstract_state, step)

    monkeypatch.setattr(Checkpointer, "restore_at", restore_at_while_training_goes_on)
    restored = reader.restore_newest(abstract(gan))
    assert int(restored.state.step) == 4
    assert "skipping" not in caplog.text  # nothing was called damaged
    assert sorted(os.listdir(writer.directory)) == ["3", "4"]  # nor set aside
    reader.close()
    writer.close()


def test_opening_the_folder_lists_again_when_a_training_run_rotates_a_checkpoint_away(gan, tmp_path,
                                                                                     monkeypatch):
    """Opening the folder reads every checkpoint's metadata; one that rotates away between orbax's
    listing and its read is no error either (seen in CI: evaluate/sample beside a training run)."""
    writer = Checkpointer(str(tmp_path / "ckpt"), keep=2)
    for step in (1, 2):
        writer.save(host_state(gan, step=step))
        writer.wait()
    # Stage the race where it happens: after orbax has listed the step folders, before it reads them.
    writers_format = writer._manager._step_name_format
    original = type(writers_format).find_all
    rotated = []

    def find_all_while_training_goes_on(self, base_path):
        listed = list(original(self, base_path))
        if not rotated and self is not writers_format:
            rotated.append(sorted(m.step for m in listed))
            for new_step in (3, 4):  # the trainer saves twice: 1 and 2 rotate away
                writer.save(host_state(gan, step=new_step))
                writer.wait()
        return iter(listed)

    monkeypatch.setattr(type(writers_format), "find_all", find_all_while_training_goes_on)
    reader = Checkpointer(str(tmp_path / "ckpt"), keep=2)
    assert rotated[0] == [1, 2]  # the race was staged
    assert reader.all_steps() == [3, 4]
    assert int(reader.restore_newest(abstract(gan)).state.step) == 4
    reader.close()
    writer.close()


def _saved_steps(gan, folder, steps=(1, 2)) -> str:
    checkpointer = Checkpointer(folder, keep=5)
    for step in steps:
        checkpointer.save(host_state(gan, seed=step, step=step))
        checkpointer.wait()
    checkpointer.close()
    return folder


def _overwrite(path: str, where: str) -> None:
    """1,000 random bytes at the start, the middle or the end of a file (or all of it, if smaller)."""
    size = os.path.getsize(path)
    count = min(1000, size)
    offset = {"start": 0, "middle": (size - count) // 2, "end": size - count}[where]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(np.random.default_rng(7).integers(0, 256, count, dtype=np.uint8).tobytes())


def _largest_file(folder: str) -> str:
    paths = [os.path.join(root, name) for root, _, names in os.walk(folder) for name in names]
    return max(paths, key=os.path.getsize)


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_damage_anywhere_in_a_data_file_never_restores_what_was_not_saved(gan, tmp_path, where):
    """Inside a data file, past the part tensorstore's framing checks, only the content hashes see
    the damage: the checkpoint is skipped (and set aside by training), never restored.

    The one exception is harmless: OCDBT can leave bytes that no array reads at a data file's end
    (where depends on how the asynchronous writes were batched, so the layout differs from save to
    save); damage there leaves the restored state exactly what was saved, which the hashes confirm.
    Damage at the start or in the middle of the largest file always lands in array data.
    """
    folder = _saved_steps(gan, str(tmp_path / "ckpt"))
    _overwrite(_largest_file(os.path.join(folder, "2")), where)
    checkpointer = Checkpointer(folder, keep=5)
    restored = checkpointer.restore_newest(abstract(gan), set_aside=True)
    checkpointer.close()
    if restored.step == 2:  # the damage missed every array: only acceptable where nothing is read
        assert where == "end" and trees_equal(restored.state, host_state(gan, seed=2, step=2))
        assert sorted(os.listdir(folder)) == ["1", "2"]
    else:
        assert restored.step == 1 and trees_equal(restored.state, host_state(gan, seed=1, step=1))
        assert sorted(os.listdir(folder)) == ["1", "2.damaged"]


@pytest.mark.parametrize("name", ["_CHECKPOINT_METADATA", os.path.join("default", "_METADATA")])
def test_damaged_metadata_is_found_too(gan, tmp_path, name):
    folder = _saved_steps(gan, str(tmp_path / "ckpt"))
    _overwrite(os.path.join(folder, "2", name), "middle")
    checkpointer = Checkpointer(folder, keep=5)
    with pytest.raises(CheckpointError, match="checkpoint at step 2 .* is damaged"):
        checkpointer.restore(abstract(gan), step=2)
    assert checkpointer.restore_newest(abstract(gan)).step == 1
    checkpointer.close()


def test_an_array_changed_by_hand_differs_from_its_hash(gan, tmp_path):
    """A checkpoint whose every file reads but one array is not what was saved: the hash names it."""
    from gan_jax.training import checkpoint
    state = host_state(gan, seed=1, step=1)
    saved = checkpoint.content_hashes(checkpoint._on_disk(state))
    changed = state.replace(step=np.int32(2))
    with pytest.raises(checkpoint.DamagedCheckpointError, match="1 array.* differ .*e.g. step"):
        checkpoint._verify(checkpoint._on_disk(changed), saved, "folder", 1)
    checkpoint._verify(checkpoint._on_disk(state), saved, "folder", 1)  # the same arrays pass
