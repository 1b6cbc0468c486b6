"""`python -m gan_jax.bench`: step throughput of the real train step, for people and for JSON.

    python -m gan_jax.bench --config experiments/mnist.py [--batch_sizes 64,256,1024] [--steps N]
        [--steps_per_call 1,10,50] [--repeats 5] [--loop auto|unrolled|rolled] [--epoch] [--json FILE]
        [--profile DIR]
    python -m gan_jax.bench --config experiments/mnist.py --runs 1,4,8 [--sweep_form auto] ...

It builds the step the trainer runs (`training.parallel.ParallelStep` from the config: same networks,
optimizer, on-device batch gather, donation, devices), on a dataset of the real shape (60,000 random
images unless --real_data), compiles it ahead of time (compile time reported apart), runs one untimed
warm-up call, then times `--repeats` runs of `--steps` steps, each ending in `block_until_ready`, and
reports the median and the spread. Achieved GFLOP/s is measured against the analytic FLOP count of
one step, and against the float32 matmul rate measured on the same device, so the distance to the
floor is visible; the JSON adds XLA's own cost analysis of the compiled step (flops, bytes accessed)
and its memory analysis (argument, output, temporary bytes). `--profile DIR` then traces three calls
of each configuration with `jax.profiler` (a folder per configuration).
Like `gan_jax.train`, the command first tunes the CPU runtime (`cli.tune_cpu_runtime`), so it times
what training runs; `--notune_cpu_runtime` times JAX's defaults instead.

`--epoch` then runs one whole epoch of the real training loop (`gan_jax.train.train_and_evaluate`, with
the config's logging, sampling and checkpoint cadences, into a temporary workdir) at the first batch
size and reports its steps/s and the peak resident memory of the process during that epoch (the
kernel's high-water mark, reset when the epoch starts).

`--runs 1,4,8` times sweeps instead (`gan_jax.sweep`): per batch size, one run alone (the trainer's
step) and a sweep's program of each run count (`--sweep_form`), in run-steps/s (runs x steps/s) and
as a multiple of the run alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import statistics
import tempfile
import time
from typing import Any

from absl import flags
import jax
import ml_collections
import numpy as np

from gan_jax import cli, measure
from gan_jax import config as config_lib
from gan_jax.data import sources
from gan_jax.errors import UserError
from gan_jax.model import flops
from gan_jax.training import clusters, devices, steps
from gan_jax.training.parallel import SWEEP_FORMS, Layout, ParallelStep
from gan_jax.training.spec import GANSpec, hyperparams
from gan_jax.training.state import create_train_state

NUM_TRAIN_IMAGES = 60000


def bench_one(config: ml_collections.ConfigDict, images: np.ndarray, num_steps: int, repeats: int,
              loop: str, profile_dir: str | None = None) -> dict[str, Any]:
    """Times the configured train step; config.batch_size and config.steps_per_call are set. With
    `profile_dir`, then traces a few calls into it."""
    k = config.steps_per_call
    layout = Layout.for_config(config)
    if loop != "auto":
        layout = dataclasses.replace(layout, unroll=loop == "unrolled")
    config_lib.steps_per_epoch(config, len(images))  # checks steps_per_call fits an epoch
    spec = GANSpec.from_config(config, **layout.spec_options())
    parallel = ParallelStep(layout, spec, [hyperparams(config)])
    state = _initial_state(spec, config.seed, images)
    orders = steps.data_orders(state.key, 0, len(images))
    states = parallel.put_states([devices.to_host(state)])
    # Timed runs may pass the first two epochs: they then reuse their orders, which costs the same.
    data = parallel.with_orders(parallel.put_data(images, _labels(config, images)), [orders])
    start = time.perf_counter()
    step, compiled = parallel.compile_ahead(k, states, data)
    compile_s = time.perf_counter() - start
    calls = max(1, -(-num_steps // k))
    rates, metrics, states = measure.time_calls(lambda states: step(states, data), states, calls, repeats)
    if profile_dir:
        name = f"batch{config.batch_size}_k{k}_{config.model.compute_dtype}"
        measure.profile_calls(lambda states: step(states, data), states, 3,
                              os.path.join(profile_dir, name))
    if not all(np.isfinite(m["d_loss"]) for m in parallel.get_metrics(metrics)[0]):
        raise UserError(f"the loss became non-finite while benchmarking batch {config.batch_size}")
    rates = [rate * k for rate in rates]
    steps_per_s = statistics.median(rates)
    step_flops = flops.train_step_flops_per_image(config) * config.batch_size
    memory, memory_kind = measure.peak_memory_bytes()
    return {
        "device_kind": jax.devices()[0].device_kind,
        "platform": jax.default_backend(),
        "device_count": layout.num_devices,
        "jax_version": jax.__version__,
        "batch_size": config.batch_size,
        "steps_per_call": k,
        "loop": "single" if k == 1 else ("unrolled" if layout.unroll else "rolled"),
        "conv_transpose": config.model.conv_transpose,
        "xla_options": devices.compiler_options(),
        "cpu_async_dispatch": bool(jax.config.read("jax_cpu_enable_async_dispatch")),
        "compute_dtype": config.model.compute_dtype,
        "compile_s": compile_s,
        "steps_per_s": steps_per_s,
        "steps_per_s_min": min(rates),
        "steps_per_s_max": max(rates),
        "images_per_s": steps_per_s * config.batch_size,
        "gflop_per_step": step_flops / 1e9,
        "gflops_per_s": steps_per_s * step_flops / 1e9,
        "peak_memory_bytes": memory,
        "peak_memory_kind": memory_kind,
        "timed_steps": calls * k,
        "repeats": repeats,
        **measure.xla_analysis(compiled),
    }


def bench_epoch(config: ml_collections.ConfigDict, images: np.ndarray) -> dict[str, Any]:
    """One epoch of the real training loop; its steps/s and the peak resident memory during it.

    The images are written as an .npz to a temporary folder, which the loop reads like a user's.
    """
    from gan_jax import train  # the whole trainer: only for --epoch
    with tempfile.TemporaryDirectory() as folder:
        data_path = os.path.join(folder, "data.npz")
        np.savez(data_path, images=images,
                 labels=np.arange(len(images)) % max(config.model.num_classes, 1))
        run_config = config.copy_and_resolve_references()
        with run_config.unlocked():
            run_config.data.source, run_config.data.dir = "npz", data_path
            run_config.num_steps = config_lib.steps_per_epoch(run_config, len(images))
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM, the kernel's peak RSS of this process, to the current RSS
        except OSError as e:
            raise UserError(f"cannot reset the peak-memory counter: {e}") from None
        start = time.perf_counter()
        train.train_and_evaluate(run_config, os.path.join(folder, "run"))
        seconds = time.perf_counter() - start
        return {"epoch_steps": run_config.num_steps, "epoch_seconds": seconds,
                "epoch_steps_per_s": run_config.num_steps / seconds,
                "epoch_peak_rss_bytes": measure.resident_kib("VmHWM") * 1024,
                "epoch_end_rss_bytes": measure.resident_kib("VmRSS") * 1024}


def _initial_state(spec: GANSpec, seed: int, images: np.ndarray):
    """A run's state at step 0, as training starts it: self-conditioned, clustered once (the loop does
    that before the first step; the step draws G's classes from the clusters)."""
    state = create_train_state(spec, seed, num_train_images=len(images))
    if not spec.clusters:
        return state
    return state.replace(clusters=clusters.recluster(spec.discriminator, state.discriminator.variables(),
                                                     state.clusters, images, state.key, 0))


