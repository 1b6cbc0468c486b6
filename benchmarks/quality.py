"""Sample quality of config variants over seeds: train each with `gan_jax.train`, score it with
`gan_jax.evaluate` (10,000 samples, the shipped evaluator), and print mean +- std per variant.

    python benchmarks/quality.py --data_dir DIR --variants tutorial,ema,tuned --seeds 0,1,2 \
        --epochs 1 --workdir /tmp/quality --json /tmp/quality.jsonl [--dataset fashion_mnist]

Every run is the real command line in a fresh process, so a row reproduces with the two commands it
prints. Runs already in `--json` (same variant, dataset, seed and epochs) are skipped, so an interrupted
table resumes where it stopped. The variants are in `variants.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from variants import REPO_ROOT, VARIANTS, config_args

METRICS = ("fid", "kid", "score", "precision", "recall", "coverage_entropy")


def _run(argv: list[str]) -> None:
    print("+ " + " ".join(argv), flush=True)
    result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(argv)}\n{result.stderr[-3000:]}")


def train_and_score(name: str, dataset: str, seed: int, epochs: int, data_dir: str, workdir: str,
                    num_samples: int) -> dict:
    """Trains one variant for one seed and returns its evaluation record."""
    run_dir = os.path.join(workdir, f"{dataset}_{name}_e{epochs}_s{seed}")
    start = time.perf_counter()
    _run([sys.executable, "-m", "gan_jax.train", *config_args(name, dataset),
          "--config.data.source=idx", f"--config.data.dir={data_dir}", f"--config.seed={seed}",
          f"--config.num_epochs={epochs}", "--config.num_steps=0", "--config.sample_every=100000",
          f"--workdir={run_dir}"])
    train_s = time.perf_counter() - start
    result_path = os.path.join(run_dir, "quality.json")
    _run([sys.executable, "-m", "gan_jax.evaluate", f"--workdir={run_dir}",
          f"--num_samples={num_samples}", f"--json={result_path}"])
    with open(result_path) as f:
        result = json.load(f)
    # The evaluation's own "seed" (of its sampling noise) is kept as eval_seed: "seed" is the run's.
    return {**result, "eval_seed": result["seed"], "variant": name, "dataset": dataset, "seed": seed,
            "epochs": epochs, "train_s": train_s, "run_dir": run_dir}


def summarize(records: list[dict]) -> str:
    """A markdown table: per variant, mean +- std over its seeds of each metric."""
    lines = ["| variant | seeds | " + " | ".join(METRICS) + " |",
             "| --- | --- | " + " | ".join("---" for _ in METRICS) + " |"]
    for name in dict.fromkeys(r["variant"] for r in records):
        rows = [r for r in records if r["variant"] == name]
        cells = []
        for metric in METRICS:
            values = [r[metric] for r in rows]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            digits = 1 if metric in ("fid", "kid") else 3
            cells.append(f"{statistics.mean(values):.{digits}f} +- {spread:.{digits}f}")
        lines.append(f"| {name} | {len(rows)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True, help="folder of the dataset's four IDX files")
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--num_samples", type=int, default=10_000)
    parser.add_argument("--workdir", default="/tmp/gan_jax_quality")
    parser.add_argument("--json", required=True, help="JSON lines, one per run; read to skip done runs")
    args = parser.parse_args()
    names = [n for n in args.variants.split(",") if n]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        sys.exit(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    records = []
    if os.path.exists(args.json):
        with open(args.json) as f:
            records = [json.loads(line) for line in f if line.strip()]
    for name in names:
        for seed in seeds:
            key = (name, args.dataset, seed, args.epochs)
            if any((r["variant"], r["dataset"], r["seed"], r["epochs"]) == key for r in records):
                continue
            record = train_and_score(name, args.dataset, seed, args.epochs, args.data_dir, args.workdir,
                                     args.num_samples)
            records.append(record)
            with open(args.json, "a") as f:
                f.write(json.dumps(record) + "\n")
            print(f"{name} seed {seed}: FID {record['fid']:.1f}, score {record['score']:.2f}", flush=True)
    chosen = [r for r in records if r["variant"] in names and r["dataset"] == args.dataset
              and r["epochs"] == args.epochs and r["seed"] in seeds]
    print(summarize(chosen))


if __name__ == "__main__":
    main()
