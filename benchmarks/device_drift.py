"""How far N devices drift from one device over chained steps of real training (the README's figures).

    python benchmarks/device_drift.py --data_dir DIR [--devices 4] [--steps 20] [--mode pmap]

Trains the config's model (experiments/mnist.py, batch 64) on one device and on N fake CPU devices from
the same initial state and data order, and prints after each step the largest absolute difference of
the metrics and of every parameter, BatchNorm statistic and Adam moment, leaving out the biases that
directly precede a BatchNorm (rounding noise by construction; see README, Several devices). It sets
XLA_FLAGS itself, before JAX starts.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", required=True, help="folder of MNIST's four IDX files")
    parser.add_argument("--devices", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--mode", default="pmap", choices=["pmap", "shard_map"])
    args = parser.parse_args()
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")
    import jax  # noqa: F401  (after XLA_FLAGS)
    import numpy as np

    from gan_jax.data import sources
    from gan_jax.training import devices, steps
    from gan_jax.training.checkpoint import path_name
    from gan_jax.training.parallel import Layout, ParallelStep
    from gan_jax.training.spec import GANSpec, hyperparams
    from gan_jax.training.state import create_train_state

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location("mnist", os.path.join(root, "experiments", "mnist.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    config.data.source, config.data.dir = "idx", args.data_dir
    images = sources.load_split(config.data, "train").images
    # The biases right before a BatchNorm: their true gradient is zero (see tests/helpers.py GAUGE).
    gauge = ("ConvTranspose_0/bias", "ConvTranspose_1/bias", "Conv_1/bias", "BatchNorm_0/mean",
             "BatchNorm_1/mean")

    def trajectory(num_devices: int):
        run_config = config.copy_and_resolve_references()
        run_config.num_devices, run_config.parallel = num_devices, args.mode
        layout = Layout.for_config(run_config)
        parallel = ParallelStep(layout, GANSpec.from_config(run_config, **layout.spec_options()),
                                [hyperparams(run_config)])
        state = create_train_state(parallel.spec, run_config.seed)
        orders = steps.data_orders(state.key, 0, len(images))
        data = parallel.with_orders(parallel.put_data(images, None), [orders])
        states = parallel.put_states([devices.to_host(state)])
        for _ in range(args.steps):
            states, metrics = parallel.train_steps(1)(states, data)
            (host,) = parallel.get_states(states)
            leaves = {path_name(p): np.asarray(v) for p, v in
                      jax.tree_util.tree_flatten_with_path((host.generator, host.discriminator))[0]}
            yield leaves, parallel.get_metrics(metrics)[0][0]

    print(f"1 device vs {args.devices} ({args.mode}), batch {config.batch_size}, real MNIST")
    for step, ((one, one_metrics), (many, many_metrics)) in enumerate(
            zip(trajectory(1), trajectory(args.devices)), start=1):
        state_diff = max(float(np.abs(one[k] - many[k]).max()) for k in one
                         if not any(g in k for g in gauge))
        metric_diff = max(abs(float(one_metrics[k]) - float(many_metrics[k])) for k in one_metrics)
        print(f"step {step:3d}: metrics {metric_diff:.1e}, state (without the gauge biases) "
              f"{state_diff:.1e}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
