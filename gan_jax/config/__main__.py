"""`python -m gan_jax.config`: prints the README's config table."""

from gan_jax.config import markdown_table

print(markdown_table())
