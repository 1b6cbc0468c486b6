"""What the benchmarks read off a process and a compiled step: peak memory (device or process), XLA's
cost and memory analysis, the resident memory of this process, a `jax.profiler` trace, and the rate of
repeated calls. `gan_jax.bench` (and the scripts in benchmarks/) measure with these; nothing here
trains.
"""

from __future__ import annotations

import resource
import time
from typing import Any

import jax

from gan_jax.errors import UserError


def peak_memory_bytes() -> tuple[int, str]:
    """Peak device memory where the backend reports it, else this process's peak RSS."""
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "process RSS"


def xla_analysis(compiled) -> dict[str, Any]:
    """XLA's own account of a compiled step: its cost analysis (flops, bytes accessed) and memory
    analysis (argument, output and temporary bytes); a field the backend does not report is None."""
    cost = compiled.cost_analysis()
    cost = (cost[0] if cost else {}) if isinstance(cost, list) else (cost or {})
    memory = compiled.memory_analysis()
    fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
              "alias_size_in_bytes", "generated_code_size_in_bytes")
    return {"xla_flops": cost.get("flops"), "xla_bytes_accessed": cost.get("bytes accessed"),
            **{f"xla_{name.removesuffix('_in_bytes')}_bytes": getattr(memory, name, None)
               for name in fields}}


def profile_calls(call, states, calls: int, directory: str):
    """A `jax.profiler` trace of `calls` calls of `states, metrics = call(states)` into `directory`
    (TensorBoard's profile plugin, XProf and Perfetto open it), each call annotated as a step."""
    with jax.profiler.trace(directory):
        for number in range(calls):
            with jax.profiler.StepTraceAnnotation("train", step_num=number):
                states, metrics = call(states)
        jax.block_until_ready((states, metrics))
    return states


def resident_kib(field: str) -> int:
    """A /proc/self/status field in KiB (VmRSS: now, VmHWM: the peak since the last reset)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise UserError(f"/proc/self/status has no {field} (the epoch's memory needs Linux)")


def time_calls(call, state, calls: int, repeats: int) -> tuple[list[float], Any, Any]:
    """Calls/s of `state, metrics = call(state)`: one untimed warm-up call, then `repeats` timed runs
    of `calls` calls, each ending when the device is done. Returns the rates, the last metrics and
    the last state (the input state is donated)."""
    state, metrics = call(state)
    jax.block_until_ready(metrics)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            state, metrics = call(state)
        jax.block_until_ready((state, metrics))
        rates.append(calls / (time.perf_counter() - start))
    return rates, metrics, state
