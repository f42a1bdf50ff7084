#!/usr/bin/env bash
# Every CUDA figure docs/benchmarks.md asks for, in one call on a lent GPU machine (about 5 minutes on an H100).
#
# Here, once:   make gpu-kit        (wheels the GPU machine lacks, for its Python 3.12, plus gpu_limit.py)
# There:        bash benchmarks/gpu_check.sh      with .gpu_kit carried; figures and the log land in $OUT
#
# Each step has its own time limit, most important first, so a slow step costs only itself.
# The sizes can be turned down to try the script on a CPU, e.g.
#   KIT=<cp311 wheels> PYTHON=.venv/bin/python DEVICE=cpu SIZE=32 IMAGES=64 STEPS=2 FACE_IMAGES=16 bash benchmarks/gpu_check.sh
set -uo pipefail
KIT=${KIT:-.gpu_kit}
OUT=${OUT:-/tmp/gpu_check}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
SIZE=${SIZE:-224}
IMAGES=${IMAGES:-4096}
STEPS=${STEPS:-20}
FACE_IMAGES=${FACE_IMAGES:-4096}
WORKERS=${WORKERS:-8}
MODELS=resnet18,resnet50,efficientnet_b0,convnext_tiny,mobilenetv3_small  # the project's backbone names
TIMM_MODELS=resnet18,resnet50,efficientnet_b0,convnext_tiny,mobilenetv3_small_100  # the same, as timm names them
mkdir -p "$OUT"
LOG=$OUT/gpu_check.log

"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$KIT"/*.whl \
    || { echo "installing $KIT/*.whl failed: run 'make gpu-kit' here first and carry .gpu_kit" | tee -a "$LOG"; exit 1; }
export PYTHONPATH=/tmp/site:$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 KEDRO_DISABLE_TELEMETRY=true

step() {  # step SECONDS DESCRIPTION COMMAND...: runs COMMAND under a time limit, its output into the log
    local limit=$1 description=$2; shift 2
    echo "## $description ($(date +%T), limit ${limit}s)" | tee -a "$LOG"
    timeout "$limit" "$@" 2>&1 | tee -a "$LOG"
    echo "## exit ${PIPESTATUS[0]}" | tee -a "$LOG"
}

step 30 "device" bash -c "nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc; \
$PYTHON -c 'import torch, timm; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"timm\", timm.__version__)'"
step 60 "limit: timm-style training step on tensors already on the GPU" \
    bash -c "$PYTHON '$KIT/gpu_limit.py' --size $SIZE --batch 64 --steps $STEPS --models $TIMM_MODELS | tee '$OUT/gpu_limit.csv'"
step 120 "pipeline training images/s (eager)" "$PYTHON" benchmarks/train_throughput.py --size "$SIZE" --batch 64 \
    --images "$IMAGES" --steps "$STEPS" --workers "$WORKERS" --models "$MODELS" --device "$DEVICE" \
    --csv "$OUT/train_throughput.csv"
step 90 "MTCNN face detection on 512 px images" "$PYTHON" benchmarks/face_detection.py --images "$FACE_IMAGES" \
    --batch 128 --baseline-images 256 --device "$DEVICE" --csv "$OUT/face_detection.csv"
step 150 "the demo's phase 1 through kedro on this device (MTCNN, training, evaluation, Grad-CAM)" \
    env DEEPFAKE_KEDRO_TRACKING=off "$PYTHON" -m kedro run --env demo --pipelines phase1
step 10 "phase 1's comparison" cat data/demo/08_reporting/phase1/comparison.md
step 45 "model_benchmark.csv (inference, bf16)" "$PYTHON" -c "from deepfake_kedro.reporting import model_benchmark; \
model_benchmark($SIZE, 64, 5).to_csv('$OUT/model_benchmark.csv', index=False); print(open('$OUT/model_benchmark.csv').read())"
step 60 "pipeline training images/s with phase 2's augmentation (CPU workers)" "$PYTHON" benchmarks/train_throughput.py \
    --size "$SIZE" --batch 64 --images "$IMAGES" --steps "$STEPS" --workers "$WORKERS" --models resnet18 --augment \
    --device "$DEVICE" --csv "$OUT/train_throughput_augment.csv"
step 120 "pipeline training images/s (torch.compile)" "$PYTHON" benchmarks/train_throughput.py --size "$SIZE" --batch 64 \
    --images "$IMAGES" --steps "$STEPS" --workers "$WORKERS" --models resnet50,convnext_tiny --compile \
    --device "$DEVICE" --csv "$OUT/train_throughput_compile.csv"
echo "done $(date +%T); files: $(ls "$OUT" | tr '\n' ' ')" | tee -a "$LOG"
