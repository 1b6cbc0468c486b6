"""What the EMA generator should use for BatchNorm statistics, measured on a trained run's checkpoint.

    python benchmarks/ema_batch_stats.py --workdir RUN [--step N] [--num_samples 10000] [--json FILE]

RUN must keep an EMA (`ema_decay > 0`). FID of `--num_samples` samples (the shipped evaluator, against
the test split) of:
- `ema_weights_ema_stats`: the averaged weights with the averaged running statistics (what the training
  state keeps and every command samples);
- `ema_weights_raw_stats`: the averaged weights with G's own running statistics;
- `ema_weights_standing_stats`: the averaged weights with "standing statistics" (BigGAN's): the batch
  statistics of 2,048 fresh samples of the averaged weights, in training mode;
- `raw`: the raw generator, for scale.
"""

from __future__ import annotations

import argparse
import json

import jax

from gan_jax.data import sources
from gan_jax.evaluation import reference, scoring
from gan_jax.evaluation.restored import RestoredRun, load_run
from gan_jax.model import inference, networks

STANDING_SAMPLES = 2048


def standing_statistics(run: RestoredRun, params) -> dict:
    """BatchNorm statistics of G(z) with `params` over one batch of fresh noise, in training mode."""
    generator = run.spec.generator.clone(axis_name=None)  # one device: no cross-device mean
    noise = jax.random.normal(jax.random.key(123), (STANDING_SAMPLES, run.config.latent_dim))
    old = run.state.generator.batch_stats
    _, updated = generator.apply({"params": params, "batch_stats": old}, noise, train=True,
                                 mutable=["batch_stats"])
    # flax updates running = m * running + (1 - m) * batch; undo it to get the batch's own statistics.
    momentum = networks.BATCH_NORM["momentum"]
    return jax.tree.map(lambda new, running: (new - momentum * running) / (1 - momentum),
                        updated["batch_stats"], old)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--step", type=int, default=None)
    parser.add_argument("--num_samples", type=int, default=10000)
    parser.add_argument("--json", default="")
    args = parser.parse_args()

    run = load_run(args.workdir, args.step)
    if run.state.generator_ema is None:
        raise SystemExit(f"error: the run in {args.workdir} keeps no EMA generator (ema_decay = 0)")
    test_images = sources.load_split(run.config.data, "test").images
    noise = inference.latent_noise(0, args.num_samples, run.config.latent_dim)
    cache = reference.reference_cache_path(args.workdir, run.config.data.name)

    def fid(variables) -> float:
        images = inference.generate_images(run.spec.generator, variables, noise)
        return float(scoring.evaluate_samples(images, run.config.data.name, test_images,
                                               reference_cache=cache)["fid"])

    ema = run.state.generator_ema
    result = {
        "workdir": args.workdir, "step": int(run.state.step), "num_samples": args.num_samples,
        "ema_weights_ema_stats": fid(dict(ema)),
        "ema_weights_raw_stats": fid({"params": ema["params"],
                                      "batch_stats": run.state.generator.batch_stats}),
        "ema_weights_standing_stats": fid({"params": ema["params"],
                                           "batch_stats": standing_statistics(run, ema["params"])}),
        "raw": fid(run.state.generator.variables()),
    }
    print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in result.items()}))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
