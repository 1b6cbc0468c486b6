"""The measuring half of benchmarks/device_check.sh: step speed, sweeps and one epoch with its FID, on
whatever accelerator JAX finds, written as one JSON and one markdown report.

    python benchmarks/device_check.py --out DIR [--data_dir MNIST_DIR] [--seconds 270] [--quick]

`--seconds` is this process's whole budget, counted from its start (imports included). Each part has a
deadline inside it (speed until 45% of it, sweeps until 70%, the epoch until 95%) and stops adding rows
once it passes; a part that fails is recorded in the report's `errors` and the next part runs. The
report (`device_check.json`, `device_check.md` in `--out`) is written again after every row, so a
process killed from outside (the shell script's timeout) leaves what it had measured.

The speed and sweep parts call the real benchmark's functions in this process (`gan_jax.bench.bench_one`
and `bench_sweep`), in order of interest, so a budget cut short keeps the most telling rows: one step
per call before 10 and 50, float32 beside bfloat16; one run alone once, then 4 runs in every form before
8. The epoch runs the real commands as subprocesses (`gan_jax.train` for one epoch of
experiments/mnist_tuned.py, then `gan_jax.evaluate` on 10,000 samples), under the part's deadline: at it
the trainer gets SIGTERM (it saves and stops), then SIGKILL 20 s later.

`--quick` shrinks everything (batch 8, 2 timed steps, 1 repeat, sweeps of 2 runs, 4 training steps of
the epoch's config and 200 samples) to check the script itself on a CPU in a minute or two.
"""

from __future__ import annotations

import time

START = time.monotonic()  # the budget counts from here, before the imports below

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import traceback  # noqa: E402

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)

# How each part's rows are ordered: the first ones matter most (a deadline cuts the tail).
FULL = {"steps_per_call": (1, 10, 50), "dtypes": ("float32", "bfloat16"), "batch_sizes": (64, 256, 1024),
        "steps": 100, "repeats": 3, "sweep_runs": (4, 8), "sweep_forms": ("vmap", "unrolled", "map"),
        "sweep_batch": 64, "epoch_overrides": ["--config.num_epochs=1"], "eval_samples": 10_000}
QUICK = {"steps_per_call": (1, 2), "dtypes": ("float32", "bfloat16"), "batch_sizes": (8,),
         "steps": 2, "repeats": 1, "sweep_runs": (2,), "sweep_forms": ("vmap", "unrolled", "map"),
         "sweep_batch": 8, "epoch_overrides": ["--config.num_steps=4", "--config.log_every=2",
                                               "--config.sample_every=4", "--config.checkpoint_every=4"],
         "eval_samples": 200}
# The parts, each with the fraction of the budget (from START) at which it stops adding rows.
DEADLINES = {"speed": 0.45, "sweeps": 0.70, "epoch": 0.95}


class Report:
    """The report, written whole to OUT/device_check.{json,md} every time it changes."""

    def __init__(self, out: str, header: dict):
        self.out, self.data = out, {**header, "speed": [], "sweeps": [], "epoch": None, "errors": {},
                                    "skipped": {}}
        self.save()

    def add(self, part: str, row: dict) -> None:
        self.data[part].append(row)
        self.save()

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.monotonic() - START, 1)
        for name, text in (("device_check.json", json.dumps(self.data, indent=2) + "\n"),
                           ("device_check.md", markdown(self.data))):
            temporary = os.path.join(self.out, name + ".tmp")
            with open(temporary, "w") as f:
                f.write(text)
            os.replace(temporary, os.path.join(self.out, name))  # never half a report


def _tail(path: str, lines: int = 3) -> str:
    try:
        with open(path) as f:
            return "\n".join([line.rstrip() for line in f if line.strip()][-lines:])
    except OSError as e:
        return f"(unreadable: {e})"


def _config(batch_size: int, steps_per_call: int, dtype: str):
    from gan_jax import config as config_lib
    config = config_lib.load_config_file(os.path.join(REPO_ROOT, "experiments", "mnist.py"))
    config.batch_size, config.steps_per_call = batch_size, steps_per_call
    config.log_every = config.sample_every = config.checkpoint_every = steps_per_call
    config.model.compute_dtype = dtype
    return config


def _out_of_time(report: Report, part: str, deadline: float, left: list) -> bool:
    if time.monotonic() <= deadline:
        return False
    report.data["skipped"][part] = f"{len(left)} rows not run (the part's deadline passed): {left}"
    report.save()
    return True


