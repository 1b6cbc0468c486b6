"""The one place that turns the pure per-device step into the compiled step the loop calls.

On one device: `jax.jit` with the state donated, so a training step is one dispatch and updates the
state's buffers in place.
"""

from __future__ import annotations

import functools
from typing import Callable

import jax

from gan_jax import steps
from gan_jax.state import GAN, TrainState

StepFn = Callable[[TrainState, jax.Array], tuple[TrainState, steps.Metrics]]


def compile_train_step(gan: GAN) -> StepFn:
    """`state, metrics = step(state, images)`; the input state is donated (do not reuse it)."""
    return jax.jit(functools.partial(steps.train_step, gan=gan), donate_argnums=0)


def compile_generate(gan: GAN) -> Callable:
    """`images = generate(generator_state, noise)`, G in inference mode."""
    return jax.jit(functools.partial(steps.generate, gan))
