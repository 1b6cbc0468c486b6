#!/usr/bin/env bash
# The check to run on a GPU or TPU machine, with that machine's own JAX: the tests that need no data,
# the step's speed at batch 64/256/1024 x steps_per_call 1/10/50 in float32 and bfloat16, sweeps of
# 1/4/8 runs in each form, and one epoch of the tuned config with its FID; one JSON + markdown report
# (OUT_DIR/device_check.{json,md}, rewritten after every row, so whatever ran is reported).
#
#     bash benchmarks/device_check.sh [--quick] OUT_DIR [MNIST_DIR]
#
# Python packages the machine lacks (ml-collections, tensorboardX, ...) travel as wheels in .whl/
# (see the device tool's README: `pip download --no-deps --only-binary=:all: ... -d .whl NAME==VER`);
# they are installed into /tmp/site first. MNIST_DIR (the four IDX files) is needed for the epoch and
# its FID only; without it that part is skipped.
#
# The whole script ends within DEVICE_CHECK_SECONDS (default 450 s, so 8 minutes with room to spare),
# the install and the imports included: every step runs under `timeout` with what is left, at most
#   install 60 s, JAX's devices 60 s, tests 150 s (less where that would leave the driver under
#   240 s; at least 30 s), the driver the rest less 15 s (it stops adding rows at its own deadlines; `timeout -k 10` ends it
#   regardless).
# --quick: a smoke test on any machine, CPU included: one small test module instead of the quick tier,
# the driver's --quick sizes, and a 300 s budget.
set -uo pipefail
cd "$(dirname "$0")/.."
quick=0
if [ "${1:-}" = "--quick" ]; then quick=1; shift; fi
out=${1:?usage: device_check.sh [--quick] OUT_DIR [MNIST_DIR]}
data=${2:-}
budget=${DEVICE_CHECK_SECONDS:-$([ "$quick" = 1 ] && echo 300 || echo 450)}
mkdir -p "$out"
SECONDS=0
left() { echo $((budget - SECONDS)); }
at_most() { local l; l=$(left); echo $(( $1 < l ? $1 : (l > 1 ? l : 1) )); }
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD

if compgen -G ".whl/*.whl" >/dev/null; then
    if timeout "$(at_most 60)" python3 -m pip install -q --no-index --no-deps --no-compile \
            --no-cache-dir --upgrade --target /tmp/site .whl/*.whl >"$out/install.txt" 2>&1; then
        export PYTHONPATH=/tmp/site:$PWD
    else
        echo "installing .whl/ failed (exit $?); going on with the machine's packages" | tee -a "$out/install.txt"
    fi
fi
timeout "$(at_most 60)" python3 -c "import jax; print('jax', jax.__version__, jax.devices())" \
    >"$out/devices.txt" 2>&1 || echo "listing JAX's devices failed (exit $?)" >>"$out/devices.txt"
tail -1 "$out/devices.txt"

# 1. The tests that need no data (the quick tier; --quick: one small module).
reserve=$([ "$quick" = 1 ] && echo 200 || echo 240)  # what the tests leave the driver at least
tests_s=$(( $(left) - reserve )); ((tests_s > 150)) && tests_s=150; ((tests_s < 30)) && tests_s=30
if [ "$quick" = 1 ]; then tests=(tests/test_losses.py); else tests=(-m "not slow" tests); fi
timeout -k 5 "$tests_s" python3 -m pytest -q --maxfail=20 -p no:cacheprovider "${tests[@]}" \
    >"$out/tests_full.txt" 2>&1
code=$?
[ "$code" = 124 ] && why=" (stopped at its ${tests_s} s limit)" || why=""
printf '\npytest exit %s%s, %s s into the check\n' "$code" "$why" "$SECONDS" >>"$out/tests_full.txt"
tail -3 "$out/tests_full.txt" | tee "$out/tests.txt"

# 2-4. Speed, sweeps and the epoch: one driver with the time that is left.
driver_s=$(( $(left) - 15 > 30 ? $(left) - 15 : 30 ))
timeout -k 10 "$driver_s" python3 benchmarks/device_check.py --out "$out" --seconds $((driver_s - 10)) \
    ${data:+--data_dir "$data"} $([ "$quick" = 1 ] && echo --quick) \
    --note "$out/devices.txt" --note "$out/tests.txt" 2>&1 | tee "$out/driver.log" | tail -40
echo "device_check.sh: ended after ${SECONDS} s of ${budget}; report in $out/device_check.md"
