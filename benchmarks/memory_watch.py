"""Resident memory of a command over its whole life, sampled every few seconds (Linux /proc).

    python benchmarks/memory_watch.py --interval 2 --log /tmp/rss.jsonl -- \
        python -m gan_jax.train --config experiments/mnist.py --config.data.source=idx ...

It starts the command, reads the resident set size (VmRSS) of it and of every process it started every
`--interval` seconds, appends one JSON line per sample (`t` seconds since the start, `rss_mib` summed
over the processes) to `--log`, and prints the peak, the time of the peak and the median when the
command ends. The kernel's own peak of the main process (VmHWM) is printed too: it also counts spikes
shorter than the interval. The exit code is the command's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time


def _status_kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:  # the process ended between listing and reading
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    children = []
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = [int(c) for c in f.read().split()]
    except OSError:
        pass
    return children + [d for child in children for d in _descendants(child)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--log", required=True)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command after --")
    start = time.monotonic()
    process = subprocess.Popen(command)
    samples, peak_hwm = [], 0
    with open(args.log, "a") as log:
        while process.poll() is None:
            pids = [process.pid, *_descendants(process.pid)]
            rss_mib = sum(_status_kib(pid, "VmRSS") for pid in pids) / 1024
            peak_hwm = max(peak_hwm, _status_kib(process.pid, "VmHWM"))
            sample = {"t": round(time.monotonic() - start, 1), "rss_mib": round(rss_mib, 1)}
            samples.append(sample)
            log.write(json.dumps(sample) + "\n")
            log.flush()
            time.sleep(args.interval)
    if samples:
        peak = max(samples, key=lambda s: s["rss_mib"])
        print(f"memory_watch: {len(samples)} samples over {samples[-1]['t']:.0f} s; peak RSS "
              f"{peak['rss_mib']:.0f} MiB at {peak['t']:.0f} s; median "
              f"{statistics.median(s['rss_mib'] for s in samples):.0f} MiB; kernel peak (VmHWM) of "
              f"the main process {peak_hwm / 1024:.0f} MiB", file=sys.stderr)
    return process.returncode


if __name__ == "__main__":
    sys.exit(main())
