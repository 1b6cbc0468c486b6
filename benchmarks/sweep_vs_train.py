"""Wall time of N runs as one sweep against N separate `gan_jax.train` processes, start-up, data loading
and compilation included: what a user waits for either way.

    python benchmarks/sweep_vs_train.py --data_dir DIR --runs 4 --steps 937 [--rounds 1]

Each round times `python -m gan_jax.sweep --seeds 0..N-1` and then the N training commands one after
another (the order alternates from round to round), each into a fresh folder, and prints the seconds
of each and their ratio. Checkpoints, samples and logs are written at the end only (cadences =
--steps), as a user's run of that length would at its end.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from variants import REPO_ROOT


def _timed(argv: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed: {' '.join(argv)}\n{result.stderr[-3000:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True, help="folder of MNIST's four IDX files")
    parser.add_argument("--config", default="experiments/mnist.py")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=937)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    common = ["--config", os.path.join(REPO_ROOT, args.config), "--config.data.source=idx",
              f"--config.data.dir={args.data_dir}", f"--config.num_steps={args.steps}",
              *(f"--config.{k}_every={args.steps}" for k in ("log", "sample", "checkpoint"))]
    for round_index in range(args.rounds):
        with tempfile.TemporaryDirectory() as folder:
            def sweep() -> float:
                return _timed([sys.executable, "-m", "gan_jax.sweep", *common,
                               f"--seeds={','.join(map(str, range(args.runs)))}",
                               f"--workdir={os.path.join(folder, 'sweep')}"])

            def separate() -> float:
                return sum(_timed([sys.executable, "-m", "gan_jax.train", *common, f"--config.seed={seed}",
                                   f"--workdir={os.path.join(folder, f'train_{seed}')}"])
                           for seed in range(args.runs))

            order = (sweep, separate) if round_index % 2 == 0 else (separate, sweep)
            seconds = {f.__name__: f() for f in order}
        print(f"round {round_index + 1}: {args.runs} runs x {args.steps} steps: one sweep "
              f"{seconds['sweep']:.1f} s, {args.runs} train processes {seconds['separate']:.1f} s, "
              f"sweep / separate {seconds['sweep'] / seconds['separate']:.2f}", flush=True)


if __name__ == "__main__":
    main()
