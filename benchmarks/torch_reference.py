"""PyTorch reference of gan_jax's model and training step, for speed comparisons on the same machine.

The same GAN as `experiments/mnist.py` (the tutorial's, made correct): G maps z (100) through transposed
convolutions 1 -> 7 -> 14 -> 28 with BatchNorm and ReLU to a tanh image; D is two strided convolutions
with LeakyReLU(0.2) (BatchNorm on the second) and a linear layer to one logit. Both use PyTorch's default
initialization and Adam(2e-4, betas=(0.5, 0.999)); the loss is BCE on logits.

One step does what `gan_jax.training.steps.train_step` does: gather a batch of real images from a resident
tensor by random indices, update D on real (label 1) and G(z) (label 0) with the mean of the two losses,
then update G through D with label 1 (non-saturating) on fresh noise. Only the timed steps after the
warm-up count, in `--repeats` runs of `--steps` steps whose median is reported (as `gan_jax.bench`
does); data loading costs next to nothing on both sides, so the numbers compare the math.

    python benchmarks/torch_reference.py --batch-size 64 --steps 100 --threads 2 --json /tmp/torch.jsonl

Without `--data-dir` (or $GAN_JAX_MNIST_DIR) the images are random: pixel values do not change the time.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import time
from typing import Callable

import numpy as np
import torch
from torch import nn

LATENT_DIM = 100
NUM_SYNTHETIC = 60_000  # as many images as MNIST's train split, so the gather touches as much memory
# The pinned counts of the tutorial's networks; gan_jax's default config has exactly these too.
GENERATOR_PARAMS = 759_873
DISCRIMINATOR_PARAMS = 138_817
DATA_DIR_VAR = "GAN_JAX_MNIST_DIR"  # the same variable the project's tests read


def load_images(data_dir: str | None, seed: int) -> torch.Tensor:
    """MNIST's train images from IDX files, or random ones: float32 (N, 1, 28, 28) in [-1, 1].

    Standalone numpy instead of gan_jax's reader, so this script runs in a venv with torch and no JAX.
    """
    if data_dir:
        path = os.path.join(data_dir, "train-images-idx3-ubyte")
        if os.path.isfile(path + ".gz"):  # gzipped as published, or raw
            path += ".gz"
        elif not os.path.isfile(path):
            raise SystemExit(f"--data-dir {data_dir!r}: no train-images-idx3-ubyte[.gz] there")
        with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
            raw = f.read()
        magic, count, rows, cols = np.frombuffer(raw, ">u4", 4)
        if magic != 2051:
            raise SystemExit(f"{path}: IDX magic {magic}, expected 2051 (uint8 images)")
        pixels = np.frombuffer(raw, np.uint8, offset=16).reshape(count, 1, rows, cols)
    else:
        pixels = np.random.default_rng(seed).integers(0, 256, (NUM_SYNTHETIC, 1, 28, 28), np.uint8)
    return torch.from_numpy(pixels.astype(np.float32) / 127.5 - 1.0)


def make_generator() -> nn.Module:
    """z (batch, 100, 1, 1) -> images (batch, 1, 28, 28) in [-1, 1]."""
    return nn.Sequential(
        nn.ConvTranspose2d(LATENT_DIM, 128, kernel_size=7, stride=1),  # 1x1 -> 7x7
        nn.BatchNorm2d(128), nn.ReLU(),
        nn.ConvTranspose2d(128, 64, kernel_size=4, stride=2, padding=1),  # -> 14x14
        nn.BatchNorm2d(64), nn.ReLU(),
        nn.ConvTranspose2d(64, 1, kernel_size=4, stride=2, padding=1),  # -> 28x28
        nn.Tanh())


def make_discriminator() -> nn.Module:
    """Images (batch, 1, 28, 28) -> logits (batch, 1); no sigmoid, the loss takes logits."""
    return nn.Sequential(
        nn.Conv2d(1, 64, kernel_size=4, stride=2, padding=1),  # -> 14x14
        nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, kernel_size=4, stride=2, padding=1),  # -> 7x7
        nn.BatchNorm2d(128), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(128 * 7 * 7, 1))


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def make_train_step(batch_size: int, images: torch.Tensor, generator: nn.Module,
                    discriminator: nn.Module) -> Callable[[], tuple[torch.Tensor, torch.Tensor]]:
    """Returns a closure doing one D update and one G update; it returns (d_loss, g_loss)."""
    g_opt = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(discriminator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    # Labels are the same every step: made once, like constants folded into the JAX step.
    ones = torch.ones(batch_size, 1)
    zeros = torch.zeros(batch_size, 1)

    def train_step() -> tuple[torch.Tensor, torch.Tensor]:
        real = images[torch.randint(images.shape[0], (batch_size,))]
        # D update. G(z) without autograd is the same value as G(z).detach() and records no graph that
        # would be thrown away; the JAX step does not differentiate G here either. Real and fake go
        # through D separately, so each gets its own BatchNorm batch statistics (as in the tutorial).
        with torch.no_grad():
            fake = generator(torch.randn(batch_size, LATENT_DIM, 1, 1))
        d_loss = (bce(discriminator(real), ones) + bce(discriminator(fake), zeros)) / 2
        d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        d_opt.step()
        # G update on fresh noise, non-saturating: push D(G(z)) towards "real". D's gradients from this
        # backward are never used (zero_grad clears them before D's next update).
        g_loss = bce(discriminator(generator(torch.randn(batch_size, LATENT_DIM, 1, 1))), ones)
        g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        g_opt.step()
        return d_loss.detach(), g_loss.detach()

    return train_step


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per repeat, after warm-up")
    parser.add_argument("--repeats", type=int, default=1, help="timed runs of --steps; the median counts")
    parser.add_argument("--warmup-steps", type=int, default=10, help="untimed steps run first")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=os.environ.get(DATA_DIR_VAR) or None,
                        help=f"folder of MNIST IDX files (default ${DATA_DIR_VAR}); none: random images")
    parser.add_argument("--compile", action="store_true", help="torch.compile the train step")
    parser.add_argument("--json", help="append one JSON line with the result to this file")
    args = parser.parse_args()
    if min(args.batch_size, args.steps, args.repeats, args.threads) < 1 or args.warmup_steps < 0:
        parser.error("--batch-size, --steps, --repeats and --threads must be >= 1, --warmup-steps >= 0")
    return args


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    images = load_images(args.data_dir, args.seed)
    generator, discriminator = make_generator(), make_discriminator()
    g_params, d_params = count_params(generator), count_params(discriminator)
    # A drifted model would make the comparison meaningless, so refuse to time one.
    assert (g_params, d_params) == (GENERATOR_PARAMS, DISCRIMINATOR_PARAMS), (g_params, d_params)
    print(f"parameters: generator {g_params:,}, discriminator {d_params:,}", flush=True)

    step = make_train_step(args.batch_size, images, generator, discriminator)
    if args.compile:
        step = torch.compile(step)
    for _ in range(args.warmup_steps):  # also where torch.compile compiles
        step()
    rates = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        for _ in range(args.steps):
            d_loss, g_loss = step()
        rates.append(args.steps / (time.perf_counter() - start))  # CPU kernels are synchronous
    steps_per_s = statistics.median(rates)

    result = {
        "framework": "torch", "torch_version": torch.__version__, "device": "cpu",
        "batch_size": args.batch_size, "steps": args.steps, "repeats": args.repeats,
        "warmup_steps": args.warmup_steps, "threads": torch.get_num_threads(), "compile": args.compile,
        "data": "idx" if args.data_dir else "synthetic",
        "seconds": sum(args.steps / rate for rate in rates), "steps_per_s": steps_per_s,
        "steps_per_s_min": min(rates), "steps_per_s_max": max(rates),
        "images_per_s": steps_per_s * args.batch_size,
        "d_loss": float(d_loss), "g_loss": float(g_loss),
    }
    line = json.dumps(result)
    print(line, flush=True)
    if args.json:
        with open(args.json, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
