"""Side-by-side speed of gan_jax and the PyTorch reference, on the same machine in one invocation.

For each round and each batch size it runs the JAX benchmark, then the torch reference, each as a fresh
subprocess (A B A B ...), and prints per batch size the median and min-max steps/s of each side and the
ratio of the medians. Runs alternate because on a shared machine the load changes from minute to minute:
torch at 2 threads was seen to slow 4x to over 10x when other processes took a core (every parallel
region waits for its slowest thread), so back-to-back blocks of A then B would measure the neighbours.

Both sides get the same CPU budget: JAX on CPU uses every core the process may run on, and torch gets
`--threads` equal to that count (`len(os.sched_getaffinity(0))`, so `taskset -c 0,1 python ...` narrows
both). The JAX side is a command template, so a stand-in or a different config can be timed:

    python benchmarks/side_by_side.py --batch_sizes 64,256 --rounds 3 --steps 200 --json /tmp/sbs.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TORCH_REFERENCE = os.path.join(REPO_ROOT, "benchmarks", "torch_reference.py")
DEFAULT_JAX_CMD = ("{python} -m gan_jax.bench --config experiments/mnist.py --batch_sizes {batch_size} "
                   "--steps {steps} --repeats {repeats} --steps_per_call 1 --json {json}")


def visible_cpus() -> int:
    """Cores this process may run on (what JAX's CPU backend uses), not the machine's total."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def run_once(argv: list[str], batch_size: int, json_path: str) -> dict:
    """Runs one benchmark subprocess and returns its JSON record for `batch_size`.

    Exits with the subprocess's output when it fails or writes no such record: a silent gap in the
    table would look like a measurement.
    """
    proc = subprocess.run(argv, cwd=REPO_ROOT, capture_output=True, text=True)
    records = []
    if os.path.exists(json_path):
        with open(json_path) as f:
            records = [json.loads(line) for line in f if line.strip()]
        os.remove(json_path)  # the next run appends to a fresh file
    # The JAX bench may also time other steps_per_call values; this table is about one step per call.
    records = [r for r in records
               if r.get("batch_size") == batch_size and r.get("steps_per_call", 1) == 1]
    if proc.returncode != 0 or not records:
        sys.exit(f"benchmark failed (exit {proc.returncode}): {shlex.join(argv)}\n"
                 f"{proc.stdout[-2000:]}{proc.stderr[-4000:]}")
    return records[-1]


def summarize(values: list[float]) -> str:
    return f"{statistics.median(values):8.2f} ({min(values):.2f}-{max(values):.2f})"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_sizes", default="64,256", help="comma-separated global batch sizes")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each side per batch size")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per repeat, both sides")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed repeats inside each run, both sides; a run reports their median")
    parser.add_argument("--threads", type=int, default=visible_cpus(),
                        help="torch threads (default: the cores JAX will use)")
    parser.add_argument("--jax_cmd", default=DEFAULT_JAX_CMD,
                        help="JAX command template; fields {python} {batch_size} {steps} {repeats} {json}")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the JAX side")
    parser.add_argument("--torch_python", default=sys.executable,
                        help="interpreter with torch installed, for the torch side")
    parser.add_argument("--torch_args", default="",
                        help="extra torch_reference.py flags, e.g. '--compile' or '--data-dir DIR'")
    parser.add_argument("--json", help="write one JSON line per batch size to this file")
    args = parser.parse_args()
    try:
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        parser.error(f"--batch_sizes: expected comma-separated integers, got {args.batch_sizes!r}")
    if min(args.rounds, args.steps, args.repeats, args.threads, *args.batch_sizes) < 1:
        parser.error("--rounds, --steps, --repeats, --threads and every batch size must be >= 1")
    return args


def main() -> None:
    args = parse_args()
    results: dict[int, dict[str, list[dict]]] = {b: {"jax": [], "torch": []} for b in args.batch_sizes}
    with tempfile.TemporaryDirectory() as tmp:
        json_path = os.path.join(tmp, "run.jsonl")
        # Rounds outermost, so each configuration's runs are spread over the whole invocation.
        for round_index in range(args.rounds):
            for batch_size in args.batch_sizes:
                fields = {"python": shlex.quote(args.python), "batch_size": batch_size,
                          "steps": args.steps, "repeats": args.repeats, "json": shlex.quote(json_path)}
                jax_argv = shlex.split(args.jax_cmd.format(**fields))
                torch_argv = [args.torch_python, TORCH_REFERENCE, "--batch-size", str(batch_size),
                              "--steps", str(args.steps), "--repeats", str(args.repeats),
                              "--threads", str(args.threads),
                              "--json", json_path, *shlex.split(args.torch_args)]
                for side, argv in (("jax", jax_argv), ("torch", torch_argv)):
                    record = run_once(argv, batch_size, json_path)
                    record["load_average_1m"] = os.getloadavg()[0]  # to tell a busy neighbour later
                    results[batch_size][side].append(record)
                    print(f"round {round_index + 1}/{args.rounds} batch {batch_size:5d} {side:5s} "
                          f"{record['steps_per_s']:8.2f} steps/s  (load {os.getloadavg()[0]:.2f})",
                          file=sys.stderr, flush=True)

    first_jax = results[args.batch_sizes[0]]["jax"][0]
    if first_jax.get("platform", "cpu") != "cpu":
        print(f"note: JAX ran on {first_jax.get('device_kind')}, torch on the CPU", file=sys.stderr)
    print(f"JAX {first_jax.get('jax_version', '?')} on {first_jax.get('device_kind', '?')}, torch "
          f"{results[args.batch_sizes[0]]['torch'][0]['torch_version']} at {args.threads} threads; "
          f"{args.rounds} rounds, each run the median of {args.repeats} x {args.steps} steps; "
          "steps/s median (min-max) over rounds")
    print(f"{'batch':>6}  {'JAX steps/s':>22}  {'torch steps/s':>22}  {'JAX/torch':>9}")
    rows = []
    for batch_size in args.batch_sizes:
        jax_rates = [r["steps_per_s"] for r in results[batch_size]["jax"]]
        torch_rates = [r["steps_per_s"] for r in results[batch_size]["torch"]]
        ratio = statistics.median(jax_rates) / statistics.median(torch_rates)
        print(f"{batch_size:6d}  {summarize(jax_rates):>22}  {summarize(torch_rates):>22}  {ratio:9.2f}")
        rows.append({"batch_size": batch_size, "rounds": args.rounds, "steps": args.steps,
                     "repeats": args.repeats,
                     "threads": args.threads, "jax_steps_per_s": jax_rates,
                     "torch_steps_per_s": torch_rates,
                     "jax_median": statistics.median(jax_rates),
                     "torch_median": statistics.median(torch_rates), "ratio_jax_over_torch": ratio,
                     "jax_runs": results[batch_size]["jax"], "torch_runs": results[batch_size]["torch"]})
    if args.json:
        with open(args.json, "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)


if __name__ == "__main__":
    main()
