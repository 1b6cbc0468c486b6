"""Step speed of config.parallel's modes (jit, pmap, shard_map) on fake CPU devices, in one invocation.

For each round it runs `python -m gan_jax.bench` once per (devices, mode), each a fresh subprocess whose
XLA_FLAGS hold `--xla_force_host_platform_device_count=N` (fake CPU devices must be asked for before JAX
starts), and prints per (mode, devices, batch) the median over rounds of each run's median steps/s and
the min-max over rounds, with the ratio to pmap on as many devices. Runs alternate, and every other
round goes in reverse order, because on a shared machine the load changes from minute to minute.

`--alternate_calls` compares the modes inside one process instead (on one device count): it compiles
each mode's step (the trainer's, built as `gan_jax.bench` builds it) and then alternates blocks of
`--steps` steps of each, every other round in reverse order, so that minute-to-minute load falls on every
mode alike; each block's steps/s is one sample. Separate processes each see their own load; on a
crowded machine this is the fairer comparison of the modes against each other.

One device runs one mode only: a lone run on one device always compiles the plain `jax.jit` step
(`training.parallel.Layout.for_config` ignores config.parallel there), so timing the other modes on it
would time the same program again.

    python benchmarks/parallel_modes.py --devices 1,4 --batch_sizes 64,256 --steps 50 --repeats 3 \
        --rounds 3 [--json FILE]
    python benchmarks/parallel_modes.py --alternate_calls --devices 4 --batch_sizes 64,256 --steps 10 \
        --rounds 6
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
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODES = ("jit", "pmap", "shard_map")
ONE_DEVICE = "jit"  # what any mode compiles to on one device


def bench_command(args: argparse.Namespace, mode: str, devices: int, json_path: str) -> list[str]:
    return [args.python, "-m", "gan_jax.bench", "--config", args.config,
            "--batch_sizes", args.batch_sizes, "--steps", str(args.steps), "--repeats", str(args.repeats),
            "--steps_per_call", "1", f"--config.parallel={mode}", f"--config.num_devices={devices}",
            "--json", json_path]


def run_once(args: argparse.Namespace, mode: str, devices: int) -> tuple[list[dict], str | None]:
    """One bench subprocess on `devices` fake devices: (its JSON rows, None) or ([], why it failed)."""
    with tempfile.TemporaryDirectory() as folder:
        json_path = os.path.join(folder, "bench.jsonl")
        argv = bench_command(args, mode, devices, json_path)
        env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                                          f" --xla_force_host_platform_device_count={devices}").strip())
        try:
            proc = subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                                  timeout=args.timeout)
        except subprocess.TimeoutExpired:
            return [], f"timed out after {args.timeout} s: {shlex.join(argv)}"
        rows = []
        if os.path.exists(json_path):
            with open(json_path) as f:
                rows = [json.loads(line) for line in f if line.strip()]
        if proc.returncode != 0 or not rows:
            return [], (f"exit {proc.returncode}: {shlex.join(argv)}\n"
                        f"{proc.stderr[-3000:]}")
        return rows, None


def alternate_calls(args: argparse.Namespace, modes: list[str], devices: int,
                    batch_sizes: list[int]) -> dict[tuple[str, int, int], list[float]]:
    """In this process, on `devices` fake devices: per batch size, each mode's compiled step, then
    `--rounds` rounds of `--steps` steps of each mode in turn. Returns each block's steps/s."""
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={devices}").strip()
    sys.path.insert(0, REPO_ROOT)
    import jax  # after XLA_FLAGS

    from gan_jax import bench, cli
    from gan_jax import config as config_lib
    from gan_jax.training import devices as devices_lib
    from gan_jax.training import steps
    from gan_jax.training.parallel import Layout, ParallelStep
    from gan_jax.training.spec import GANSpec, hyperparams
    from gan_jax.training.state import create_train_state

    cli.tune_cpu_runtime()  # as gan_jax.train and gan_jax.bench do
    base = config_lib.load_config_file(os.path.join(REPO_ROOT, args.config))
    images = bench.bench_images(base, real_data=False)
    print(f"{jax.device_count()} {jax.default_backend()} devices, jax {jax.__version__}", flush=True)
    rates: dict[tuple[str, int, int], list[float]] = {}
    for batch_size in batch_sizes:
        running = {}
        for mode in modes:
            config = base.copy_and_resolve_references()
            with config.unlocked():
                config.batch_size, config.num_devices, config.parallel = batch_size, devices, mode
            config_lib.validate(config)
            layout = Layout.for_config(config)
            spec = GANSpec.from_config(config, **layout.spec_options())
            parallel = ParallelStep(layout, spec, [hyperparams(config)])
            state = create_train_state(spec, config.seed)
            orders = steps.data_orders(state.key, 0, len(images))
            states = parallel.put_states([devices_lib.to_host(state)])
            data = parallel.with_orders(parallel.put_data(images, None), [orders])
            start = time.perf_counter()
            step, _ = parallel.compile_ahead(1, states, data)
            states, metrics = step(states, data)  # the untimed warm-up call
            jax.block_until_ready(metrics)
            print(f"batch {batch_size}: {layout.describe()} compiled and warmed up in "
                  f"{time.perf_counter() - start:.1f} s", flush=True)
            running[mode] = (step, states, data)
        for round_number in range(args.rounds):
            for mode in (modes if round_number % 2 == 0 else modes[::-1]):
                step, states, data = running[mode]
                start = time.perf_counter()
                for _ in range(args.steps):
                    states, metrics = step(states, data)
                jax.block_until_ready((states, metrics))
                rate = args.steps / (time.perf_counter() - start)
                running[mode] = (step, states, data)
                rates.setdefault((mode, devices, batch_size), []).append(rate)
                print(f"batch {batch_size}, round {round_number + 1}: {mode} {rate:.2f} steps/s",
                      flush=True)
        del running
    return rates


