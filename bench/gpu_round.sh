#!/bin/bash
# The GPU round of issue 14, for a machine with a CUDA GPU: `bench/gpu_round.sh tests` runs the CUDA tests and
# bench_predict_files (under 6 min), `bench/gpu_round.sh bench` bench_feed and bench_extract for vgg16@150 with each decode mode (under 9 min):
# each fits one device call. Each step has its own time limit and writes its own file under $OUT (default
# gpu-round/), so a step that runs out leaves the others.
# Packages the machine's python3 lacks travel as wheels in .whl/ (see the device notes); without .whl/ the
# machine's own packages are used.
set -u
case "${1:-}" in tests|bench) ;; *) echo "usage: bench/gpu_round.sh tests|bench" >&2; exit 2 ;; esac
OUT=${OUT:-gpu-round}
mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONPATH=${PYTHONPATH:-$PWD} PYTHONUNBUFFERED=1 TORCH_HOME=${TORCH_HOME:-/tmp/th}
(nvidia-smi -L; python3 -c 'import torch, torchvision; print(torch.__version__, torchvision.__version__,
  torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA")') 2>&1 | tee "$OUT/device.txt"
if [ "${1:-}" = tests ]; then
  timeout 220 python3 -m pytest -q -p no:cacheprovider -rs tests/test_devices.py tests/extractor/test_devicedecode.py \
    2>&1 | tail -40 > "$OUT/cuda-tests.txt"
  tail -5 "$OUT/cuda-tests.txt"
  timeout 120 python3 bench/bench_predict_files.py --images 480 --rounds 2 > "$OUT/predict-files.txt" 2>&1
  tail -12 "$OUT/predict-files.txt"
else
  for decode in cpu gpu; do
    timeout 80 python3 bench/bench_feed.py --decode "$decode" --device cuda --images 480 --repeat 2 \
      > "$OUT/feed-$decode.txt" 2>&1
    timeout 80 python3 bench/bench_feed.py --decode "$decode" --device cuda --forward real --backbone vgg16 \
      --images 480 --repeat 2 > "$OUT/feed-real-$decode.txt" 2>&1
    timeout 100 python3 bench/bench_extract.py --decode "$decode" --images 480 --skip-baseline \
      > "$OUT/extract-$decode.txt" 2>&1
    tail -4 "$OUT/feed-$decode.txt" "$OUT/feed-real-$decode.txt" "$OUT/extract-$decode.txt"
  done
fi
