"""Draws samples from a PyTorch generator's saved weights, as a .npy for `python -m gan_jax.evaluate`.

The generator class is imported from the PyTorch script that trained it (e.g. the tutorial's peer,
whose `--save` writes the state_dict), so the weights load into exactly the module that made them:

    python ../shared/peers/torch_dcgan.py --steps 927 --batch-size 64 --save /tmp/G.pt
    python benchmarks/sample_torch_generator.py --script ../shared/peers/torch_dcgan.py \
        --weights /tmp/G.pt --num 10000 --out /tmp/torch_samples.npy
    python -m gan_jax.evaluate --samples /tmp/torch_samples.npy --dataset mnist --data_dir DIR

Samples are drawn in inference mode (BatchNorm running statistics), like gan_jax's own evaluation.
"""

import argparse
import importlib.util

import numpy as np
import torch


def load_generator(script: str, weights: str) -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("torch_gan_script", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    generator = module.Generator()
    generator.load_state_dict(torch.load(weights, map_location="cpu"))
    return generator.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--script", required=True, help="the .py that defines `Generator`")
    parser.add_argument("--weights", required=True, help="the generator's saved state_dict")
    parser.add_argument("--num", type=int, default=10000)
    parser.add_argument("--latent_dim", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", required=True, help=".npy to write: uint8 (num, 28, 28, 1)")
    args = parser.parse_args()
    generator = load_generator(args.script, args.weights)
    noise = torch.randn(args.num, args.latent_dim, generator=torch.Generator().manual_seed(args.seed))
    with torch.no_grad():
        images = torch.cat([generator(chunk) for chunk in noise.split(1000)])  # (N, 1, 28, 28)
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
    np.save(args.out, pixels.transpose(0, 2, 3, 1))
    print(f"wrote {args.num} samples to {args.out}")


if __name__ == "__main__":
    main()
