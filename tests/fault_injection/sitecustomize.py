"""Faults the fault tests inject into a real `python -m gan_jax.train` process (tests/test_faults.py).

Python imports `sitecustomize` at start-up from the path, so a subprocess whose PYTHONPATH starts with
this folder runs this first. GAN_JAX_TEST_FAULT picks the fault, for faults no config can cause on
purpose:
  nan_loss_at_step=K   G's loss of step K is NaN;
  inf_loss_at_step=K   D's loss of step K is +inf;
  inf_params_at_step=K G's parameters become +inf at step K (its losses stay finite at that step).
Without the variable nothing changes.
"""

import os

_FAULT = os.environ.get("GAN_JAX_TEST_FAULT", "")

if _FAULT:
    import jax.numpy as jnp

    from gan_jax.training import steps

    _kind, _step = _FAULT.split("=")
    _step = int(_step)
    _train_step = steps.train_step

    def train_step(state, data, *, gan, axis_name=None):
        new, metrics = _train_step(state, data, gan=gan, axis_name=axis_name)
        hit = new.step == _step
        if _kind == "nan_loss_at_step":
            metrics = {**metrics, "g_loss": jnp.where(hit, jnp.nan, metrics["g_loss"])}
        elif _kind == "inf_loss_at_step":
            metrics = {**metrics, "d_loss": jnp.where(hit, jnp.inf, metrics["d_loss"])}
        elif _kind == "inf_params_at_step":
            params = {name: jnp.where(hit, jnp.inf, value) for name, value in
                      new.generator.params["ConvTranspose_2"].items()}
            generator = new.generator.replace(
                params={**new.generator.params, "ConvTranspose_2": params})
            new = new.replace(generator=generator)
        else:
            raise ValueError(f"unknown GAN_JAX_TEST_FAULT {_FAULT!r}")
        return new, metrics

    steps.train_step = train_step
