#!/usr/bin/env bash
# The check to run on a GPU or TPU machine, with that machine's own JAX: the tests that need no data,
# the step's speed at batch 64/256/1024 x steps_per_call 1/10/50 in float32 and bfloat16, sweeps of
# 1/4/8 runs in each form, and one epoch of the tuned config with its FID; one JSON + markdown report.
#
#     bash benchmarks/device_check.sh OUT_DIR [MNIST_DIR]
#
# Python packages the machine lacks (ml-collections, tensorboardX, ...) travel as wheels in .whl/
# (see the device tool's README: `pip download --no-deps --only-binary=:all: ... -d .whl NAME==VER`);
# they are installed into /tmp/site first. MNIST_DIR (the four IDX files) is needed for the epoch and
# its FID only; without it that part is skipped. Everything has a deadline so the whole check ends
# within about 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: device_check.sh OUT_DIR [MNIST_DIR]}
data=${2:-}
mkdir -p "$out"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
else
    export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1
python3 -c "import jax; print('jax', jax.__version__, jax.devices())" 2>&1 | tee "$out/devices.txt"

# 1. The tests that need no data (the quick tier), at most 3 minutes.
timeout 180 python3 -m pytest -q -m "not slow" -x -p no:cacheprovider tests 2>&1 | tail -5 \
    > "$out/tests.txt"

# 2-4. Speed, sweeps and the epoch: one driver, each part under its own deadline.
timeout 300 python3 benchmarks/device_check.py --out "$out" ${data:+--data_dir "$data"} \
    2>&1 | tee "$out/driver.log" | tail -40
