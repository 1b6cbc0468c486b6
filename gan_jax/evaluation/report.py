"""Evaluations as people read them: one run's metrics as a table (`format_table`), and a sweep's
results side by side, each run's and, per group of runs that differ only in their seed, each metric's
mean +- std and min-max (`summarize`, `format_report`).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from gan_jax.reporting.progress import fixed

# Metrics summarized per group, and how many decimals they are printed with. KID is a squared MMD,
# typically 1e-3 to 1e-1: it needs as many decimals as `format_table` gives it.
SUMMARIZED = {"fid": 2, "kid": 5, "score": 3, "precision": 4, "recall": 4, "coverage_entropy": 4,
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
        cells += [f"{fixed(row[m], SUMMARIZED[m]):>{widths[m]}}" for m in metrics]
        lines.append("  " + "  ".join(cells + [_values_label(row["values"])]))
    lines.append("groups (runs that differ only in their seed): mean +- std [min to max]")
    for group in groups:
        lines.append(f"  {_values_label(group['values'])}: {len(group['seeds'])} seeds "
                     f"({', '.join(map(str, group['seeds']))})")
        for metric in metrics:
            s, d = group[metric], SUMMARIZED[metric]
            lines.append(f"    {metric:<17} {fixed(s['mean'], d)} +- {fixed(s['std'], d)}  "
                         f"[{fixed(s['min'], d)} to {fixed(s['max'], d)}]")
    return "\n".join(lines)


def format_table(result: dict[str, Any]) -> str:
    """The metrics as an aligned, readable table."""
    classes = len(result["class_histogram"])
    rows = [("FID", fixed(result["fid"], 4), "lower is better"),
            ("KID", f"{fixed(result['kid'], 5)} +- {fixed(result['kid_std'], 5)}",
             "lower is better, ~0 at best"),
            ("classifier score", f"{fixed(result['score'], 3)} +- {fixed(result['score_std'], 3)}",
             f"higher, at most {classes}"),
            ("precision", fixed(result["precision"], 4), "samples inside the real manifold"),
            ("recall", fixed(result["recall"], 4), "reals inside the sample manifold"),
            ("class coverage entropy", fixed(result["coverage_entropy"], 4),
             f"at most {math.log(classes):.4f}")]
    if "d_acc" in result:
        rows.append(("D accuracy", fixed(result["d_acc"], 4), "real test vs samples; 0.5 is chance"))
    if "cond_acc" in result:
        ceiling = result.get("evaluator_accuracy")
        rows.append(("conditional accuracy", fixed(result["cond_acc"], 4), "classified as asked" + (
            f"; the evaluator's own test accuracy: {ceiling:.4f}" if ceiling else "")))
        rows.append(("intra-class FID", fixed(result["intra_fid"], 4), "mean over classes of each "
                     "class's FID"))
    histogram = " ".join(f"{digit}:{count}" for digit, count in enumerate(result["class_histogram"]))
    rows.append(("class histogram", histogram, ""))
    if "intra_fid_per_class" in result:
        rows.append(("intra-class FIDs", " ".join(f"{c}:{fixed(fid, 1)}" for c, fid in
                                                  enumerate(result["intra_fid_per_class"])), ""))
    width = max(len(name) for name, _, _ in rows)
    value_width = max(len(value) for name, value, _ in rows if not name.startswith(("class hist",
                                                                                     "intra-class FIDs")))
    lines = [f"  {name:<{width}}  {value:<{value_width}}  {note}".rstrip() for name, value, note in rows]
    return "\n".join(lines)
