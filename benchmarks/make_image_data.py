"""Real data in the shapes users bring, made from the IDX files, for the "Your own images" measurements.

    python benchmarks/make_image_data.py folder --idx_dir DIR --out FOLDER [--class_names NAMES]
    python benchmarks/make_image_data.py npz --idx_dir DIR --out FILE.npz [--pad 2] [--tint] [--seed 0]

`folder` writes every image as a PNG: `FOLDER/train/<class>/<index>.png` and `FOLDER/test/...`, the
layout `data.source="folder"` reads (class folders named so that their sorted order is the label
order: `0_name`, `1_name`, ...). PNG is lossless, so the folder holds exactly the IDX pixels.

`npz` writes one .npz with `images`, `labels`, `test_images` and `test_labels`: `--pad 2` pads each
28x28 image with 2 black pixels per side to 32x32 (as papers that use MNIST at 32 do), `--tint` colours
each digit with a random colour per image (RGB, 3 channels; drawn from `--seed`), for an RGB dataset
whose samples can be checked by eye.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from gan_jax.data import idx  # noqa: E402

FASHION_MNIST_CLASSES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker",
                         "bag", "boot")


def write_folder(idx_dir: str, out: str, class_names: list[str]) -> None:
    for split in ("train", "test"):
        data = idx.load_split(idx_dir, split)
        names = [f"{label}_{name}" for label, name in enumerate(class_names)]
        for name in names:
            os.makedirs(os.path.join(out, split, name), exist_ok=True)
        for index, (image, label) in enumerate(zip(data.images, data.labels)):
            Image.fromarray(image[..., 0]).save(os.path.join(out, split, names[label], f"{index:05d}.png"))
        print(f"{split}: {len(data.images)} images in {len(names)} class folders under {out}/{split}")


def convert(images: np.ndarray, pad: int, tint: np.ndarray | None) -> np.ndarray:
    """uint8 (N, 28, 28, 1) -> padded, and tinted to RGB when `tint` (N, 3) colours are given."""
    if pad:
        images = np.pad(images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    if tint is not None:  # the stroke's brightness times the image's colour
        images = np.round(images.astype(np.float32) * tint[:, None, None, :]).astype(np.uint8)
    return images


def write_npz(idx_dir: str, out: str, pad: int, tint: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, prefix in (("train", ""), ("test", "test_")):
        data = idx.load_split(idx_dir, split)
        # Bright colours: every channel in [0.3, 1], so no digit disappears into the black background.
        colours = rng.uniform(0.3, 1.0, (len(data.images), 3)).astype(np.float32) if tint else None
        arrays[prefix + "images"] = convert(data.images, pad, colours)
        arrays[prefix + "labels"] = data.labels.astype(np.int32)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    np.savez(out, **arrays)
    print(f"{out}: images {arrays['images'].shape}, test_images {arrays['test_images'].shape}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("form", choices=["folder", "npz"])
    parser.add_argument("--idx_dir", required=True, help="the folder of the four IDX files")
    parser.add_argument("--out", required=True)
    parser.add_argument("--class_names", default=",".join(FASHION_MNIST_CLASSES),
                        help="folder: the classes' names, comma-separated, in label order")
    parser.add_argument("--pad", type=int, default=0, help="npz: black pixels added on each side")
    parser.add_argument("--tint", action="store_true", help="npz: a random colour per image (RGB)")
    parser.add_argument("--seed", type=int, default=0, help="npz: seeds the colours")
    args = parser.parse_args()
    if args.form == "folder":
        write_folder(args.idx_dir, args.out, args.class_names.split(","))
    else:
        write_npz(args.idx_dir, args.out, args.pad, args.tint, args.seed)


if __name__ == "__main__":
    main()
