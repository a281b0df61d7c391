#!/usr/bin/env bash
# The one prepared check for a lent GPU machine (a copy of the repository root, no network, no /work/shared).
#
#   bash benchmarks/gpu_check.sh          # on the GPU machine; needs .whl/ (hydra-core, omegaconf, antlr4 wheels)
#   bash benchmarks/gpu_check.sh --cpu    # the same steps on a CPU-only machine, benchmarks in --quick form
#
# Steps, each under `timeout`, all inside CHECK_BUDGET_S seconds (default 480): environment (nvidia-smi, torch),
# install the wheels into /tmp/site + augrun in editable mode, GPU tests (pytest -m gpu), the throughput benchmark
# (batch 256 and 1024, with --ddp-overhead), the same compiled (--compile), and a summary with the target verdicts.
# Everything it prints goes to $OUT/gpu_check.log; JSON results to $OUT/throughput*.json; the summary to
# $OUT/summary.txt. A failed or timed-out step is recorded and the next one still runs.
#
# Environment: OUT (results folder; the device tool sets it), PYTHON (default python3), WHEELS_DIR (default .whl),
# SITE_DIR (default /tmp/site), CHECK_BUDGET_S (default 480).
set -u -o pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=gpu
[[ "${1:-}" == "--cpu" ]] && MODE=cpu
OUT=${OUT:-/tmp/augrun-gpu-check}
PY=${PYTHON:-python3}
# a relative interpreter path (.venv/bin/python) must keep working after a `cd`; not realpath: a venv's python is a link
[[ $PY == */* ]] && PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
WHEELS_DIR=${WHEELS_DIR:-.whl}
SITE_DIR=${SITE_DIR:-/tmp/site}
BUDGET=${CHECK_BUDGET_S:-480}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1

STEPS=()
# step NAME CAP_SECONDS COMMAND...: runs under min(CAP, what is left of the budget), records rc and seconds
step() {
    local name=$1 cap=$2
    shift 2
    local left=$((BUDGET - SECONDS - 15))
    local limit=$((cap < left ? cap : left))
    if ((limit < 15)); then
        echo "=== $name: skipped, ${left}s left of the ${BUDGET}s budget"
        STEPS+=("$name: skipped (budget)")
        return 99
    fi
    echo
    echo "=== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout -k 10 "$limit" "$@"
    local rc=$?
    local note=""
    ((rc == 124 || rc == 137)) && note=" TIMED OUT"
    echo "=== $name: rc=$rc$note, $((SECONDS - t0))s"
    STEPS+=("$name: rc=$rc$note ($((SECONDS - t0))s)")
    return $rc
}

echo "augrun gpu_check ($MODE) in $ROOT, results in $OUT, $(date -u +%Y-%m-%dT%H:%M:%SZ)"

# --- environment --------------------------------------------------------------------------------------------------
if [[ $MODE == gpu ]]; then
    step nvidia-smi 20 nvidia-smi
else
    echo "(--cpu: no nvidia-smi)"
fi

# --- install: the three wheels into $SITE_DIR, then augrun itself -------------------------------------------------
if compgen -G "$WHEELS_DIR/*.whl" >/dev/null; then
    step install-wheels 60 "$PY" -m pip install -q --no-index --no-deps --target "$SITE_DIR" "$WHEELS_DIR"/*.whl \
        && export PYTHONPATH="$SITE_DIR${PYTHONPATH:+:$PYTHONPATH}"
else
    echo "no wheels in $WHEELS_DIR/ (copy /work/shared/wheels/gpu-py312/*.whl there and carry it; see benchmarks/README.md)"
fi
# from another folder, so that the checkout itself (on sys.path as the current folder) does not count as installed
if (cd / && "$PY" -c "import augrun, hydra, omegaconf" 2>/dev/null); then
    echo "augrun, hydra and omegaconf import already: no editable install"
else
    step install-augrun 90 "$PY" -m pip install -q --no-index --no-deps --no-build-isolation -e . \
        || { echo "editable install failed: using PYTHONPATH=$ROOT instead"; export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"; }
fi
step versions 30 "$PY" -c "
import sys, torch, torchvision, hydra, omegaconf, augrun
print('python', sys.version.split()[0], '| torch', torch.__version__, '| torchvision', torchvision.__version__,
      '| hydra', hydra.__version__, '| omegaconf', omegaconf.__version__, '| augrun', augrun.__file__)
print('cuda', torch.version.cuda, '| available', torch.cuda.is_available(),
      '| device', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none')
"

# --- GPU tests ------------------------------------------------------------------------------------------------------
step pytest-gpu 90 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/ --junitxml="$OUT/pytest-gpu.xml"
if (($? == 5)); then  # pytest: no test selected. The CUDA tests that exist may lack the marker: run them by name.
    echo "no test carries the gpu marker: running the CUDA tests by name instead"
    step pytest-cuda-by-name 90 "$PY" -m pytest -q -p no:cacheprovider -k cuda tests/ \
        --junitxml="$OUT/pytest-cuda.xml"
fi

# --- throughput -------------------------------------------------------------------------------------------------------
if [[ $MODE == gpu ]]; then
    BENCH=(--device cuda --batch-sizes 256 1024)
    COMPILED=(--device cuda --batch-sizes 256 1024 --compile)
    MAIN_CAP=150
else
    BENCH=(--quick --device cpu)
    COMPILED=(--quick --device cpu --compile --pipelines flip_only --repeats 2)
    MAIN_CAP=170
fi
step throughput "$MAIN_CAP" "$PY" benchmarks/throughput.py "${BENCH[@]}" --ddp-overhead --json "$OUT/throughput.json"
step throughput-compile 300 "$PY" benchmarks/throughput.py "${COMPILED[@]}" --json "$OUT/throughput_compile.json"

# --- summary ----------------------------------------------------------------------------------------------------------
{
    echo "augrun gpu_check ($MODE), $(date -u +%Y-%m-%dT%H:%M:%SZ), ${SECONDS}s"
    printf '  %s\n' "${STEPS[@]}"
    JSONS=()
    for f in "$OUT/throughput.json" "$OUT/throughput_compile.json"; do [[ -f $f ]] && JSONS+=("$f"); done
    if ((${#JSONS[@]})); then
        timeout 30 "$PY" benchmarks/throughput.py --summarize "${JSONS[@]}"
    else
        echo "no throughput results"
    fi
} | tee "$OUT/summary.txt"
