"""What every command-line entry point shares: flag parsing, one-line errors, quiet logs, determinism.

Bad input ends a command with one `error: ...` line: exit 2 for a bad command line (flags, config
file, config override), exit 1 for bad data, workdirs or checkpoints (`UserError`).
"""

from __future__ import annotations

import ast
import logging
import os
import sys

from gan_jax.logging_utils import logger

DETERMINISTIC_XLA_FLAG = "--xla_gpu_deterministic_ops=true"


def request_deterministic_xla(enabled: bool = True) -> None:
    """Asks XLA for deterministic GPU kernels (scatter, reductions).

    XLA reads its flags when the backend starts, so this must run before the first computation; CPU
    results are deterministic already and ignore the flag.
    """
    flags = os.environ.get("XLA_FLAGS", "")
    if enabled and DETERMINISTIC_XLA_FLAG not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} {DETERMINISTIC_XLA_FLAG}".strip()


def one_line(error: BaseException) -> str:
    """The gist of an error on one line (ml_collections nests reprs and tracebacks in its messages)."""
    text = str(error)
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        try:
            text = ast.literal_eval(text)  # an error whose message is the repr of a string
        except (ValueError, SyntaxError):
            pass
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if any(line.startswith("Traceback") for line in lines):
        lines = lines[-1:]  # the raised exception, not the stack above it
    return " ".join(lines)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with any bad flag, config file or override reported in one line (exit 2)."""
    from absl import flags
    try:
        remaining = flags.FLAGS(argv)
        if "config" in flags.FLAGS:
            flags.FLAGS.config.keys()  # loads the config file now, so its errors surface here too
    except AttributeError as e:  # ml_collections' way of saying an override names no field
        print(f"error: bad command line: unknown config key {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001  (flag and config-file errors come in many types)
        print(f"error: bad command line: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    if len(remaining) > 1:
        print(f"error: bad command line: unexpected arguments: {' '.join(remaining[1:])}",
              file=sys.stderr)
        sys.exit(2)
    return remaining


def setup_logging() -> None:
    """Our own lines as plain "gan_jax: message"; library INFO chatter (orbax, absl) kept quiet."""
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
