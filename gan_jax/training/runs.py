"""The runs one training program trains: one run (`gan_jax.train`), or a sweep's seeds x values.

A `Run` is one trained run: its config and its folder. A sweep (`plan_sweep`) is every combination of
its seeds and of the values of each varied key; only what `config.SWEEPABLE` lists may vary (numbers
the step reads without its program changing), so every run of a sweep shares one compiled program.
Run i of a sweep is the run `gan_jax.train` makes with the same seed and values. The sweep's folder
holds `sweep.json`: its runs, their seeds and values, and how each is doing.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any, NamedTuple

import ml_collections

from gan_jax import config as config_lib
from gan_jax import files
from gan_jax.errors import ConfigError, UserError

SWEEP_FILE = "sweep.json"  # in a sweep's folder


class Run(NamedTuple):
    """One run: its folder, its seed, the values a sweep gave it (none alone) and its whole config."""

    workdir: str
    config: ml_collections.ConfigDict
    name: str = ""  # "run_000"... in a sweep; "" for a run trained alone
    values: dict[str, Any] = {}

    @property
    def seed(self) -> int:
        return self.config.seed


class RunsFailed(UserError):
    """Some runs stopped with a non-finite loss or parameters; the others finished."""


def parse_values(text: str) -> tuple[str, list]:
    """"g_lr=1e-4,2e-4" -> ("g_lr", [0.0001, 0.0002]), each value of the key's type.

    Raises:
      ConfigError: not KEY=V1,V2,... with numbers, or a key a sweep cannot vary.
    """
    key, sep, values = text.partition("=")
    key = key.strip().removeprefix("config.")
    if not sep or not values.strip():
        raise ConfigError(f"--vary {text!r}: expected KEY=VALUE[,VALUE...], e.g. g_lr=1e-4,2e-4")
    if key not in config_lib.SWEEPABLE:
        what = "is not a config key" if key not in config_lib.BY_NAME else "changes the program"
        raise ConfigError(f"config.{key} cannot vary within a sweep: it {what}; the keys that can "
                          f"are {', '.join(config_lib.SWEEPABLE)} (and --seeds)")
    kind = type(config_lib.BY_NAME[key].default)
    try:
        parsed = [kind(v) for v in values.split(",")]
    except ValueError:
        raise ConfigError(f"--vary {text!r}: the values of {key} must be numbers") from None
    return key, parsed


def parse_seeds(text: str) -> list[int]:
    """"0,1,2" -> [0, 1, 2]."""
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers") from None


def plan_sweep(config: ml_collections.ConfigDict, workdir: str, seeds: list[int],
               vary: dict[str, list]) -> list[Run]:
    """The sweep's runs: every seed with every combination of the varied values, each validated.

    Raises:
      ConfigError: no seed, a repeated seed, or a switch key (`Key.switch`) both zero and non-zero.
    """
    if not seeds:
        raise ConfigError("--seeds needs at least one seed")
    if len(set(seeds)) < len(seeds):
        raise ConfigError(f"--seeds lists a seed twice: {seeds}")
    for key, values in vary.items():
        if config_lib.BY_NAME[key].switch and len({v == 0 for v in values}) > 1:
            raise ConfigError(f"config.{key} must be all zero or all non-zero within a sweep (zero "
                              f"turns its term off, which changes the program); got {values}")
    runs = []
    for seed, combination in itertools.product(seeds, itertools.product(*vary.values())):
        run_config = ml_collections.ConfigDict(config.to_dict())
        run_config.seed = seed
        for key, value in zip(vary, combination):
            run_config[key] = value
        config_lib.validate(run_config)
        name = f"run_{len(runs):03d}"
        runs.append(Run(os.path.join(workdir, name), run_config, name, dict(zip(vary, combination))))
    return runs


def write_sweep_record(workdir: str, runs: list[Run], status: dict[str, str]) -> None:
    """sweep.json <- the runs, their seeds and values, and each one's status ("training" by default)."""
    files.write_json(os.path.join(workdir, SWEEP_FILE), {
        "varied": sorted({key for run in runs for key in run.values}),
        "runs": [{"name": run.name, "seed": run.seed, "values": run.values,
                  "status": status.get(run.name, "training")} for run in runs]})


def read_sweep(workdir: str) -> list[dict] | None:
    """The runs a sweep folder holds ({"name", "seed", "values", "status"} each), or None if
    `workdir` is not a sweep's folder."""
    path = os.path.join(workdir, SWEEP_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            runs = json.load(f)["runs"]
        for run in runs:
            run["name"], run["seed"], run["values"]  # noqa: B018  (each must be there)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read {path}: {e}") from None
    return runs


def check_same_sweep(workdir: str, runs: list[Run]) -> None:
    """Refuses to resume a sweep folder with other runs than it was started with."""
    saved = read_sweep(workdir)
    if saved is None:
        return
    saved = [(r["name"], r["seed"], r["values"]) for r in saved]
    if saved != [(run.name, run.seed, run.values) for run in runs]:
        raise ConfigError(f"{workdir} holds another sweep ({len(saved)} runs, other seeds or values); "
                          f"use another --workdir")
