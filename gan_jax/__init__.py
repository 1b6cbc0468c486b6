"""gan_jax: a fast, reproducible, pure-JAX GAN trainer (the PyTorch MNIST DCGAN tutorial, done right).

Entry points: `python -m gan_jax.train` (training), `python -m gan_jax.evaluate` (sample quality),
`python -m gan_jax.sample` (images from a checkpoint), `python -m gan_jax.bench` (step throughput),
`python -m gan_jax.evaluator.train` (the evaluator network behind the sample-quality metrics).
"""
