"""The package's logger: our own lines go to "gan_jax", which `cli.setup_logging` prints plainly."""

import logging

logger = logging.getLogger("gan_jax")
