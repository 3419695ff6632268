#!/bin/bash
# Train several (seed, model) pairs, each in its own process of benchmarks/train_cifar.py (one identical
# recipe), all on the one GPU of the machine, all at once or AT_ONCE at a time; prints each run's test
# accuracy at the end.
#
# usage: [DATA=cifar10_jpeg.npz] [WHEELS=dir] [LIMIT=seconds] [EXTRA="--clip-grad 2"] [OUT=dir] \
#        bash benchmarks/train_cifar_parallel.sh EPOCHS INIT SEED:MODEL.json ...
#   DATA    CIFAR-10 file (default: $SYMNAS_DATA/cifar10/cifar10_jpeg.npz)
#   WHEELS  a folder of wheels to install first with --no-deps (pyglove and its two dependencies, for a
#           machine without a package index, such as the lent GPU)
#   LIMIT   kill a run after this many seconds (default 560, under the device tool's 600 s per call)
#   EXTRA   more train_cifar.py arguments for every run
#   OUT     results: OUT/NAME_sSEED.log and OUT/NAME_sSEED/train_cifar.json (default ./runs/train)
#   PYTHON  the interpreter (default: python on the PATH)
#   AT_ONCE at most this many runs at a time (default: all); the others start as runs finish. On the
#           H200 a grouped ResNeXt-29 trained 3.5x faster per epoch two at a time than four at a time,
#           and two at a time no faster in all than one after the other (the GPU is busy either way).
#           LIMIT is per run: the waves' times add up within the device call's limit.
#           EXTRA="--compile" trains through torch.compile (ResNeXt-29: 24 instead of 34 ms a step)
# example (one device call, the original and a searched network on seeds 0 and 1, 30 epochs):
#   DATA=carry/cifar10_jpeg.npz WHEELS=carry/wheels EXTRA="--clip-grad 2" bash benchmarks/train_cifar_parallel.sh \
#       30 by-name 0:carry/models/r34_orig.json 0:carry/models/r34_sh3.json 1:carry/models/r34_orig.json ...
set -u
if [ $# -lt 3 ]; then
  echo "usage: bash $0 EPOCHS INIT SEED:MODEL.json ... (see the comment at the top of $0)" >&2; exit 2
fi
EPOCHS=$1; INIT=$2; shift 2
DATA=${DATA:-${SYMNAS_DATA:+$SYMNAS_DATA/cifar10/cifar10_jpeg.npz}}
if [ -z "$DATA" ] || [ ! -f "$DATA" ]; then
  echo "no CIFAR-10 file: set DATA=path/to/cifar10_jpeg.npz or SYMNAS_DATA (got '${DATA}')" >&2; exit 2
fi
for pair in "$@"; do
  model=${pair#*:}
  if [ "$pair" = "$model" ] || [ ! -f "$model" ]; then
    echo "bad run '$pair': want SEED:MODEL with an existing model file" >&2; exit 2
  fi
done
AT_ONCE=${AT_ONCE:-$#}
if ! [[ "$AT_ONCE" =~ ^[1-9][0-9]*$ ]]; then
  echo "AT_ONCE must be a positive integer (runs at a time), got '$AT_ONCE'" >&2; exit 2
fi
OUT=${OUT:-runs/train}
mkdir -p "$OUT"
if [ -n "${WHEELS:-}" ]; then PYTHON=${PYTHON:-python3} . "$(dirname "$0")/gpu_env.sh"; fi   # symnas from this checkout
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
HERE=$(dirname "$0")
for pair in "$@"; do
  seed=${pair%%:*}; model=${pair#*:}; name=$(basename "$model" .json)_s$seed
  while [ "$(jobs -rp | wc -l)" -ge "$AT_ONCE" ]; do wait -n; done
  # shellcheck disable=SC2086  # EXTRA is a list of arguments
  timeout "${LIMIT:-560}" "${PYTHON:-python}" "$HERE/train_cifar.py" --models "$model" --data "$DATA" --epochs "$EPOCHS" \
      --seed "$seed" --init "$INIT" ${EXTRA:-} --out "$OUT/$name" > "$OUT/$name.log" 2>&1 &
done
wait
for pair in "$@"; do
  seed=${pair%%:*}; name=$(basename "${pair#*:}" .json)_s$seed
  echo "$name: $(grep -h "test accuracy\|Error\|error" "$OUT/$name.log" | tail -1)"
done
