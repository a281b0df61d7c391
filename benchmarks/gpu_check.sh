#!/usr/bin/env bash
# The one prepared check for a lent GPU machine (a copy of the repository root, no network, no /work/shared).
#
#   bash benchmarks/gpu_check.sh [--cpu] [PART ...]
#
# PARTs, run in this order (default: the first call's four; issue #11 plans two calls of ~7 minutes):
#   tests       pytest -m gpu (the CUDA tests)
#   throughput  benchmarks/throughput.py, eager: batch 256 and 1024, both pipelines, a/b/c + DDP(1 process) overhead
#   fast        experiment=fast on the JPEG copy of CIFAR-10 (needs DATA_TAR), reported by benchmarks/recipe_report.py
#   stream      benchmarks/stream.py --device cuda: streamed photos, torchvision vs augrun's backends (#14: c >= 2.5 a)
#   compile     throughput.py --compile at batch 1024 (b and c only: a was measured by `throughput`)
#   recipe      the book's exact recipe, experiment=d2l_seed, on the JPEG copy (needs DATA_TAR): its final numbers
#   ablation    one seed of the with/without sweep, experiment=aug_ablation seed=0, on the JPEG copy: comparison.md
#   arch        the sequel's sweep, shortened: experiment=arch_ablation seed=0 trainer.epochs=3 (resnet18 and
#               vit_tiny_cifar x none, flip_color_crop, deit, with fp16 + EMA + repeated augmentation), on the JPEG
#               copy: wall time and comparison.md (needs timm on the machine: pip install timm, or its wheels carried)
# Call 1: gpu_check.sh tests throughput fast stream    Call 2: gpu_check.sh compile recipe ablation
# --cpu runs the same steps on a CPU-only machine, in --quick / tiny form.
#
# Set-up first (environment, wheels into SITE_DIR, augrun in editable mode), then each PART under `timeout`, all inside
# CHECK_BUDGET_S seconds (default 560: the device tool's 600 s per call, less a margin). Everything printed goes to
# $OUT/gpu_check.log; JSON results to $OUT/throughput*.json; the fast run's metrics, summary and curves to $OUT/fast_*;
# the summary to $OUT/summary.txt; recipe: d2l_*; ablation: ablation_wall.txt, ablation_comparison.md (each call of
# the two-call plan above brings back at most 7 files: the device tool takes 8). A failed or timed-out step is
# recorded and the next one still runs.
#
# Environment: OUT (results folder; the device tool sets it), PYTHON (default python3), WHEELS_DIR (default .whl),
# SITE_DIR (default /tmp/site), DATA_TAR (default .devdata/cifar10-jpeg.tar.gz), CHECK_BUDGET_S (default 560).
set -u -o pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
MODE=gpu
if [[ "${1:-}" == "--cpu" ]]; then
    MODE=cpu
    shift