def _labels(config: ml_collections.ConfigDict, images: np.ndarray) -> np.ndarray | None:
    """Labels of the benchmark's images for a conditional config (timing ignores their values)."""
    return (np.arange(len(images)) % config.model.num_classes).astype(np.uint8) if (
        config.model.num_classes) else None


def bench_sweep(config: ml_collections.ConfigDict, images: np.ndarray, num_runs: int, num_steps: int,
                repeats: int, form: str) -> dict[str, Any]:
    """Times a sweep's program of `num_runs` runs (seeds 0..R-1, one step per call).

    Returns:
      {"runs", "sweep_form", "compile_s", "steps_per_s" (of the program: each step advances every
      run), "run_steps_per_s" (runs x steps/s), min and max of the latter, "batch_size", ...}.
    """
    layout = Layout.for_config(config, num_runs, form)
    spec = GANSpec.from_config(config, **layout.spec_options())
    parallel = ParallelStep(layout, spec, [hyperparams(config)] * num_runs)
    host_states = [devices.to_host(_initial_state(spec, seed, images)) for seed in range(num_runs)]
    states = parallel.put_states(host_states)
    orders = [steps.data_orders(devices.wrap_key(s.key), 0, len(images)) for s in host_states]
    data = parallel.with_orders(parallel.put_data(images, _labels(config, images)), orders)
    start = time.perf_counter()
    step, _ = parallel.compile_ahead(1, states, data)
    compile_s = time.perf_counter() - start
    rates, metrics, _ = measure.time_calls(lambda states: step(states, data), states, num_steps, repeats)
    if not all(np.isfinite(m["d_loss"]) for run in parallel.get_metrics(metrics) for m in run):
        raise UserError(f"the loss became non-finite while benchmarking {num_runs} runs")
    steps_per_s = statistics.median(rates)
    return {"device_kind": jax.devices()[0].device_kind, "platform": jax.default_backend(),
            "device_count": layout.num_devices, "jax_version": jax.__version__,
            "batch_size": config.batch_size, "runs": num_runs, "sweep_form": layout.form,
            "compile_s": compile_s, "steps_per_s": steps_per_s,
            "run_steps_per_s": num_runs * steps_per_s, "run_steps_per_s_min": num_runs * min(rates),
            "run_steps_per_s_max": num_runs * max(rates), "timed_steps": num_steps,
            "repeats": repeats}


