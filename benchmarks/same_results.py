"""Do two revisions of gan_jax train alike? Runs the same commands in this checkout and in a git
worktree of another revision, and compares their metrics.jsonl files record by record.

    python benchmarks/same_results.py --rev ab38df5 --data_dir DIR [--steps 60] [--cases all]

Each case is a `gan_jax.train` or `gan_jax.sweep` command run for `--steps` steps with a log line every
step (so every step's losses are compared), in a fresh process per revision, on the real data in
`--data_dir` (the four MNIST IDX files). A case passes when every record holds the same values in both
(`steps_per_s`, a timing, aside); the script prints one line per case and exits 1 if any differs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name -> (module, config file, extra flags); each sweep run's folder is compared on its own.
CASES = {
    "tutorial": ("gan_jax.train", "experiments/mnist.py", []),
    "tuned": ("gan_jax.train", "experiments/mnist.py",
              ["--config.g_lr=2e-3", "--config.ema_decay=0.999", "--config.ema_start=30"]),
    "conditional": ("gan_jax.train", "experiments/mnist.py",
                    ["--config.g_lr=2e-3", "--config.model.num_classes=10",
                     "--config.model.g_condition=cbn", "--config.model.d_condition=projection"]),
    "sweep": ("gan_jax.sweep", "experiments/mnist.py", ["--seeds=0,1"]),
}


def run_case(checkout: str, case: str, data_dir: str, steps: int, workdir: str) -> list[str]:
    """Runs one case in `checkout`; returns the metrics files it wrote (one per run)."""
    module, config, extra = CASES[case]
    argv = [sys.executable, "-m", module, "--config", os.path.join(checkout, config),
            "--config.data.source=idx", f"--config.data.dir={data_dir}", f"--config.num_steps={steps}",
            "--config.log_every=1", f"--config.sample_every={steps}",
            f"--config.checkpoint_every={steps}", *extra, f"--workdir={workdir}"]
    env = dict(os.environ, PYTHONPATH=checkout)
    result = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"{case} failed in {checkout}:\n{result.stderr[-2000:]}")
    if module == "gan_jax.sweep":
        return sorted(os.path.join(workdir, name, "metrics.jsonl") for name in os.listdir(workdir)
                      if name.startswith("run_"))
    return [os.path.join(workdir, "metrics.jsonl")]


def records(path: str) -> list[dict]:
    with open(path) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "steps_per_s"} for line in f]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rev", required=True, help="the revision to compare with, e.g. ab38df5")
    parser.add_argument("--data_dir", required=True, help="folder of MNIST's four IDX files")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--cases", default="all", help=f"comma-separated subset of {sorted(CASES)}")
    args = parser.parse_args()
    cases = list(CASES) if args.cases == "all" else args.cases.split(",")
    scratch = tempfile.mkdtemp(prefix="gan_jax_same_results_")
    other = os.path.join(scratch, "other")
    subprocess.run(["git", "-C", REPO_ROOT, "worktree", "add", "--detach", other, args.rev], check=True,
                   capture_output=True)
    failed = []
    try:
        for case in cases:
            ours = run_case(REPO_ROOT, case, args.data_dir, args.steps, os.path.join(scratch, "ours", case))
            theirs = run_case(other, case, args.data_dir, args.steps, os.path.join(scratch, "other_runs", case))
            same = len(ours) == len(theirs) and all(records(a) == records(b) for a, b in zip(ours, theirs))
            count = sum(len(records(path)) for path in ours)
            print(f"{case}: {'identical' if same else 'DIFFERENT'} ({len(ours)} run(s), {count} records)",
                  flush=True)
            if not same:
                failed.append(case)
    finally:
        subprocess.run(["git", "-C", REPO_ROOT, "worktree", "remove", "--force", other], check=False)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
