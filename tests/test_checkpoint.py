"""Checkpoint round trip of the whole state, incompatible checkpoints, and half-written saves."""

import os

import jax.numpy as jnp
import numpy as np
import pytest

from conftest import tiny_config, trees_equal
from gan_jax.checkpoint import Checkpointer, abstract_host_state
from gan_jax.errors import CheckpointError
from gan_jax.parallel import to_host
from gan_jax.state import GAN, abstract_train_state, create_train_state


def host_state(gan, seed=0, step=0):
    return to_host(create_train_state(gan, seed).replace(step=jnp.int32(step)))


def abstract(gan):
    return abstract_host_state(abstract_train_state(gan))


@pytest.fixture(scope="module")
def gan(idx_dir):
    return GAN.from_config(tiny_config(idx_dir))


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
    wider = GAN.from_config(tiny_config(idx_dir, **{"model.g_width": 16}))
    with pytest.raises(CheckpointError, match="does not fit this config") as info:
        checkpointer.restore(abstract(wider))
    assert "\n" not in str(info.value)
    checkpointer.close()


def test_half_written_save_is_never_picked_up(gan, tmp_path):
    """Orbax writes into a temporary folder and renames it when done; a crash leaves only the tmp."""
    directory = tmp_path / "crash"
    checkpointer = Checkpointer(str(directory), keep=3)
    checkpointer.save(host_state(gan, step=5))
    checkpointer.close()
    # What a process killed mid-save leaves behind: an unfinished temporary folder for step 9.
    partial = directory / "9.orbax-checkpoint-tmp-1234567"
    (partial / "default").mkdir(parents=True)
    (partial / "default" / "_METADATA").write_text("{")
    reopened = Checkpointer(str(directory), keep=3)
    assert reopened.latest_step() == 5
    assert int(reopened.restore(abstract(gan)).step) == 5
    reopened.close()