def bench_sweeps(config: ml_collections.ConfigDict, images: np.ndarray, batch_sizes: list[int],
               runs: list[int], num_steps: int, repeats: int, form: str,
               json_path: str | None) -> list[dict]:
    """`--runs`: per batch size, one run alone (the trainer's step) and sweeps of each run count."""
    print(f"{'batch':>6} {'runs':>5} {'form':>9} {'compile s':>9} {'run-steps/s':>12} {'(min-max)':>15} "
          f"{'x one run':>9}")
    rows = []
    for batch_size in batch_sizes:
        run_config = config.copy_and_resolve_references()
        with run_config.unlocked():
            run_config.batch_size, run_config.steps_per_call = batch_size, 1
            run_config.log_every = run_config.sample_every = run_config.checkpoint_every = 1
        config_lib.validate(run_config)
        alone = bench_one(run_config, images, num_steps, repeats, loop="auto")
        single = alone["steps_per_s"]
        spread = f"({alone['steps_per_s_min']:.2f}-{alone['steps_per_s_max']:.2f})"
        print(f"{batch_size:>6} {1:>5} {'alone':>9} {alone['compile_s']:>9.1f} {single:>12.2f} "
              f"{spread:>15} {1.0:>9.2f}", flush=True)
        rows.append({**alone, "runs": 1, "sweep_form": "alone", "run_steps_per_s": single})
        for num_runs in runs:
            row = bench_sweep(run_config, images, num_runs, num_steps, repeats, form)
            spread = f"({row['run_steps_per_s_min']:.2f}-{row['run_steps_per_s_max']:.2f})"
            print(f"{batch_size:>6} {num_runs:>5} {row['sweep_form']:>9} {row['compile_s']:>9.1f} "
                  f"{row['run_steps_per_s']:>12.2f} {spread:>15} {row['run_steps_per_s'] / single:>9.2f}",
                  flush=True)
            rows.append(row)
    if json_path:
        with open(json_path, "a") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
    return rows


def bench_images(config: ml_collections.ConfigDict, real_data: bool) -> np.ndarray:
    """The config's training split, or random images of its shape (timing ignores pixel values)."""
    if real_data:
        return sources.load_split(config.data, "train").images
    shape = (NUM_TRAIN_IMAGES, *config_lib.image_shape(config))
    return np.asarray(jax.random.randint(jax.random.key(0), shape, 0, 256), np.uint8)


