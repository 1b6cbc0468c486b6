"""The unconditional-quality study: each technique alone on top of the previous tuned config, and
their combinations, trained as one sweep over seeds per variant and scored with the shipped evaluator.

    python benchmarks/study.py --data_dir DIR --variants base,augment,mbstd --seeds 0,1 --epochs 20 \
        --workdir /tmp/study --json /tmp/study.jsonl [--dataset fashion_mnist]

Per variant: `python -m gan_jax.sweep` over the seeds (every run the real trainer, with
`eval_every` = 2 epochs so the FID curve against training time can be drawn from each run's
metrics.jsonl), then `python -m gan_jax.evaluate --workdir SWEEP` (10,000 samples per run). Both
commands are printed, so a row reproduces with them. Variants already in `--json` are skipped, and an
interrupted sweep resumes from its checkpoints, so the study can be stopped and started again.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from quality import summarize  # the same table as the one-run-per-variant study
from variants import REPO_ROOT, STUDY, VARIANTS

def _run(argv: list[str]) -> None:
    print("+ " + " ".join(argv), flush=True)
    result = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"failed ({result.returncode}): {' '.join(argv)}\n{result.stderr[-3000:]}")


def train_and_score(name: str, dataset: str, seeds: str, epochs: int, data_dir: str, workdir: str,
                    num_samples: int) -> list[dict]:
    """Trains one variant's seeds as one sweep; returns one evaluation record per run."""
    path, overrides = VARIANTS[name]
    sweep_dir = os.path.join(workdir, f"{dataset}_{name}_e{epochs}")
    steps_per_epoch = 60000 // 64
    start = time.perf_counter()
    _run([sys.executable, "-m", "gan_jax.sweep", "--config", path.format(dataset=dataset), *overrides,
          "--config.data.source=idx", f"--config.data.dir={data_dir}", f"--config.num_epochs={epochs}",
          f"--config.eval_every={2 * steps_per_epoch}", f"--config.sample_every={2 * steps_per_epoch}",
          f"--seeds={seeds}", f"--workdir={sweep_dir}"])
    train_s = time.perf_counter() - start
    result_path = os.path.join(sweep_dir, "quality.json")
    _run([sys.executable, "-m", "gan_jax.evaluate", f"--workdir={sweep_dir}",
          f"--num_samples={num_samples}", f"--json={result_path}"])
    with open(result_path) as f:
        rows = json.load(f)["runs"]
    return [{**row, "variant": name, "dataset": dataset, "epochs": epochs, "sweep_train_s": train_s,
             "run_dir": os.path.join(sweep_dir, row["name"])} for row in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True, help="folder of the dataset's four IDX files")
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "fashion_mnist"])
    parser.add_argument("--variants", default=",".join(STUDY))
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--num_samples", type=int, default=10_000)
    parser.add_argument("--workdir", default="/tmp/gan_jax_study")
    parser.add_argument("--json", required=True, help="JSON lines, one per run; read to skip done variants")
    args = parser.parse_args()
    names = [n for n in args.variants.split(",") if n]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        sys.exit(f"unknown variant(s) {unknown}; known: {sorted(VARIANTS)}")
    records = []
    if os.path.exists(args.json):
        with open(args.json) as f:
            records = [json.loads(line) for line in f if line.strip()]
    for name in names:
        if any((r["variant"], r["dataset"], r["epochs"]) == (name, args.dataset, args.epochs)
               for r in records):
            continue
        rows = train_and_score(name, args.dataset, args.seeds, args.epochs, args.data_dir, args.workdir,
                               args.num_samples)
        records.extend(rows)
        with open(args.json, "a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        print(f"{name}: FID " + ", ".join(f"{row['fid']:.2f}" for row in rows), flush=True)
    chosen = [r for r in records if r["variant"] in names and r["dataset"] == args.dataset
              and r["epochs"] == args.epochs]
    print(summarize(chosen))


if __name__ == "__main__":
    main()