def summarize(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/mnist.py")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated config.parallel values")
    parser.add_argument("--devices", default="1,4", help="comma-separated fake CPU device counts")
    parser.add_argument("--batch_sizes", default="64,256", help="comma-separated global batch sizes")
    parser.add_argument("--steps", type=int, default=50, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats inside each run")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each (devices, mode)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds one run may take")
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--json", help="append one JSON line per (mode, devices, batch) to this file")
    parser.add_argument("--alternate_calls", action="store_true",
                        help="alternate the modes' steps in this process (one device count) instead "
                        "of alternating bench subprocesses")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        sys.exit(f"unknown modes {sorted(unknown)}; expected some of {', '.join(MODES)}")
    device_counts = [int(n) for n in args.devices.split(",") if n]
    if args.alternate_calls:
        if len(device_counts) != 1 or device_counts[0] < 2:
            sys.exit("--alternate_calls takes one device count of 2 or more (--devices 4)")
        print("in one process, alternating blocks of "
              f"{args.steps} steps: {shlex.join(sys.argv)}", flush=True)
        rates = alternate_calls(args, modes, device_counts[0],
                                [int(b) for b in args.batch_sizes.split(",") if b])
        print_table(args, rates, "blocks")
        return 0
    cells = [(ONE_DEVICE if n == 1 else mode, n) for n in device_counts
             for mode in (modes[:1] if n == 1 else modes)]
    print(f"{len(cells)} runs per round, {args.rounds} rounds; one device: any mode runs plain jit")
    print("each run: " + shlex.join(bench_command(args, "MODE", 0, "FILE")).replace(
        "num_devices=0", "num_devices=N") + "  (XLA_FLAGS=--xla_force_host_platform_device_count=N)",
        flush=True)
    rates: dict[tuple[str, int, int], list[float]] = {}
    failures = []
    for round_number in range(args.rounds):
        order = cells if round_number % 2 == 0 else cells[::-1]
        for mode, devices in order:
            start = time.perf_counter()
            rows, error = run_once(args, mode, devices)
            if error:
                failures.append(error)
                print(f"round {round_number + 1}: {mode} on {devices} device(s) FAILED: "
                      f"{error.splitlines()[0]}", flush=True)
                continue
            for row in rows:
                rates.setdefault((mode, devices, row["batch_size"]), []).append(row["steps_per_s"])
            print(f"round {round_number + 1}: {mode} on {devices} device(s), "
                  f"{time.perf_counter() - start:.0f} s: " + ", ".join(
                      f"batch {r['batch_size']} {r['steps_per_s']:.2f} steps/s" for r in rows),
                  flush=True)
    print_table(args, rates, "rounds")
    for error in failures:
        print(f"\nFAILED {error}", file=sys.stderr)
    return 1 if failures else 0


def print_table(args: argparse.Namespace, rates: dict[tuple[str, int, int], list[float]],
                samples: str) -> None:
    """Per (mode, devices, batch): the median of the samples (each run's median, or each block's
    rate) and their min-max, and the ratio of medians to pmap on as many devices."""
    print()
    print(f"| mode | devices | batch | steps/s, median over {samples} (min-max) | vs pmap | {samples} |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (mode, devices, batch), values in sorted(rates.items(), key=lambda item: (item[0][1],
                                                                                  item[0][2],
                                                                                  item[0][0])):
        pmap = rates.get(("pmap", devices, batch))
        versus = (f"{statistics.median(values) / statistics.median(pmap):.2f}"
                  if pmap and devices > 1 else "")
        label = mode if devices > 1 else "any (plain jit)"
        print(f"| {label} | {devices} | {batch} | {summarize(values)} | {versus} | {len(values)} |")
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps({"mode": mode, "devices": devices, "batch_size": batch,
                                    "steps_per_s_median": statistics.median(values),
                                    "steps_per_s_min": min(values), "steps_per_s_max": max(values),
                                    "samples": samples, "per_sample": values, "steps": args.steps,
                                    "repeats": args.repeats}) + "\n")


if __name__ == "__main__":
    sys.exit(main())
