"""A trained run read back from its folder: its config, models and state at a checkpoint, and its
networks applied to many inputs in batches. What `gan_jax.evaluate` and `gan_jax.sample` start from;
reading never changes the folder.
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, NamedTuple

import jax
import ml_collections
import numpy as np

from gan_jax import config as config_lib
from gan_jax import input_pipeline
from gan_jax import workdir as workdir_lib
from gan_jax.checkpoint import Checkpointer, abstract_host_state
from gan_jax.errors import CheckpointError
from gan_jax.parallel import HostState
from gan_jax.state import GAN, NetworkState, abstract_train_state

BATCH_SIZE = 1_000  # images per compiled call of G or D: bounds memory


def _batched(fn: Callable[..., Any], inputs: np.ndarray, labels: np.ndarray | None = None,
             batch_size: int = BATCH_SIZE) -> np.ndarray:
    """`fn(inputs, labels)` over `batch_size` rows at a time (labels None for unconditional GANs).

    The last batch is padded to full size, so one compilation serves every count; each output row
    depends only on its input row (everything here runs in inference mode), so padding changes nothing.
    """
    def padded(array, start, batch):
        chunk = array[start:start + batch]
        if len(chunk) < batch:
            chunk = np.concatenate([chunk, np.zeros((batch - len(chunk), *chunk.shape[1:]), chunk.dtype)])
        return chunk

    n = inputs.shape[0]
    batch = min(batch_size, n)
    outputs = []
    for start in range(0, n, batch):
        chunk_labels = None if labels is None else padded(labels, start, batch)
        output = fn(padded(inputs, start, batch), chunk_labels)
        outputs.append(np.asarray(output)[:min(batch, n - start)])
    return np.concatenate(outputs)


# Jitted with the flax module as a static argument: modules compare equal field by field, so every
# evaluation of the same architecture reuses one compilation.
@functools.partial(jax.jit, static_argnums=0)
def _generate(generator, variables, noise, labels):
    return generator.apply(variables, noise, train=False, labels=labels)


@functools.partial(jax.jit, static_argnums=0)
def _discriminate(discriminator, variables, images, labels):
    if images.dtype == np.uint8:  # decided when tracing: one compilation per input dtype
        images = input_pipeline.to_model_range(images)
    output = discriminator.apply(variables, images, train=False, labels=labels)
    return output[0] if isinstance(output, tuple) else output  # an ACGAN's D: (logits, classes)


def latent_noise(seed: int, num: int, latent_dim: int) -> np.ndarray:
    """z ~ N(0, 1), (num, latent_dim) float32, a pure function of the seed (and of num)."""
    return np.asarray(jax.random.normal(jax.random.key(seed), (num, latent_dim)))


def balanced_labels(num: int, num_classes: int) -> np.ndarray:
    """0, 1, ..., num_classes - 1, 0, 1, ...: `num` labels, every class as often as can be (int32)."""
    return (np.arange(num) % num_classes).astype(np.int32)


def generate_images(gan: GAN, variables: dict[str, Any], noise: np.ndarray,
                    labels: np.ndarray | None = None) -> np.ndarray:
    """G in inference mode (BatchNorm running statistics) on `noise`: float32 (N, 28, 28, 1) in [-1, 1].

    `variables` are G's {"params", "batch_stats"}, e.g. `state.sampling_variables()`; `labels` (N,)
    the classes asked for, for a conditional G.
    """
    variables = jax.device_put(variables)  # once, not once per batch
    return _batched(lambda z, y: _generate(gan.generator, variables, z, y), noise, labels)


def discriminate(gan: GAN, discriminator: NetworkState, images: np.ndarray,
                 labels: np.ndarray | None = None) -> np.ndarray:
    """D's logits in inference mode, (N,) float32, for uint8 images or floats in [-1, 1] (and their
    labels, for a conditional D)."""
    variables = jax.device_put(discriminator.variables())
    return _batched(lambda x, y: _discriminate(gan.discriminator, variables, x, y), images, labels)


class RestoredRun(NamedTuple):
    """A training run restored from its workdir: its config, models and state at one checkpoint."""

    workdir: str
    config: ml_collections.ConfigDict
    gan: GAN
    state: HostState
    step: int

    def generator_variables(self, use_ema: bool = True) -> dict[str, Any]:
        """G's variables to sample with: the EMA generator's when the run keeps one and `use_ema`."""
        return self.state.sampling_variables(use_ema)

    def generator_name(self, use_ema: bool = True) -> str:
        """"ema" or "raw": which generator `generator_variables(use_ema)` gives."""
        return "ema" if use_ema and self.state.generator_ema is not None else "raw"


def load_config(workdir: str) -> ml_collections.ConfigDict:
    """The resolved config a run saved in `workdir/config.json`, validated.

    Raises:
      UserError: no such workdir, no config.json in it (no run), or an unreadable or invalid one.
    """
    if not os.path.isdir(workdir):
        raise CheckpointError(f"workdir {workdir} does not exist")
    config = workdir_lib.read_config(workdir)
    if config is None:
        raise CheckpointError(f"{workdir} holds no training run (no config.json)")
    config_lib.validate(config)
    return config


def load_run(workdir: str, step: int | None = None) -> RestoredRun:
    """Restores a run's config and the checkpoint at `step` (default: the latest).

    Args:
      workdir: the run's folder, holding config.json and checkpoints/.
      step: which checkpoint; None for the newest that restores (damaged ones are skipped with a
        warning and left as they are: reading never changes a run's folder).

    Returns:
      The `RestoredRun`.

    Raises:
      UserError: no run, no checkpoint (at that step), a damaged checkpoint at that step, or a
        checkpoint that does not fit the config.
    """
    workdir = os.path.abspath(workdir)
    config = load_config(workdir)
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    # Checked first: the checkpointer would create the folder.
    if not os.path.isdir(checkpoint_dir):
        raise CheckpointError(f"{workdir} holds no checkpoints")
    gan = GAN.from_config(config)
    checkpointer = Checkpointer(checkpoint_dir, config.keep_checkpoints)
    try:
        state = checkpointer.restore(abstract_host_state(abstract_train_state(gan)), step)
        if state is None:
            raise CheckpointError(f"{checkpoint_dir} holds no checkpoint")
    finally:
        checkpointer.close()
    return RestoredRun(workdir, config, gan, state, int(state.step))
