"""The measuring half of benchmarks/device_check.sh: step speed, sweeps and one epoch with its FID, on
whatever accelerator JAX finds, written as one JSON and one markdown report.

    python benchmarks/device_check.py --out DIR [--data_dir MNIST_DIR] [--seconds 280]

Each part runs the real commands' functions in this process (`gan_jax.bench.bench_one` and
`bench_sweep`, `gan_jax.train`, `gan_jax.evaluate`) and stops adding rows once its share of
`--seconds` is spent, so the report always arrives.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

import numpy as np  # noqa: E402

from gan_jax import bench, cli  # noqa: E402
from gan_jax import config as config_lib  # noqa: E402


def _config(batch_size: int, steps_per_call: int, dtype: str):
    config = config_lib.load_config_file(os.path.join(REPO_ROOT, "experiments", "mnist.py"))
    config.batch_size, config.steps_per_call = batch_size, steps_per_call
    config.log_every = config.sample_every = config.checkpoint_every = steps_per_call
    config.model.compute_dtype = dtype
    return config


def speed(images: np.ndarray, deadline: float) -> list[dict]:
    rows = []
    for dtype in ("float32", "bfloat16"):
        for batch_size in (64, 256, 1024):
            for k in (1, 10, 50):
                if time.monotonic() > deadline:
                    return rows
                row = bench.bench_one(_config(batch_size, k, dtype), images, num_steps=100, repeats=3,
                                      loop="auto")
                print(f"step {dtype} batch {batch_size} K {k}: {row['steps_per_s']:.1f} steps/s",
                      flush=True)
                rows.append(row)
    return rows


def sweeps(images: np.ndarray, deadline: float) -> list[dict]:
    rows = []
    for form in ("vmap", "unrolled", "map"):
        for runs in (1, 4, 8):
            if time.monotonic() > deadline:
                return rows
            config = _config(64, 1, "float32")
            row = (bench.bench_one(config, images, num_steps=100, repeats=3, loop="auto") if runs == 1
                   else bench.bench_sweep(config, images, runs, num_steps=100, repeats=3, form=form))
            row.update(runs=runs, sweep_form=form if runs > 1 else "alone",
                       run_steps_per_s=row.get("run_steps_per_s", row["steps_per_s"]))
            print(f"sweep {form} {runs} runs: {row['run_steps_per_s']:.1f} run-steps/s", flush=True)
            rows.append(row)
    return rows


def epoch(data_dir: str) -> dict:
    """One epoch of the tuned config through the real trainer, then its FID (10,000 samples)."""
    from gan_jax import evaluate, train
    config = config_lib.load_config_file(os.path.join(REPO_ROOT, "experiments", "mnist_tuned.py"))
    config.data.source, config.data.dir, config.num_epochs = "idx", data_dir, 1
    workdir = tempfile.mkdtemp(prefix="device_check_")
    start = time.perf_counter()
    train.train_and_evaluate(config, workdir)
    seconds = time.perf_counter() - start
    _, result, _ = evaluate.evaluate_checkpoint(workdir, num_samples=10_000)
    return {"epoch_seconds": seconds, "fid": result["fid"], "score": result["score"]}


def markdown(report: dict) -> str:
    lines = [f"# Device check: {report['device']}", "", "| dtype | batch | K | steps/s | compile s |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['compute_dtype']} | {r['batch_size']} | {r['steps_per_call']} | "
              f"{r['steps_per_s']:.1f} | {r['compile_s']:.1f} |" for r in report["speed"]]
    lines += ["", "| form | runs | run-steps/s |", "| --- | --- | --- |"]
    lines += [f"| {r['sweep_form']} | {r['runs']} | {r['run_steps_per_s']:.1f} |" for r in report["sweeps"]]
    if report.get("epoch"):
        e = report["epoch"]
        lines += ["", f"One epoch of experiments/mnist_tuned.py: {e['epoch_seconds']:.1f} s, FID "
                      f"{e['fid']:.1f}, score {e['score']:.2f}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--data_dir", default="")
    parser.add_argument("--seconds", type=float, default=280)
    args = parser.parse_args()
    cli.setup_logging()
    os.makedirs(args.out, exist_ok=True)
    import jax
    images = bench.bench_images(_config(64, 1, "float32"), real_data=False)
    start = time.monotonic()
    report = {"device": f"{jax.devices()[0].device_kind} x{jax.device_count()}, jax {jax.__version__}"}
    report["speed"] = speed(images, start + 0.45 * args.seconds)
    report["sweeps"] = sweeps(images, start + 0.75 * args.seconds)
    if args.data_dir:
        report["epoch"] = epoch(args.data_dir)
    with open(os.path.join(args.out, "device_check.json"), "w") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(args.out, "device_check.md"), "w") as f:
        f.write(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
