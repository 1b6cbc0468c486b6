"""`python -m gan_jax.config`: prints the config table of docs/config.md."""

from gan_jax.config import markdown_table

print(markdown_table())
