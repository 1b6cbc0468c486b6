"""Tests of the tables people read: `gan_jax.evaluation.report` (one run's metrics, a sweep's runs and
groups) and the number format they share, `gan_jax.reporting.progress.fixed`. Pure formatting: no
network, no data."""

from __future__ import annotations

import re

import pytest

from gan_jax.evaluation import report
from gan_jax.reporting.progress import fixed, format_metrics


@pytest.mark.parametrize("value, digits, text", [
    (-0.00001, 4, "0.0000"),  # rounds to zero: no minus sign
    (-0.0, 2, "0.00"),
    (-0.004, 2, "0.00"),
    (-0.006, 2, "-0.01"),  # a negative value that does not round to zero keeps its sign
    (0.00001, 4, "0.0000"),
    (1.23456, 3, "1.235"),
])
def test_fixed_drops_the_sign_of_a_value_that_rounds_to_zero(value, digits, text):
    assert fixed(value, digits) == text


def test_log_lines_never_show_minus_zero():
    assert format_metrics({"d_loss": -0.00001, "g_loss": 0.5}, ("d_loss", "g_loss", "d_real")) == \
        "d_loss 0.0000  g_loss 0.5000"


def _metrics(kid: float, **others) -> dict:
    """One run's evaluation, as `scoring.evaluate_samples` returns it."""
    return {"fid": 12.5, "kid": kid, "kid_std": 0.00002, "score": 8.0, "score_std": 0.1,
            "precision": 0.7, "recall": 0.6, "coverage_entropy": 0.0, "d_acc": 0.5,
            "class_histogram": [10] * 10, **others}


def _sweep_rows() -> list[dict]:
    """Two seeds of one group, and one run of another, with KIDs that round to zero from below and
    KIDs of the usual order (1e-3): what a sweep evaluation gives `format_report`."""
    runs = [("run_0", 0, {"lr": 1e-4}, -0.000001), ("run_1", 1, {"lr": 1e-4}, -0.000003),
            ("run_2", 0, {"lr": 2e-4}, 0.00345)]
    return [{"name": name, "seed": seed, "values": values, "step": 100, **_metrics(kid)}
            for name, seed, values, kid in runs]


def test_the_sweep_table_never_prints_minus_zero():
    rows = _sweep_rows()
    text = report.format_report(rows, report.summarize(rows))
    assert not re.search(r"-0\.0+(?![0-9])", text), text


def test_the_sweep_table_gives_kid_the_digits_of_the_single_run_table():
    """KID is of order 1e-3 to 1e-1: with 2 decimals a KID of 0.00345 read 0.00, equal to a perfect
    one. The sweep table prints it as the single-run table does."""
    rows = _sweep_rows()
    text = report.format_report(rows, report.summarize(rows))
    assert "0.00345" in text  # run_2's row, and its group's mean, min and max
    kid_lines = [line for line in text.splitlines() if line.strip().startswith("kid")]
    assert kid_lines == ["    kid               0.00000 +- 0.00000  [0.00000 to 0.00000]",
                         "    kid               0.00345 +- 0.00000  [0.00345 to 0.00345]"]
    assert f"{fixed(rows[2]['kid'], 5)} +-" in report.format_table(rows[2])


def test_the_single_run_table_never_prints_minus_zero():
    result = _metrics(-0.000001, kid_std=0.0, cond_acc=0.9, intra_fid=0.0,
                      intra_fid_per_class=[-0.0] + [1.0] * 9)
    text = report.format_table(result)
    assert not re.search(r"-0\.0+(?![0-9])", text), text
    assert "0:0.0 1:1.0" in text
