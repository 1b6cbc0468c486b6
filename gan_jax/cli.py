"""What every command-line entry point shares: flag parsing, one-line errors, quiet logs, determinism,
and the CPU runtime's tuning.

Bad input ends a command with one `error: ...` line: exit 2 for a bad command line (flags, config
file, config override), exit 1 for bad data, workdirs or checkpoints (`UserError`).
"""

from __future__ import annotations

import ast
import ctypes
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


# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def tune_cpu_runtime() -> dict[str, bool]:
    """Lets XLA:CPU reuse each call's temporary memory instead of faulting it in afresh every call.

    XLA:CPU allocates a call's temporaries as one block (about 125 MB for a train step at batch 256).
    glibc serves blocks that large with a fresh mmap and unmaps them on free, so every call faulted
    all those pages in again: ~31,000 page faults per call at batch 256 on a 2-core EPYC, where a
    step took 181 ms, and 162 ms with this (batch 64: 43 -> 36 ms). Two settings, both needed (each
    alone measured no faster):
      - synchronous CPU dispatch, so that the call's memory is allocated on the calling thread, from
        glibc's main heap rather than a worker thread's arena (which cannot grow past 64 MiB and
        falls back to mmap);
      - glibc without mmap for large blocks and with a 1 GiB trim threshold, so a freed block stays
        in the heap for the next call.
    Async dispatch buys nothing here: the host does next to no work between steps.

    Both change the whole process, so only the command-line entry points call this, before JAX
    starts its backend. The allocator part is skipped where libc is not glibc.

    Returns:
      {"sync_dispatch": ..., "malloc_keeps_freed": ...}: what was applied.
    """
    import jax
    jax.config.update("jax_cpu_enable_async_dispatch", False)
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
        kept = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1
    except (OSError, AttributeError):
        kept = False
    return {"sync_dispatch": True, "malloc_keeps_freed": kept}


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


def _drop_closed_event_loop_callbacks(unraisable) -> None:
    """sys.unraisablehook: drops what a failed orbax restore leaves behind, passes on the rest.

    When orbax fails to read a damaged checkpoint it closes its asyncio loop while tensorstore still
    has reads in flight; their completion callbacks then raise "Event loop is closed" from a C++
    thread, which Python prints as unraisable tracebacks after our one-line error. They carry nothing
    the error line does not say.
    """
    error = unraisable.exc_value
    if isinstance(error, RuntimeError) and str(error) == "Event loop is closed":
        return
    sys.__unraisablehook__(unraisable)


def config_stem(config_filename: str) -> str:
    """"experiments/mnist.py:tiny" -> "mnist": what a command names its default folder after."""
    return os.path.splitext(os.path.basename(config_filename.split(":")[0]))[0]


def setup_logging() -> None:
    """Our own lines as plain "gan_jax: message"; library INFO chatter (orbax, absl) kept quiet."""
    sys.unraisablehook = _drop_closed_event_loop_callbacks
    from absl import logging as absl_logging
    absl_logging.set_verbosity(absl_logging.WARNING)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