fi
PARTS=("$@")
((${#PARTS[@]})) || PARTS=(tests throughput fast stream)
for part in "${PARTS[@]}"; do
    [[ $part =~ ^(tests|throughput|fast|compile|recipe|ablation|arch|stream)$ ]] \
        || { echo "unknown part '$part'; valid: tests throughput fast compile recipe ablation arch stream"; exit 2; }
done
wants() { [[ " ${PARTS[*]} " == *" $1 "* ]]; }
OUT=${OUT:-/tmp/augrun-gpu-check}
PY=${PYTHON:-python3}
# a relative interpreter path (.venv/bin/python) must keep working after a `cd`; not realpath: a venv's python is a link
[[ $PY == */* ]] && PY="$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")"
WHEELS_DIR=${WHEELS_DIR:-.whl}
SITE_DIR=${SITE_DIR:-/tmp/site}
DATA_TAR=${DATA_TAR:-.devdata/cifar10-jpeg.tar.gz}
BUDGET=${CHECK_BUDGET_S:-560}
FAST_DIR=/tmp/augrun-fast
RECIPE_DIR=/tmp/augrun-d2l
ABLATION_DIR=/tmp/augrun-ablation
ARCH_DIR=/tmp/augrun-arch
DATA_DIR=/tmp/augrun-data
export PYTHONUNBUFFERED=1  # progress lines reach the log as they happen
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

echo "augrun gpu_check ($MODE: ${PARTS[*]}) in $ROOT, results in $OUT, $(date -u +%Y-%m-%dT%H:%M:%SZ)"

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
if wants tests; then
    step pytest-gpu 100 "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/
fi

# --- throughput, eager ------------------------------------------------------------------------------------------------
if [[ $MODE == gpu ]]; then
    EAGER=(--device cuda --batch-sizes 256 1024 --steps 12)
    COMPILED=(--device cuda --batch-sizes 1024 --steps 12 --compile --skip-book)
else
    EAGER=(--quick --device cpu)
    COMPILED=(--quick --device cpu --compile --skip-book --pipelines flip_only --repeats 2)
fi
if wants throughput; then
    step throughput 150 "$PY" benchmarks/throughput.py "${EAGER[@]}" --ddp-overhead --json "$OUT/throughput.json"
fi

# --- the JPEG copy of CIFAR-10, extracted once for the parts that train on it ------------------------------------------
JPEG=(dataset=imagefolder "dataset.root=$DATA_DIR/cifar10-jpeg")
have_data() {
    [[ -d $DATA_DIR/cifar10-jpeg ]] && return 0
    if [[ ! -f $DATA_TAR ]]; then
        echo "=== $1: skipped, no $DATA_TAR (copy /work/shared/data/cifar10-jpeg.tar.gz there and carry .devdata)"
        STEPS+=("$1: skipped (no data)")
        return 1
    fi
    mkdir -p "$DATA_DIR"
    step extract-data 60 tar xzf "$DATA_TAR" -C "$DATA_DIR"
}
# --cpu: the same commands on a subset with a small model, to check the steps themselves
SMALL=()
[[ $MODE == cpu ]] && SMALL=(model=small_cnn dataset.train_size=1000 dataset.test_size=500 trainer.epochs=1
                             trainer.compile=false trainer.devices=cpu)

# --- experiment=fast on the JPEG copy of CIFAR-10 ------------------------------------------------------------------------
FAST_SECONDS=
if wants fast && have_data fast; then
    RECIPE=(experiment=fast "${JPEG[@]}" "dataset.mean=[0.4914,0.4822,0.4465]" "dataset.std=[0.2470,0.2435,0.2616]"
            "${SMALL[@]}")
    rm -rf "$FAST_DIR"
    t0=$SECONDS
    step fast-recipe 210 "$PY" -m augrun train "${RECIPE[@]}" "hydra.run.dir=$FAST_DIR"
    FAST_SECONDS=$((SECONDS - t0))
    # the device tool brings back at most 8 files: the run's metrics, summary and curves, not its checkpoint
    for f in metrics.jsonl summary.json curves.png; do [[ -f $FAST_DIR/$f ]] && cp "$FAST_DIR/$f" "$OUT/fast_$f"; done
fi

# --- streamed photos: torchvision's ImageFolder against augrun's streamed backends, batches to the device ------------------
if wants stream; then
    if [[ $MODE == gpu ]]; then STREAM=(--device cuda --images 256 --workers 2 --rounds 3); else
        STREAM=(--device cpu --images 32 --batch-size 8 --rounds 1); fi
    step stream 120 "$PY" benchmarks/stream.py "${STREAM[@]}" --no-memory --json "$OUT/stream.json"
fi

# --- throughput, compiled -------------------------------------------------------------------------------------------------
if wants compile; then
    step throughput-compile 200 "$PY" benchmarks/throughput.py "${COMPILED[@]}" --json "$OUT/throughput_compile.json"
fi

# --- the book's exact recipe and one seed of the with/without sweep, on the JPEG copy -------------------------------------
if wants recipe && have_data recipe; then
    rm -rf "$RECIPE_DIR"
    step d2l-recipe 240 "$PY" -m augrun train experiment=d2l_seed "${JPEG[@]}" "${SMALL[@]}" "hydra.run.dir=$RECIPE_DIR"
    for f in metrics.jsonl summary.json; do [[ -f $RECIPE_DIR/$f ]] && cp "$RECIPE_DIR/$f" "$OUT/d2l_$f"; done
fi
if wants ablation && have_data ablation; then
    rm -rf "$ABLATION_DIR"
    t0=$SECONDS
    step ablation-sweep 300 "$PY" -m augrun train -m experiment=aug_ablation seed=0 "${JPEG[@]}" "${SMALL[@]}" \
        "hydra.sweep.dir=$ABLATION_DIR"
    echo "ablation sweep wall time: $((SECONDS - t0))s" | tee "$OUT/ablation_wall.txt"
    [[ -f $ABLATION_DIR/comparison.md ]] && cp "$ABLATION_DIR/comparison.md" "$OUT/ablation_comparison.md"
fi

if wants arch && have_data arch; then
    if "$PY" -c "import timm" 2>/dev/null; then
        rm -rf "$ARCH_DIR"
        t0=$SECONDS
        step arch-sweep 420 "$PY" -m augrun train -m experiment=arch_ablation seed=0 trainer.epochs=3 \
            trainer.precision=fp16 trainer.ema.decay=0.999 aug.repeats=2 "${JPEG[@]}" "${SMALL[@]}" \
            "hydra.sweep.dir=$ARCH_DIR"
        echo "arch sweep wall time: $((SECONDS - t0))s" | tee "$OUT/arch_wall.txt"
        [[ -f $ARCH_DIR/comparison.md ]] && cp "$ARCH_DIR/comparison.md" "$OUT/arch_comparison.md"
    else
        echo "=== arch: skipped, timm is not installed for $PY"
    fi
fi

# --- summary ----------------------------------------------------------------------------------------------------------
{
    echo "augrun gpu_check ($MODE: ${PARTS[*]}), $(date -u +%Y-%m-%dT%H:%M:%SZ), ${SECONDS}s"
    printf '  %s\n' "${STEPS[@]}"
    JSONS=()
    for f in "$OUT/throughput.json" "$OUT/throughput_compile.json"; do [[ -f $f ]] && JSONS+=("$f"); done
    if ((${#JSONS[@]})); then
        timeout 30 "$PY" benchmarks/throughput.py --summarize "${JSONS[@]}"
    fi
    if wants fast && [[ -d $FAST_DIR ]]; then  # not a warm machine's result of an earlier call
        echo
        echo "== experiment=fast on the JPEG copy of CIFAR-10"
        timeout 30 "$PY" benchmarks/recipe_report.py "$FAST_DIR" --target 0.94 ${FAST_SECONDS:+--wall-seconds $FAST_SECONDS}
    fi
    if wants recipe && [[ -f $RECIPE_DIR/summary.json ]]; then
        echo
        echo "== the book's recipe (experiment=d2l_seed) on the JPEG copy; the book: loss 0.231, train acc 0.921, test acc 0.836"
        timeout 30 "$PY" -c "
import json, sys
s = json.load(open(sys.argv[1])); f = s.get('final') or {}
print(f\"loss {f.get('train_loss', float('nan')):.3f}, train acc {f.get('train_acc', float('nan')):.3f}, \"
      f\"test acc {f.get('test_acc', float('nan')):.3f}\")
print(f\"{s.get('examples_per_s') or 0:.1f} examples/sec on {', '.join(s.get('devices') or [])} ({s.get('status')})\")
" "$RECIPE_DIR/summary.json"
    fi
    if wants ablation && [[ -f $ABLATION_DIR/comparison.md ]]; then
        echo
        echo "== one seed of experiment=aug_ablation on the JPEG copy"
        sed -n '1,20p' "$ABLATION_DIR/comparison.md"
    fi
} | tee "$OUT/summary.txt"
