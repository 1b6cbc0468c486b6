"""FID against training time of configs, drawn from their runs' metrics.jsonl (no re-run).

    python benchmarks/fid_vs_time.py --out docs/fid_vs_time.png \
        --curve "tutorial:0.0372:0:RUN_A,RUN_B" --curve "tuned:0.0544:2.9:RUN_C,RUN_D"

Each `--curve` is `LABEL:SECONDS_PER_STEP:SECONDS_PER_RECLUSTERING:RUN,RUN,...`: the runs (seeds) of one
config, trained with `eval_every`, whose `eval_fid_ema` (or `eval_fid` without an EMA) records are
averaged over the runs at each step. The time axis is not the runs' own wall clock, which neighbours on a
shared machine stretch at random: it is steps x the config's step time measured side by side with the
others (`benchmarks/step_cost.py`), plus, for a self-conditioned config, each reclustering the schedule
made before that step x its measured cost (`benchmarks/recluster_cost.py`). The curves' points are the
2,000-sample evaluations made during training (a little above the 10,000-sample FID of the same
generator).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from gan_jax.reporting.metrics_log import read_metrics  # noqa: E402
from gan_jax.training.clusters import is_reclustering_step  # noqa: E402


def curve(run_dirs: list[str]) -> tuple[np.ndarray, np.ndarray, dict]:
    """(steps, mean FID over the runs at each step, the first run's config)."""
    per_run = []
    for run_dir in run_dirs:
        records = read_metrics(os.path.join(run_dir, "metrics.jsonl"))
        name = "eval_fid_ema" if any("eval_fid_ema" in r for r in records) else "eval_fid"
        per_run.append({r["step"]: r[name] for r in records if name in r})
    steps = sorted(set.intersection(*(set(points) for points in per_run)))
    with open(os.path.join(run_dirs[0], "config.json")) as f:
        config = json.load(f)
    return (np.array(steps), np.array([np.mean([points[s] for points in per_run]) for s in steps]),
            config)


def _seeds(count: int) -> str:
    return f"{count} seed" + ("s" if count > 1 else "")


def seconds(steps: np.ndarray, config: dict, step_s: float, recluster_s: float) -> np.ndarray:
    """Training time at each of `steps`: the steps, and the reclusterings made before them."""
    schedule = config.get("self_condition", {})
    if not schedule.get("clusters"):
        return steps * step_s
    every, first = schedule["every"], schedule.get("first_every", 0)
    made = np.cumsum([is_reclustering_step(s, every, first) for s in range(int(steps.max()) + 1)])
    return steps * step_s + made[steps - 1] * recluster_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--curve", action="append", required=True,
                        help="LABEL:SECONDS_PER_STEP:SECONDS_PER_RECLUSTERING:RUN[,RUN...]")
    parser.add_argument("--out", required=True, help="the picture (.png)")
    parser.add_argument("--title", default="MNIST, batch 64, 2-core CPU: FID (2,000 samples) against "
                                            "training time")
    args = parser.parse_args()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for spec in args.curve:
        label, step_s, recluster_s, runs = spec.split(":", 3)
        steps, fid, config = curve(runs.split(","))
        minutes = seconds(steps, config, float(step_s), float(recluster_s)) / 60
        ax.plot(minutes, fid, marker="o", label=f"{label} ({_seeds(len(runs.split(',')))})")
        print(f"{label}: " + ", ".join(f"{m:.0f} min {f:.1f}" for m, f in zip(minutes, fid)))
    ax.set_yscale("log")
    ax.set_xlabel("training time (minutes; step and reclustering times measured side by side)")
    ax.set_ylabel("FID (lower is better)")
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
