"""What one reclustering of self-conditioning costs, in train steps of the same config, side by side.

    python benchmarks/recluster_cost.py --data_dir DIR [--config experiments/mnist_tuned.py]
        [--rounds 3] [--steps 100]

A reclustering (`gan_jax.training.clusters.recluster`) is a pass of D in inference mode over every
training image, a random projection of its features and k-means: work that does not show in
`gan_jax.bench`'s step rate. Each round times one reclustering and `--steps` train steps in turn (so
a neighbour's load lands on both alike) and prints the median of each and their ratio: how many
steps one reclustering costs, which with the schedule (`self_condition.every`, `.first_every`) gives
its share of a run's time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import jax  # noqa: E402

from gan_jax import bench, cli  # noqa: E402
from gan_jax import config as config_lib  # noqa: E402
from gan_jax.data import idx  # noqa: E402
from gan_jax.training import clusters  # noqa: E402
from gan_jax.training.spec import GANSpec  # noqa: E402
from gan_jax.training.state import create_train_state  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True, help="the folder of MNIST's four IDX files")
    parser.add_argument("--config", default=os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "experiments", "mnist_tuned.py"), help="a self-conditioned config")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    args = parser.parse_args()
    cli.tune_cpu_runtime()  # as training runs
    config = config_lib.load_config_file(os.path.abspath(args.config))
    if not config.self_condition.clusters:
        sys.exit(f"{args.config} does not self-condition (self_condition.clusters=0)")
    images = idx.load_split(args.data_dir, "train").images
    spec = GANSpec.from_config(config)
    state = create_train_state(spec, config.seed, num_train_images=len(images))
    d_variables = state.discriminator.variables()
    recluster_s, steps_s = [], []
    for round_index in range(args.rounds + 1):  # the first round compiles
        start = time.perf_counter()
        found = clusters.recluster(spec.discriminator, d_variables, state.clusters, images, state.key, 0)
        jax.block_until_ready(found.counts)
        seconds = time.perf_counter() - start
        record = bench.bench_one(config, images, args.steps, repeats=1, loop="auto")
        if round_index:
            recluster_s.append(seconds)
            steps_s.append(args.steps / record["steps_per_s"])
    recluster, step = statistics.median(recluster_s), statistics.median(steps_s) / args.steps
    print(f"one reclustering of {len(images)} images: {recluster:.2f} s "
          f"({min(recluster_s):.2f}-{max(recluster_s):.2f}); one train step: {1000 * step:.1f} ms; "
          f"a reclustering costs {recluster / step:.0f} steps")


if __name__ == "__main__":
    main()