def speed(report: Report, images, plan: dict, deadline: float) -> None:
    from gan_jax import bench
    rows = [(k, batch, dtype) for k in plan["steps_per_call"] for batch in plan["batch_sizes"]
            for dtype in plan["dtypes"]]
    for index, (k, batch_size, dtype) in enumerate(rows):
        if _out_of_time(report, "speed", deadline, rows[index:]):
            return
        row = bench.bench_one(_config(batch_size, k, dtype), images, num_steps=plan["steps"],
                              repeats=plan["repeats"], loop="auto")
        print(f"step {dtype} batch {batch_size} K {k}: {row['steps_per_s']:.1f} steps/s "
              f"(compile {row['compile_s']:.1f} s)", flush=True)
        report.add("speed", row)


def sweeps(report: Report, images, plan: dict, deadline: float) -> None:
    """One run alone once (it is the same program whatever the form), then each run count in each form."""
    from gan_jax import bench
    config = _config(plan["sweep_batch"], 1, "float32")
    rows = [(1, "alone")] + [(runs, form) for runs in plan["sweep_runs"] for form in plan["sweep_forms"]]
    for index, (runs, form) in enumerate(rows):
        if _out_of_time(report, "sweeps", deadline, rows[index:]):
            return
        if runs == 1:
            row = bench.bench_one(config, images, num_steps=plan["steps"], repeats=plan["repeats"],
                                  loop="auto")
            row.update(runs=1, sweep_form="alone", run_steps_per_s=row["steps_per_s"])
        else:
            row = bench.bench_sweep(config, images, runs, num_steps=plan["steps"],
                                    repeats=plan["repeats"], form=form)
        print(f"sweep {row['sweep_form']} {runs} runs: {row['run_steps_per_s']:.1f} run-steps/s "
              f"(compile {row['compile_s']:.1f} s)", flush=True)
        report.add("sweeps", row)


def _run_until(argv: list[str], deadline: float, log_path: str) -> tuple[int | None, float]:
    """Runs a command until it ends or the deadline: then SIGTERM (the trainer saves and stops), and
    SIGKILL 20 s later. Returns (exit code, or None when it was stopped; seconds)."""
    start = time.monotonic()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get("PYTHONPATH", "")]))
    with open(log_path, "a") as log:
        process = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        try:
            code = process.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            code = None
    return code, time.monotonic() - start


def epoch(report: Report, data_dir: str, plan: dict, deadline: float) -> None:
    """One epoch of the tuned config through `gan_jax.train`, then its FID through `gan_jax.evaluate`."""
    workdir = tempfile.mkdtemp(prefix="device_check_epoch_")
    log_path = os.path.join(report.out, "epoch.log")
    train = [sys.executable, "-m", "gan_jax.train", "--config",
             os.path.join(REPO_ROOT, "experiments", "mnist_tuned.py"), "--config.data.source=idx",
             f"--config.data.dir={data_dir}", *plan["epoch_overrides"], f"--workdir={workdir}"]
    code, train_s = _run_until(train, deadline, log_path)
    result = {"command": " ".join(train[1:]), "train_seconds": round(train_s, 1), "workdir": workdir}
    if code != 0:
        report.data["epoch"] = result
        raise RuntimeError(f"gan_jax.train {'did not end before the deadline' if code is None else f'exited {code}'}"
                           f" after {train_s:.0f} s (see epoch.log)")
    metrics_path = os.path.join(workdir, "device_check_eval.json")
    evaluate = [sys.executable, "-m", "gan_jax.evaluate", f"--workdir={workdir}",
                f"--num_samples={plan['eval_samples']}", f"--json={metrics_path}"]
    code, eval_s = _run_until(evaluate, deadline, log_path)
    result["eval_seconds"] = round(eval_s, 1)
    if code != 0:
        report.data["epoch"] = result
        raise RuntimeError(f"gan_jax.evaluate {'did not end before the deadline' if code is None else f'exited {code}'}"
                           f" after {eval_s:.0f} s (see epoch.log)")
    with open(metrics_path) as f:
        metrics = json.load(f)
    result.update(num_samples=metrics.get("num_samples"), fid=metrics.get("fid"), score=metrics.get("score"))
    print(f"epoch: trained in {train_s:.1f} s, FID {result['fid']:.1f} ({result['num_samples']} samples)",
          flush=True)
    shutil.rmtree(workdir, ignore_errors=True)  # kept only when something failed
    result["workdir"] = None
    report.data["epoch"] = result
    report.save()


