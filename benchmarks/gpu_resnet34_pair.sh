#!/bin/bash
# The shipped ResNet-34 accuracy through sn.train on one GPU: the original (benchmarks/networks/
# resnet34_original.json) and the shipped searched network (resnet34_cold33.json), seeds 0 and 1,
# 30 epochs, the recipe of benchmarks/train_cifar.py (SGD + one-cycle, clip 2, bf16, channels-last,
# torch.compile), all four runs at once in one job. Writes to OUT (default $OUT, else runs/gpu_r34):
# one JSON per run (resnet34_original_s0.json, ...), paired.json (per seed both accuracies, the
# differences, their mean and 95% interval) and log.txt.
#
# Prepare once, on a machine with the data and a package index (in the repository's root):
#   bash benchmarks/gpu_resnet34_pair.sh --prepare     # carry/: cifar10_jpeg.npz + pyglove's wheels (~54 MiB)
# Then, on the GPU machine (carry: ["carry"]):
#   bash benchmarks/gpu_resnet34_pair.sh
# Environment: EPOCHS (30), SEEDS ("0 1"), LIMIT (seconds for the whole job, 560), COMPILE (1; 0: eager),
# EXTRA (more train_cifar.py arguments, e.g. "--limit 64 --batch 16" for a CPU smoke run), PYTHON (python3).
set -u
cd "$(dirname "$0")/.." || exit 2
CARRY=carry
if [ "${1:-}" = "--prepare" ]; then
  SRC=${SYMNAS_DATA:?set SYMNAS_DATA to the folder holding cifar10/cifar10_jpeg.npz}/cifar10/cifar10_jpeg.npz
  mkdir -p "$CARRY/wheels"
  [ -f "$CARRY/cifar10_jpeg.npz" ] || cp "$SRC" "$CARRY/cifar10_jpeg.npz" || exit 1
  "${PYTHON:-python3}" -m pip download -q --no-deps --only-binary=:all: -d "$CARRY/wheels" \
      pyglove==0.4.5 docstring_parser==0.18.0 termcolor==3.3.0 || exit 1
  du -sh "$CARRY"; exit 0
fi
for need in "$CARRY/cifar10_jpeg.npz" "$CARRY/wheels"; do
  [ -e "$need" ] || { echo "missing $need: run 'bash $0 --prepare' where the data is, then carry $CARRY" >&2; exit 2; }
done
PYTHON=${PYTHON:-python3}
OUT=${OUT:-runs/gpu_r34}
mkdir -p "$OUT"
WHEELS=$CARRY/wheels . benchmarks/gpu_env.sh   # PyGlove from carry/wheels; symnas from this checkout
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/log.txt"
"$PYTHON" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/log.txt"
COMPILE_FLAG=$([ "${COMPILE:-1}" = 1 ] && echo --compile)
read -r -a SEED_LIST <<< "${SEEDS:-0 1}"
# shellcheck disable=SC2086  # COMPILE_FLAG and EXTRA are lists of arguments
timeout "${LIMIT:-560}" "$PYTHON" benchmarks/train_cifar.py \
    --models benchmarks/networks/resnet34_original.json benchmarks/networks/resnet34_cold33.json \
    --data "$CARRY/cifar10_jpeg.npz" --epochs "${EPOCHS:-30}" --clip-grad 2 $COMPILE_FLAG \
    --seeds "${SEED_LIST[@]}" --workers $((2 * ${#SEED_LIST[@]})) --out "$OUT" ${EXTRA:-} 2>&1 | tee -a "$OUT/log.txt"
status=${PIPESTATUS[0]}
ls "$OUT"
exit "$status"
