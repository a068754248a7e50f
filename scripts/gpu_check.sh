#!/usr/bin/env bash
# The prepared GPU check, for a bare GPU machine with Python 3.12 and JAX (CUDA) but no Keras,
# Kedro or registry access. Carry `.whl/` (wheels: scripts/gpu_wheels.sh) and `.gpu_sample/`
# (a re-packed sample of the archive: scripts/gpu_sample.py) with the working tree, then:
#
#     scripts/gpu_check.sh            # writes gpu_check.json + gpu_check.log into $OUT (or gpu_check_out/)
#     scripts/gpu_check.sh --cpu      # tiny sizes on the CPU (what CI runs)
#
# Extra arguments go to scripts/gpu_check.py (--limit SECONDS, --only STAGE,..., --archive PATH).
# The overall limit (default 420 s) is enforced inside; `timeout` here is a last resort.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${GPU_CHECK_PYTHON:-python3}"
if ! "$PY" -c "import keras, kedro, kedro_datasets" 2>/dev/null; then
  ls .whl/*.whl >/dev/null 2>&1 || { echo "gpu_check: $PY lacks keras/kedro and no wheels are in .whl/ (make them with scripts/gpu_wheels.sh)" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/gpu_check_site .whl/*.whl || { echo "gpu_check: installing the carried wheels failed" >&2; exit 2; }
  export PYTHONPATH="/tmp/gpu_check_site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export KERAS_BACKEND="${KERAS_BACKEND:-jax}"
limit="${GPU_CHECK_LIMIT:-420}"
exec timeout --signal=TERM --kill-after=10 "$((${limit%.*} + 30))" "$PY" scripts/gpu_check.py --limit "$limit" "$@"