def bench_steps(config: ml_collections.ConfigDict, images: np.ndarray, batch_sizes: list[int],
                steps_per_call: list[int], num_steps: int, repeats: int, loop: str,
                json_path: str | None, epoch: bool = False,
                profile_dir: str | None = None) -> list[dict]:
    per_image = flops.train_step_flops_per_image(config)
    matmul = flops.matmul_gflops()
    print(f"device: {jax.devices()[0].device_kind} ({jax.default_backend()}) x{jax.device_count()}, "
          f"jax {jax.__version__}; one step = {per_image / 1e9:.4f} GFLOP per image (analytic); "
          f"float32 matmul {matmul:.0f} GFLOP/s measured")
    options = devices.compiler_options()
    print("XLA options of the step: " + (" ".join(f"{k}={v}" for k, v in options.items()) or "defaults"))
    if jax.default_backend() == "cpu" and max(steps_per_call) > 1:
        print("steps_per_call > 1: a rolled loop unless model.conv_transpose=xla (XLA:CPU canonicalizes "
              "convolutions only outside loops; jax's own conv gradients would run as naive loops)")
    header = (f"{'batch':>6} {'K':>4} {'loop':>8} {'compile s':>9} {'steps/s':>9} {'(min-max)':>15} "
              f"{'images/s':>9} {'GFLOP/s':>8} {'% matmul':>8} {'peak MiB':>9}")
    print(header)
    rows = []
    for batch_size in batch_sizes:
        for k in steps_per_call:
            run_config = config.copy_and_resolve_references()
            with run_config.unlocked():
                run_config.batch_size, run_config.steps_per_call = batch_size, k
                run_config.log_every = run_config.sample_every = run_config.checkpoint_every = k
            config_lib.validate(run_config)
            row = bench_one(run_config, images, num_steps, repeats, loop, profile_dir)
            row["matmul_gflops_per_s"] = matmul
            row["fraction_of_matmul"] = row["gflops_per_s"] / matmul
            rows.append(row)
            spread = f"({row['steps_per_s_min']:.2f}-{row['steps_per_s_max']:.2f})"
            print(f"{batch_size:>6} {k:>4} {row['loop']:>8} {row['compile_s']:>9.1f} "
                  f"{row['steps_per_s']:>9.2f} {spread:>15} {row['images_per_s']:>9.0f} "
                  f"{row['gflops_per_s']:>8.1f} {100 * row['fraction_of_matmul']:>7.1f}% "
                  f"{row['peak_memory_bytes'] / 2**20:>9.0f}", flush=True)
            if json_path:
                with open(json_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
    if epoch:
        run_config = config.copy_and_resolve_references()
        with run_config.unlocked():
            run_config.batch_size = batch_sizes[0]
        config_lib.validate(run_config)
        row = bench_epoch(run_config, images)
        print(f"one epoch of the training loop at batch {batch_sizes[0]}: {row['epoch_steps']} steps "
              f"in {row['epoch_seconds']:.1f} s ({row['epoch_steps_per_s']:.2f} steps/s, compile and "
              f"start-up included); peak resident memory {row['epoch_peak_rss_bytes'] / 2**20:.0f} MiB",
              flush=True)
        rows.append({"batch_size": batch_sizes[0], **row})
        if json_path:
            with open(json_path, "a") as f:
                f.write(json.dumps(rows[-1]) + "\n")
    return rows


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise UserError(f"expected positive integers, got {text!r}")
    return values


def main(argv) -> int:
    del argv
    values = flags.FLAGS
    cli.setup_logging()
    if values.tune_cpu_runtime:  # before the first computation starts JAX's backend
        cli.tune_cpu_runtime()

    def body() -> None:
        images = bench_images(values.config, values.real_data)
        config = config_lib.with_image_shape(values.config, images.shape)
        if values.runs:
            bench_sweeps(config, images, _int_list(values.batch_sizes), _int_list(values.runs),
                         values.steps, values.repeats, values.sweep_form, values.json)
        else:
            bench_steps(config, images, _int_list(values.batch_sizes),
                        _int_list(values.steps_per_call), values.steps, values.repeats, values.loop,
                        values.json, values.epoch, values.profile)
    return cli.run(body)


def _define_flags() -> None:
    cli.define_config_flag()
    flags.DEFINE_string("batch_sizes", "64,256", "Comma-separated global batch sizes.")
    flags.DEFINE_string("steps_per_call", "1", "Comma-separated training steps per compiled call.")
    flags.DEFINE_integer("steps", 100, "Timed steps per repeat (rounded up to whole calls).")
    flags.DEFINE_integer("repeats", 5, "Timed repeats; the median and the spread are reported.")
    flags.DEFINE_enum("loop", "auto", ["auto", "unrolled", "rolled"],
                      "How K > 1 steps run: auto (the trainer's choice) or forced, to compare.")
    flags.DEFINE_bool("real_data", False, "Load the config's dataset instead of random images.")
    flags.DEFINE_string("runs", None, "Comma-separated run counts: time a sweep's program of that "
                        "many runs (run-steps/s) next to one run alone, instead of the table above.")
    flags.DEFINE_enum("sweep_form", "auto", list(SWEEP_FORMS),
                      "With --runs: how the runs share the program (see gan_jax.training.parallel).")
    flags.DEFINE_bool("epoch", False, "Also run one epoch of the real training loop at the first "
                      "batch size and report its peak resident memory.")
    flags.DEFINE_string("json", None, "Append one JSON object per configuration to this file.")
    flags.DEFINE_string("profile", None, "Also write a jax.profiler trace of 3 calls of each "
                        "configuration into this folder (open it with TensorBoard's profile plugin, "
                        "XProf or Perfetto).")
    flags.DEFINE_bool("tune_cpu_runtime", True,
                      "Tune the CPU runtime as gan_jax.train does (synchronous dispatch, glibc "
                      "keeping freed memory); --notune_cpu_runtime for JAX's defaults.")
    flags.mark_flags_as_required(["config"])


def run_from_command_line() -> None:
    """`python -m gan_jax.bench` and the console script `gan-jax-bench`."""
    cli.start(main, _define_flags)


if __name__ == "__main__":
    run_from_command_line()
