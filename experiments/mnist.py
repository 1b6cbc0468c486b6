"""The tutorial's setup: a DCGAN-style GAN on MNIST, batch 64, 20 epochs, Adam 2e-4 with beta1 0.5.

    python -m gan_jax.train --config experiments/mnist.py
    python -m gan_jax.train --config experiments/mnist.py:tiny          # a few-step smoke run
    python -m gan_jax.train --config experiments/mnist.py \
        --config.data.source=idx --config.data.dir=/path/to/mnist     # offline, from IDX files

What to expect (measured, one epoch = 937 steps, about 80 s on a 2-core CPU): the 8x8 grid in samples/
shows clearly recognizable digits; D loss around 0.2-0.3, G loss 1.3-1.9, mean D(x) about 0.75 and
D(G(z)) 0.1-0.3 (D stays ahead, G keeps improving); FID about 160 with the shipped evaluator.
"""

import ml_collections


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    """Returns the run config; `variant="tiny"` shrinks it to a few steps for smoke tests."""
    config = ml_collections.ConfigDict()
    config.seed = 0

    config.data = ml_collections.ConfigDict()
    config.data.source = "tfds"  # "tfds" (tensorflow-datasets) or "idx" (the four IDX files in data.dir)
    config.data.name = "mnist"  # "mnist" or "fashion_mnist"
    config.data.dir = ""  # idx: the folder of IDX files; tfds: its data_dir ("" = tfds's default)

    config.model = ml_collections.ConfigDict()
    config.model.g_width = 64  # G: latent -> 2*g_width -> g_width -> 1 channels
    config.model.d_width = 64  # D: 1 -> d_width -> 2*d_width channels
    config.model.init_scheme = "pytorch"  # "pytorch" (the tutorial's defaults) or "dcgan" (N(0, 0.02))
    # How G's transposed convolutions are computed: "fast" (a matmul for the 1x1 -> 7x7 layer, and a
    # custom gradient XLA's CPU backend runs well) or "xla" (what flax.linen.ConvTranspose does). Same
    # function and parameters either way, so checkpoints load under both.
    config.model.conv_transpose = "fast"
    # What layers compute in: "float32", or "bfloat16" (parameters and Adam states stay float32).
    config.model.compute_dtype = "float32"
    # How D is normalized: "batch" (the tutorial's BatchNorm), "spectral" (spectral normalization of
    # every layer) or "none". The gradient penalties (wgan_gp, r1_gamma) need "spectral" or "none".
    config.model.d_norm = "batch"
    # Class-conditional generation (0: unconditional, the tutorial's; 10 for MNIST and Fashion-MNIST):
    # how G takes the label, "concat" (an embedding joined to z) or "cbn" (class-conditional
    # BatchNorm), and how D does, "projection", "concat" (one-hot maps joined to the image) or "acgan"
    # (an auxiliary classifier whose cross-entropy, weighted by ac_weight, joins both losses).
    config.model.num_classes = 0
    config.model.g_condition = "concat"
    config.model.d_condition = "projection"
    # The minibatch standard deviation feature of D (ProGAN): 0 off, else the group size (e.g. 4).
    config.model.d_minibatch_std = 0
    config.latent_dim = 100

    # Optimization: Adam for each network. The tutorial used Adam's default beta1 = 0.9; DCGAN practice
    # (and the PyTorch peer) uses 0.5.
    config.batch_size = 64
    config.num_epochs = 20
    config.num_steps = 0  # > 0 wins over num_epochs
    config.g_lr = 2e-4
    config.d_lr = 2e-4
    config.b1 = 0.5
    config.b2 = 0.999
    config.cycle_weight = 0.0  # the tutorial's L1(real, fake) "cycle" term, applied to G's loss

    # The objective (gan_jax/losses.py): "ns" (the tutorial's non-saturating cross-entropy), "hinge",
    # "ls" (least squares) or "wgan_gp" (Wasserstein critic with a gradient penalty of gp_weight).
    config.loss = "ns"
    config.gp_weight = 10.0
    config.r1_gamma = 0.0  # R1 penalty on D's gradient at real images, (gamma / 2) E||grad D(x)||^2
    # D updates per G update, each on its own batch and noise. A step is one G update, and an epoch
    # (a pass over the data) has 60000 // (batch_size * d_steps) steps.
    config.d_steps = 1
    # Exponential moving average of G's weights, used for samples and evaluation (0: off; e.g. 0.999).
    # Until step ema_start the average copies G's weights.
    config.ema_decay = 0.0
    config.ema_start = 0
    config.ac_weight = 1.0
    # DiffAugment (gan_jax/augment.py): a comma-separated subset of "color", "translation" and
    # "cutout", applied to every image D sees, real and generated ("": off).
    config.augment = ""
    # How the learning rates fall over the run: "none", "linear" or "cosine" (both to 0 at the end).
    config.lr_decay = "none"

    # Training steps per compiled call (K > 1 removes per-step dispatch overhead on accelerators);
    # the cadences below must be multiples of it.
    config.steps_per_call = 1

    # Bookkeeping, in steps.
    config.log_every = 200
    config.sample_every = 200
    config.checkpoint_every = 1000
    config.keep_checkpoints = 3
    # FID, KID and classifier score of 2,000 samples (the shipped evaluator network) logged to
    # metrics.jsonl as eval_fid, eval_kid, eval_score; the last step always evaluates. 0: off.
    config.eval_every = 0

    # Data parallelism: batch_size is the global batch, split evenly over the devices.
    config.parallel = "pmap"  # "pmap" or "shard_map", over the same per-device step
    config.num_devices = 0  # local devices to use; 0: all of them

    config.deterministic = True  # XLA's deterministic ops on GPU (no effect on CPU, already deterministic)

    if variant == "tiny":
        config.num_steps = 6
        config.log_every = 2
        config.sample_every = 3
        config.checkpoint_every = 4
    elif variant:
        raise ValueError(f"unknown variant {variant!r} of experiments/mnist.py; known: 'tiny'")
    return config
