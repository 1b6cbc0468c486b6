"""What every command-line entry point shares: flag parsing, one-line errors, quiet logs, the flags of
a distributed run, the CPU runtime's tuning, and how a training command ends (its summary line, or
the command that resumes it).

Bad input ends a command with one `error: ...` line: exit 2 for a bad command line (flags, config
file, config override), exit 1 for bad data, workdirs or checkpoints (`UserError`, see `run`).
"""

from __future__ import annotations

import ast
import ctypes
import logging
import os
import shlex
import sys
from typing import Callable

from gan_jax.errors import UserError
from gan_jax.log import logger

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def tune_cpu_runtime() -> dict[str, bool]:
    """Lets XLA:CPU reuse each call's temporary memory instead of faulting it in afresh every call.

    Why: glibc maps XLA:CPU's one block of a call's temporaries afresh and unmaps it on free, so
    every call faulted its pages in again (figures: docs/speed.md, "The CPU runtime tuning, per
    step"). Two settings, both needed (each alone measured no faster):
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
        print(f"error: bad command line: {unknown_override(argv) or 'unknown config key ' + one_line(e)}",
              file=sys.stderr)
        sys.exit(2)
    except Exception as e:  # noqa: BLE001  (flag and config-file errors come in many types)
        print(f"error: bad command line: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    if len(remaining) > 1:
        print(f"error: bad command line: unexpected arguments: {' '.join(remaining[1:])}",
              file=sys.stderr)
        sys.exit(2)
    return remaining


def unknown_override(argv: list[str]) -> str | None:
    """"unknown config key 'model.g_widht'. Did you mean 'model.g_width'?" for the first
    --config.KEY=VALUE of `argv` that names no key of the config contract (None if all do)."""
    import difflib

    from gan_jax import config as config_lib
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        key = arg[len("--config."):].split("=", 1)[0]
        if key in config_lib.BY_NAME or any(name.startswith(key + ".") for name in config_lib.BY_NAME):
            continue
        close = difflib.get_close_matches(key, list(config_lib.BY_NAME), n=1)
        hint = f". Did you mean '{close[0]}'?" if close else "."
        return f"unknown config key '{key}'{hint}"
    return None


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


def run(body: Callable[[], int | None]) -> int:
    """Calls a command's `body`; a `UserError` becomes one `error: ...` line on stderr and exit 1.

    With several processes, a `JaxRuntimeError` is how a lost peer shows up in the collectives: also
    one line and exit 1. With one process it is a bug, or the device failing: it keeps its traceback.
    """
    try:
        return body() or 0
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # noqa: BLE001  (only JAX's runtime errors of a distributed run are ours)
        import jax
        if not isinstance(e, jax.errors.JaxRuntimeError) or jax.process_count() == 1:
            raise
        print(f"error: lost contact with another process of the distributed run: {one_line(e)[:300]}",
              file=sys.stderr)
        return 1


def resume_command(module: str, argv: list[str], workdir: str) -> str:
    """The shell command that resumes an interrupted `python -m MODULE ARGV...` in `workdir`: the same
    arguments, quoted for the shell, with `--workdir` (given as `--workdir DIR` or `--workdir=DIR`,
    or not at all) set to the absolute folder."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in ("--workdir", "-workdir"):
            skip = True  # its value is the next argument
        elif not arg.startswith(("--workdir=", "-workdir=")):
            kept.append(arg)
    return shlex.join(["python", "-m", module, *kept, f"--workdir={os.path.abspath(workdir)}"])


def training_command(module: str, workdir: str, train: Callable[[], "object"]) -> int:
    """Runs a training command's `train()` (which returns a `loop.TrainingResult`) and ends it with
    one line: what was trained and where, or, when interrupted, the command that resumes it."""
    from gan_jax.training.control import Interrupted

    def body() -> None:
        try:
            result = train()
        except Interrupted as e:
            print(f"{e}. Resume with: {resume_command(module, sys.argv[1:], workdir)}", file=sys.stderr)
            return
        many = len(result.states) > 1
        runs = f"{len(result.states)} runs" if many else "the run"
        if result.start_step >= result.total_steps:
            print(f"nothing trained: {runs} {'are' if many else 'is'} already at step "
                  f"{result.start_step}, and the config asks for {result.total_steps}; outputs in "
                  f"{os.path.abspath(workdir)}", file=sys.stderr)
        else:
            print(f"trained {runs} from step {result.start_step} to {result.total_steps}; outputs in "
                  f"{os.path.abspath(workdir)}", file=sys.stderr)
    return run(body)


def define_distributed_flags() -> None:
    """The flags that join a multi-process run (`join_distributed`); see README, several hosts."""
    from absl import flags
    flags.DEFINE_bool("distributed", False, "Join a multi-process run that JAX detects from the "
                      "cluster (SLURM, TPU pod, Open MPI); implied by --coordinator.")
    flags.DEFINE_string("coordinator", None, "HOST:PORT of process 0's coordination service.")
    flags.DEFINE_integer("num_processes", None, "How many processes take part.")
    flags.DEFINE_integer("process_id", None, "This process's index, 0 .. num_processes - 1.")
    flags.DEFINE_string("coordinator_bind_address", None, "Address process 0's coordination "
                        "service listens on, e.g. 127.0.0.1:PORT to stay on loopback.")
    flags.DEFINE_integer("distributed_timeout", 300, "Seconds to wait for the other processes, at "
                         "start and when one stops answering, before failing.")


def join_distributed(values) -> None:
    """Joins the multi-process run the flags of `define_distributed_flags` describe, if any."""
    if values.distributed or values.coordinator:
        from gan_jax.training import devices
        devices.initialize_distributed(values.coordinator, values.num_processes, values.process_id,
                                       values.coordinator_bind_address, values.distributed_timeout)


def define_config_flag() -> None:
    """--config FILE[:variant], an ml_collections config file with --config.KEY=VALUE overrides."""
    from ml_collections import config_flags
    config_flags.DEFINE_config_file("config", None, "Config file, e.g. experiments/mnist.py[:variant].",
                                    lock_config=True)


def start(main: Callable[[list[str]], int], define_flags: Callable[[], None], *,
          tune_cpu: bool = False, deterministic: bool = False) -> None:
    """Runs a command: its flags defined and parsed (bad ones: one line, exit 2), then `main`.

    Args:
      main: `main(argv) -> exit status`, reading absl's FLAGS.
      define_flags: defines the command's flags.
      tune_cpu: tune the CPU runtime first (`tune_cpu_runtime`; training and benchmarks).
      deterministic: ask XLA for deterministic GPU kernels (commands whose results are compared).
    """
    from absl import app
    if tune_cpu:
        tune_cpu_runtime()
    if deterministic:
        from gan_jax.training import devices
        devices.request_deterministic_xla()
    define_flags()
    app.run(main, flags_parser=parse_flags)
