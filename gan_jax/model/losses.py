"""The GAN objectives: each loss as a pair of pure functions of D's logits, and the gradient penalties.

`config.loss` picks one of LOSSES; `discriminator_loss(kind, ...)` and `generator_loss(kind, ...)` are
what the steps call. D's raw output is called a logit throughout: for "ns" it is the logit of D's
probability that the image is real, for the others an unbounded score. To change the objective, change
this file; the steps only call it.

| kind | D minimizes | G minimizes | paper |
| --- | --- | --- | --- |
| ns | (BCE(D(x), 1) + BCE(D(G(z)), 0)) / 2 | BCE(D(G(z)), 1) | Goodfellow et al. 2014 |
| hinge | E relu(1 - D(x)) + E relu(1 + D(G(z))) | -E D(G(z)) | Lim & Ye 2017; Miyato et al. 2018 |
| ls | (E (D(x) - 1)^2 + E D(G(z))^2) / 2 | E (D(G(z)) - 1)^2 / 2 | Mao et al. 2017 |
| wgan_gp | E D(G(z)) - E D(x) + gp_weight * GP | -E D(G(z)) | Gulrajani et al. 2017 |

"ns" halves D's loss as the tutorial does (the mean of its two cross-entropies); Adam's updates do not
depend on a constant factor of the loss, so the other losses keep their papers' scales.

The penalties act on D's gradient with respect to its input image, one gradient per sample, so they
need a D whose output for one image does not depend on the others in the batch (no BatchNorm; see
`config.validate`):
- `gradient_penalty` (WGAN-GP): E (||grad_x D(x_hat)|| - 1)^2 on random interpolates x_hat between real
  and generated images (Gulrajani et al. 2017, "Improved Training of Wasserstein GANs").
- `r1_penalty`: E ||grad_x D(x)||^2 on real images (Mescheder et al. 2018, "Which Training Methods for
  GANs do actually Converge?"); the step weights it by gamma / 2.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax

from gan_jax.config import LOSSES

# D's output on a batch of images -> (batch,) logits; the penalties differentiate it.
Critic = Callable[[jax.Array], jax.Array]


def discriminator_loss(kind: str, real_logits: jax.Array, fake_logits: jax.Array) -> jax.Array:
    """D's loss of the given kind (without penalties) on its logits for real and generated images.

    Args:
      kind: one of LOSSES.
      real_logits: D's outputs on real images, (batch,).
      fake_logits: D's outputs on generated images, (batch,).

    Returns:
      The scalar loss.
    """
    if kind == "ns":
        real = optax.sigmoid_binary_cross_entropy(real_logits, jnp.ones_like(real_logits)).mean()
        fake = optax.sigmoid_binary_cross_entropy(fake_logits, jnp.zeros_like(fake_logits)).mean()
        return (real + fake) / 2
    if kind == "hinge":
        return jax.nn.relu(1 - real_logits).mean() + jax.nn.relu(1 + fake_logits).mean()
    if kind == "ls":
        return (jnp.square(real_logits - 1).mean() + jnp.square(fake_logits).mean()) / 2
    if kind == "wgan_gp":
        return fake_logits.mean() - real_logits.mean()
    raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")


def generator_loss(kind: str, fake_logits: jax.Array) -> jax.Array:
    """G's loss of the given kind on D's logits for generated images.

    "ns" is the non-saturating loss: G maximizes log D(G(z)) instead of minimizing log(1 - D(G(z))).
    """
    if kind == "ns":
        return optax.sigmoid_binary_cross_entropy(fake_logits, jnp.ones_like(fake_logits)).mean()
    if kind in ("hinge", "wgan_gp"):
        return -fake_logits.mean()
    if kind == "ls":
        return jnp.square(fake_logits - 1).mean() / 2
    raise ValueError(f"unknown loss {kind!r}; expected one of {LOSSES}")


def discriminator_output(kind: str, logits: jax.Array) -> jax.Array:
    """What the metrics d_real and d_fake average: D's probability for "ns", its raw score otherwise."""
    return jax.nn.sigmoid(logits) if kind == "ns" else logits


def _input_gradient_norms_squared(critic: Critic, images: jax.Array) -> jax.Array:
    """||grad_x D(x_i)||^2 for each image i, (batch,).

    One backward pass of the summed logits gives every per-sample gradient, because each logit
    depends on its own image only (the caller's D has no batch statistics).
    """
    grads = jax.grad(lambda x: critic(x).sum())(images)
    return jnp.square(grads).reshape(grads.shape[0], -1).sum(axis=1)


def gradient_penalty(critic: Critic, real: jax.Array, fake: jax.Array, weights: jax.Array) -> jax.Array:
    """WGAN-GP's penalty: E (||grad_x D(x_hat)|| - 1)^2 with x_hat = e * real + (1 - e) * fake.

    Args:
      critic: D as a function of images.
      real, fake: equally many real and generated images, (batch, height, width, channels).
      weights: the interpolation weight e of each pair, (batch,), drawn from U[0, 1] by the caller
        (so that it can draw them for the global batch and keep its own slice).

    Returns:
      The scalar penalty (unweighted).
    """
    weights = weights.reshape((-1,) + (1,) * (real.ndim - 1)).astype(real.dtype)
    interpolates = weights * real + (1 - weights) * fake
    # sqrt of a sum of squares: its gradient at exactly 0 would be NaN; a tiny floor keeps it finite.
    norms = jnp.sqrt(_input_gradient_norms_squared(critic, interpolates) + 1e-12)
    return jnp.square(norms - 1).mean()


def r1_penalty(critic: Critic, real: jax.Array) -> jax.Array:
    """R1: E ||grad_x D(x)||^2 on real images (unweighted; the step multiplies by gamma / 2)."""
    return _input_gradient_norms_squared(critic, real).mean()


def auxiliary_classifier_loss(class_logits: jax.Array, labels: jax.Array) -> jax.Array:
    """ACGAN's auxiliary loss (Odena et al. 2017): the cross-entropy of D's class prediction against
    the label, mean over the batch. D minimizes it on real and generated images, G on generated ones.
    """
    return optax.softmax_cross_entropy_with_integer_labels(class_logits, labels).mean()
