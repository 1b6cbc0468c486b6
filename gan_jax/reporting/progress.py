"""What a person watching a run sees: on a terminal a progress bar with step, epoch, losses, steps/s and
ETA; otherwise (CI, log files) one log line per logged step.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

from gan_jax.log import logger

LOSS_NAMES = ("d_loss", "g_loss", "d_real", "d_fake")


def fixed(value: float, digits: int) -> str:
    """`value` with `digits` decimals, without the minus sign of a value that rounds to zero (a KID
    of -0.00001 reads 0.0000, not -0.0000)."""
    text = f"{value:.{digits}f}"
    return text[1:] if text.startswith("-") and float(text) == 0 else text


def format_metrics(record: dict[str, Any], names: Iterable[str]) -> str:
    return "  ".join(f"{name} {fixed(record[name], 4)}" for name in names if name in record)


class Progress:
    """A tqdm bar on a terminal; otherwise (CI, log files) a log line per logged step."""

    def __init__(self, start_step: int, total_steps: int, steps_per_epoch: int):
        self._steps_per_epoch = steps_per_epoch
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm
            self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def update(self, step: int, record: dict[str, Any] | None) -> None:
        """Advances to `step`; `record` (the logged metrics) is shown when given."""
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            if record is not None:
                self._bar.set_postfix_str(
                    f"epoch {record['epoch']}  "
                    + format_metrics(record, LOSS_NAMES))
        elif record is not None:
            rate = record.get("steps_per_s")
            logger.info("step %d  epoch %d  %s%s", step, record["epoch"],
                        format_metrics(record, LOSS_NAMES),
                        "" if rate is None else f"  {rate:.2f} steps/s")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
