#!/usr/bin/env bash
# The GPU check on one NVIDIA GPU (written for the device tool's H200), offline and self-contained:
#   bench/gpu.sh OUT_DIR [--device cuda|cpu] [--budget-s 450]
# The GPU machine has Python 3.12 with torch, torchvision, onnxruntime, numpy, pillow, scikit-image and
# pyarrow, but none of the project's other packages, and nothing can be downloaded there. Before the call,
# here: `python -m bench.gpu_bundle` fills .whl/ (git-ignored, under 60 MiB: the cp312 wheels and the two
# dlib model files); the device call carries it (carry: [".whl"]). This script installs it with pip
# --no-index --target and runs bench/gpu_report.py, which writes OUT_DIR/gpu-report.md in under 8 minutes:
# embedder fp32/fp16, MTCNN batches, style MP/s, JPEG codec, faces end to end on 12 MP JPEGs with the
# stage breakdown, and 1/2/4 worker processes sharing the GPU.
# Rehearse on a CPU machine: NIGHTSHIFT_GPU_BUNDLE=DIR PYTHON=.venv/bin/python bench/gpu.sh OUT --device cpu
# (with a bundle made by `python -m bench.gpu_bundle --out DIR --python-version 3.11`).
set -euo pipefail
OUT=${1:?usage: bench/gpu.sh OUT_DIR [--device cuda|cpu] [--budget-s SECONDS]}
shift
BUNDLE=${NIGHTSHIFT_GPU_BUNDLE:-.whl}
TARGET=${NIGHTSHIFT_GPU_TARGET:-/tmp/nightshift-site}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
"$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$TARGET" \
  "$BUNDLE"/*.whl
cp -r "$BUNDLE/face_recognition_models" "$TARGET/"
export PYTHONPATH="$TARGET:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 PATH="$TARGET/bin:$PATH"
exec "$PY" -m bench.gpu_report "$OUT" --target "$TARGET" "$@"
