"""Step time of each config variant relative to the tutorial's, measured side by side.

    python benchmarks/step_cost.py --variants tutorial,ema,hinge,ls,wgan_gp,r1,spectral,d_steps2,tuned \
        --rounds 3 --steps 100 [--batch_size 64] [--json FILE]

Each round runs `python -m gan_jax.bench` once per variant, each in a fresh process, in turn (A B C A B
C ...), so a neighbour's load lands on every variant alike; per variant it prints the median steps/s
over rounds and its step time relative to the tutorial's (> 1: slower). A step is one G update, so a
variant with d_steps=2 does two D updates in it. The variants are in `variants.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from variants import REPO_ROOT, VARIANTS, config_args


def bench(name: str, batch_size: int, steps: int, repeats: int) -> dict:
    """One `gan_jax.bench` run of a variant: its JSON record."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "bench.jsonl")
        argv = [sys.executable, "-m", "gan_jax.bench", *config_args(name, "mnist"),
                f"--batch_sizes={batch_size}", f"--steps={steps}", f"--repeats={repeats}",
                f"--json={path}"]
        result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True)
        if result.returncode != 0 or not os.path.exists(path):
            sys.exit(f"failed: {' '.join(argv)}\n{result.stderr[-3000:]}")
        with open(path) as f:
            return json.loads(f.readline())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--json", help="also write one line per variant with every round's record")
    args = parser.parse_args()
    names = [n for n in args.variants.split(",") if n]
    if "tutorial" not in names:
        names.insert(0, "tutorial")  # the reference every other variant is relative to
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        sys.exit(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for round_index in range(args.rounds):
        for name in names:
            record = bench(name, args.batch_size, args.steps, args.repeats)
            runs[name].append(record)
            print(f"round {round_index + 1} {name}: {record['steps_per_s']:.2f} steps/s", flush=True)
    reference = statistics.median(r["steps_per_s"] for r in runs["tutorial"])
    print(f"\n{'variant':>10} {'steps/s':>8} {'(min-max)':>15} {'step time / tutorial':>21}")
    for name in names:
        rates = [r["steps_per_s"] for r in runs[name]]
        median = statistics.median(rates)
        print(f"{name:>10} {median:>8.2f} {f'({min(rates):.2f}-{max(rates):.2f})':>15} "
              f"{reference / median:>21.2f}")
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({"variant": name, "steps_per_s": median,
                                    "relative_step_time": reference / median, "runs": runs[name]}) + "\n")


if __name__ == "__main__":
    main()