def markdown(report: dict) -> str:
    lines = [f"# Device check: {report.get('device', '?')}", "",
             f"This driver's budget: {report['budget_s']:.0f} s{' (--quick)' if report['quick'] else ''}; "
             f"report written {report['elapsed_s']:.0f} s after its start.", ""]
    for name, text in report.get("notes", {}).items():
        lines += [f"{name}:", "", *[f"    {line}" for line in text.splitlines()], ""]
    if report["speed"]:
        lines += ["| dtype | batch | K | steps/s (min-max) | images/s | compile s |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {r['compute_dtype']} | {r['batch_size']} | {r['steps_per_call']} | "
                  f"{r['steps_per_s']:.1f} ({r['steps_per_s_min']:.1f}-{r['steps_per_s_max']:.1f}) | "
                  f"{r['images_per_s']:.0f} | {r['compile_s']:.1f} |" for r in report["speed"]]
        lines.append("")
    if report["sweeps"]:
        alone = next((r["run_steps_per_s"] for r in report["sweeps"] if r["runs"] == 1), None)
        lines += ["| form | runs | run-steps/s | x one run alone | compile s |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['sweep_form']} | {r['runs']} | {r['run_steps_per_s']:.1f} | "
                  f"{r['run_steps_per_s'] / alone:.2f} | {r['compile_s']:.1f} |" if alone else
                  f"| {r['sweep_form']} | {r['runs']} | {r['run_steps_per_s']:.1f} | | {r['compile_s']:.1f} |"
                  for r in report["sweeps"]]
        lines.append("")
    e = report.get("epoch")
    if e and e.get("fid") is not None:
        lines += [f"Epoch: `{e['command']}` trained in {e['train_seconds']:.1f} s (start-up and compile "
                  f"included); `gan_jax.evaluate` on {e['num_samples']} samples: FID {e['fid']:.1f}, "
                  f"score {e['score']:.2f} ({e['eval_seconds']:.1f} s).", ""]
    for part, why in report["skipped"].items():
        lines.append(f"- {part}: {why}")
    for part, error in report["errors"].items():
        lines.append(f"- {part} FAILED: {error.splitlines()[0]}")
    return "\n".join(lines).rstrip() + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--data_dir", default="", help="MNIST's IDX files, for the epoch (else skipped)")
    parser.add_argument("--seconds", type=float, default=270,
                        help="this process's budget, from its start, imports included")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script")
    parser.add_argument("--note", action="append", default=[], metavar="FILE",
                        help="a file whose last lines go into the report (the shell script's test "
                        "summary and JAX's devices); repeatable")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    plan = QUICK if args.quick else FULL
    report = Report(args.out, {"device": "not known yet (importing JAX)", "budget_s": args.seconds,
                               "quick": args.quick, "notes": {os.path.basename(path): _tail(path)
                                                              for path in args.note}})
    images = None

    def setup(deadline: float) -> None:
        del deadline  # the imports and the data: as long as they take
        nonlocal images
        import jax
        from gan_jax import bench, cli
        cli.setup_logging()
        report.data["device"] = (f"{jax.devices()[0].device_kind} x{jax.device_count()} "
                                 f"({jax.default_backend()}), jax {jax.__version__}")
        images = bench.bench_images(_config(64, 1, "float32"), real_data=False)
        report.save()

    parts = [("setup", setup, 0.20),
             ("speed", lambda d: speed(report, images, plan, d), DEADLINES["speed"]),
             ("sweeps", lambda d: sweeps(report, images, plan, d), DEADLINES["sweeps"]),
             ("epoch", lambda d: epoch(report, args.data_dir, plan, d), DEADLINES["epoch"])]
    for name, part, fraction in parts:
        if name == "epoch" and not args.data_dir:
            report.data["skipped"]["epoch"] = "no --data_dir (MNIST's IDX files)"
            report.save()
            continue
        if name != "setup" and images is None:
            report.data["skipped"][name] = "setup failed"
            report.save()
            continue
        try:
            part(START + fraction * args.seconds)
        except Exception as e:  # noqa: BLE001  (each part's failure is recorded; the next part runs)
            report.data["errors"][name] = f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=8)}"
            report.save()
            print(f"{name} FAILED: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
    report.save()
    print(markdown(report.data), flush=True)
    return 1 if report.data["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
