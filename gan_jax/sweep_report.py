"""A sweep's results side by side: each run's evaluation, and per group of runs that differ only in
their seed, each metric's mean +- std and min-max (`python -m gan_jax.evaluate --workdir SWEEP`).
"""

from __future__ import annotations

import statistics
from typing import Any

# Metrics summarized per group, and how many decimals they are printed with.
SUMMARIZED = {"fid": 2, "kid": 2, "score": 3, "precision": 4, "recall": 4, "coverage_entropy": 4,
              "cond_acc": 4, "intra_fid": 2, "d_acc": 4}


def _values_label(values: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value:g}" for key, value in sorted(values.items())) or "(no varied key)"


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Groups the runs' rows by their varied values; per group and metric: mean, std, min, max.

    Args:
      rows: one per run, {"name", "seed", "values": {key: value}, <metric>: float, ...}.

    Returns:
      One dict per group, in the order the groups first appear: {"values", "seeds", "runs",
      <metric>: {"mean", "std", "min", "max"}}; std is the sample standard deviation (0 for one run).
    """
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(sorted(row["values"].items())), []).append(row)
    summary = []
    for members in groups.values():
        group = {"values": members[0]["values"], "seeds": [m["seed"] for m in members],
                 "runs": [m["name"] for m in members]}
        for metric in SUMMARIZED:
            values = [m[metric] for m in members if metric in m]
            if values:
                group[metric] = {"mean": statistics.fmean(values),
                                 "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                                 "min": min(values), "max": max(values)}
        summary.append(group)
    return summary


def format_report(rows: list[dict[str, Any]], groups: list[dict[str, Any]]) -> str:
    """The runs, one line each, then the groups: mean +- std [min-max] of each metric."""
    metrics = [m for m in SUMMARIZED if any(m in row for row in rows)]
    widths = {m: max(len(m), 9) for m in metrics}
    lines = ["runs:", "  " + "  ".join([f"{'run':<8}", f"{'seed':>4}", f"{'step':>7}",
                                        *(f"{m:>{widths[m]}}" for m in metrics), "values"])]
    for row in rows:
        cells = [f"{row['name']:<8}", f"{row['seed']:>4}", f"{row['step']:>7}"]
        cells += [f"{row[m]:>{widths[m]}.{SUMMARIZED[m]}f}" for m in metrics]
        lines.append("  " + "  ".join(cells + [_values_label(row["values"])]))
    lines.append("groups (runs that differ only in their seed): mean +- std [min-max]")
    for group in groups:
        lines.append(f"  {_values_label(group['values'])}: {len(group['seeds'])} seeds "
                     f"({', '.join(map(str, group['seeds']))})")
        for metric in metrics:
            s, d = group[metric], SUMMARIZED[metric]
            lines.append(f"    {metric:<17} {s['mean']:.{d}f} +- {s['std']:.{d}f}  "
                         f"[{s['min']:.{d}f}-{s['max']:.{d}f}]")
    return "\n".join(lines)
