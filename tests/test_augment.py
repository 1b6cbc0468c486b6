"""DiffAugment (gan_jax.model.augment): what each transformation does, that gradients pass through it,
that its draws are for the global batch (so N devices augment as one does), and that the steps show
D only augmented images when a policy is set."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from helpers import tiny_config
from gan_jax.model import augment
from gan_jax.training import steps
from gan_jax.training.spec import GANSpec
from gan_jax.training.state import create_train_state

BATCH = 16


def _dot_images():
    """One bright pixel at the centre of each otherwise zero 28x28 image."""
    images = np.zeros((BATCH, 28, 28, 1), np.float32)
    images[:, 14, 14, 0] = 1.0
    return jnp.asarray(images)


def test_translation_moves_each_image_by_at_most_an_eighth_and_fills_with_zero():
    moved = np.asarray(augment.augment(_dot_images(), jax.random.key(0), ("translation",)))
    shifts = set()
    for image in moved[..., 0]:
        (y,), (x,) = np.nonzero(image == 1.0)[0][:1], np.nonzero(image == 1.0)[1][:1]
        assert np.count_nonzero(image) == 1  # the pixel moved, nothing else appeared
        assert abs(y - 14) <= 4 and abs(x - 14) <= 4  # int(28 * 0.125 + 0.5) = 4
        shifts.add((y - 14, x - 14))
    assert len(shifts) > 1  # each image draws its own shift


def test_cutout_zeroes_one_square_of_half_the_size():
    cut = np.asarray(augment.augment(jnp.ones((BATCH, 28, 28, 1)), jax.random.key(1), ("cutout",)))
    for image in cut[..., 0]:
        rows, cols = np.nonzero(image == 0)
        assert 7 * 7 <= len(rows) <= 14 * 14  # a 14x14 square, clipped by at most half each way
        height, width = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert len(rows) == height * width and height <= 14 and width <= 14  # one rectangle


def test_color_shifts_brightness_and_keeps_constant_images_constant():
    flat = jnp.full((BATCH, 28, 28, 1), 0.25)
    out = np.asarray(augment.augment(flat, jax.random.key(2), ("color",)))
    per_image = out.reshape(BATCH, -1)
    assert np.allclose(per_image, per_image[:, :1])  # contrast around the mean keeps it flat
    assert np.all(np.abs(per_image[:, 0] - 0.25) <= 0.5) and np.std(per_image[:, 0]) > 0
    rgb = augment.augment(jax.random.uniform(jax.random.key(3), (BATCH, 8, 8, 3)), jax.random.key(4),
                          ("color",))
    assert rgb.shape == (BATCH, 8, 8, 3) and np.isfinite(np.asarray(rgb)).all()


def test_an_empty_policy_changes_nothing_and_a_policy_is_a_function_of_its_key():
    images = jax.random.uniform(jax.random.key(5), (BATCH, 28, 28, 1), minval=-1, maxval=1)
    assert augment.augment(images, jax.random.key(0), ()) is images
    policy = ("color", "translation", "cutout")
    a, b = (augment.augment(images, jax.random.key(7), policy) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, augment.augment(images, jax.random.key(8), policy))


def test_gradients_flow_through_the_augmentation_to_the_images():
    """G learns through T: d/dx sum(T(x)) is the cutout's mask moved back by the translation."""
    images = jax.random.uniform(jax.random.key(9), (BATCH, 28, 28, 1))
    grad = jax.grad(lambda x: augment.augment(x, jax.random.key(3), ("translation", "cutout")).sum())(
        images)
    assert np.isfinite(np.asarray(grad)).all() and set(np.unique(np.asarray(grad))) <= {0.0, 1.0}
    assert 0 < float(grad.mean()) < 1


def test_draws_are_for_the_global_batch_so_a_devices_slice_is_augmented_as_one_device_does():
    images = jax.random.uniform(jax.random.key(10), (BATCH, 28, 28, 1))
    policy, key = ("color", "translation", "cutout"), jax.random.key(11)
    whole = augment.augment(images, key, policy)
    second_half = augment.augment(images[BATCH // 2:], key, policy, batch=BATCH,
                                  local=lambda draws: draws[BATCH // 2:])
    np.testing.assert_allclose(second_half, whole[BATCH // 2:], atol=1e-6)


@pytest.fixture(scope="module")
def augmented(idx_dir):
    return GANSpec.from_config(tiny_config(idx_dir, augment="translation,cutout"))


def test_d_sees_augmented_real_and_fake_images_and_g_augmented_fakes(augmented, idx_dir):
    """The step with a policy equals the step whose D is fed T(x) by hand."""
    plain = GANSpec.from_config(tiny_config(idx_dir))
    state = create_train_state(plain, seed=0)
    real = jax.random.uniform(jax.random.key(12), (8, 28, 28, 1), minval=-1, maxval=1)
    key = jax.random.key(13)
    _, with_policy = jax.jit(functools.partial(steps.d_step, gan=augmented))(state, real, key)
    _, without = jax.jit(functools.partial(steps.d_step, gan=plain))(state, real, key)
    assert float(with_policy["d_loss"]) != float(without["d_loss"])
    # By hand: D's real batch through T with the step's real-image key (3): the real side agrees.
    seen_real = augment.augment(real, jax.random.fold_in(key, 3), augmented.augment, 8)
    logits, _ = augmented.discriminator.apply(state.discriminator.variables(), seen_real, train=True,
                                              mutable=["batch_stats"])
    assert float(with_policy["d_real"]) == pytest.approx(float(jax.nn.sigmoid(logits).mean()), rel=1e-5)
    _, g_with = jax.jit(functools.partial(steps.g_step, gan=augmented))(state, real, key)
    _, g_without = jax.jit(functools.partial(steps.g_step, gan=plain))(state, real, key)
    assert float(g_with["g_loss"]) != float(g_without["g_loss"])
