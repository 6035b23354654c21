#!/usr/bin/env bash
# GPU benchmarks on one NVIDIA GPU (written for an H200), self-contained and offline:
#   bench/gpu.sh OUT_DIR [VENV]
# Installs nothing over the network: it uses the project's venv (default .venv, with onnxruntime-gpu
# where available) and the wheels already in it. Each step has a time cap (11 minutes in all; a run takes
# far less) and writes OUT_DIR/gpu-report.md:
#   1. the face embedders on CUDA: dlib (CPU) vs the torch port, fp32 and fp16, batch 1/32/128, and the
#      fp16 deviation from fp32; SFace int8/fp32 on CPU and fp32/fp16 on the CUDA provider;
#   2. the three embedders (dlib-resnet-torch, sface, dlib+sface) with mirror averaging, fp32 and fp16 on
#      CUDA: faces/s and the fp16 deviation;
#   3. MTCNN and YuNet detection batches on CUDA vs CPU;
#   4. style transfer batch throughput on CUDA (onnxruntime CUDA provider) vs CPU;
#   5. end-to-end face indexing on the GPU worker code path (engine, detect_size 1024, default embedder);
#   6. video stylization per stage with the style models on CUDA (bench/video.py's speed section).
set -euo pipefail
OUT=${1:?usage: bench/gpu.sh OUT_DIR [VENV]}
VENV=${2:-.venv}
PY="$VENV/bin/python"
mkdir -p "$OUT"
REPORT="$OUT/gpu-report.md"
export PYTHONUNBUFFERED=1
{
  echo "# Nightshift GPU benchmarks — $(date -u +%Y-%m-%dT%H:%MZ)"
  echo
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/GPU: /'
  "$PY" -c "import torch, onnxruntime as o; print(f'torch {torch.__version__} cuda={torch.cuda.is_available()}; onnxruntime {o.__version__} providers={o.get_available_providers()}')"
  echo
} > "$REPORT"

run() {  # run NAME TIMEOUT CMD...: append its output (or its failure) to the report
  local name=$1 limit=$2; shift 2
  echo "== $name" >&2
  if out=$(timeout "$limit" "$@" 2>"$OUT/$name.err"); then
    printf '%s\n\n' "$out" >> "$REPORT"
  else
    printf '### %s\n\nfailed or timed out (%ss); stderr tail:\n```\n%s\n```\n\n' "$name" "$limit" \
      "$(tail -20 "$OUT/$name.err")" >> "$REPORT"
  fi
}

run embed 150 "$PY" -m bench.embed --device cuda --fp16 --faces 256 --batches 1,32,128
run embedders 120 "$PY" - <<'PYEOF'
import time, numpy as np, torch
from PIL import Image
from skimage import data
from workers.faces.detectors import MTCNNDetector
from workers.faces.embedders import get_embedder
astro = Image.fromarray(data.astronaut())
images = [np.asarray(astro.resize((s, s))) for s in (384, 512, 640, 768)] * 16  # 64 photos, one face each
det = MTCNNDetector(device="cuda")
faces = det.detect_batch([Image.fromarray(i) for i in images])
print("### Embedders on CUDA, 64 faces with mirror averaging\n\n| embedder | precision | faces/s | max L2 to fp32 |")
print("| --- | --- | --- | --- |")
for name in ("dlib-resnet-torch", "sface", "dlib+sface"):
    ref = None
    for fp16 in (False, True):
        try:
            e = get_embedder(name, device="cuda", fp16=fp16, max_batch_size=128)
            e.embed_many(images[:4], faces[:4], mirror=True)
            torch.cuda.synchronize(); t = time.perf_counter()
            out = np.concatenate(e.embed_many(images, faces, mirror=True)); torch.cuda.synchronize()
            rate = len(out) / (time.perf_counter() - t)
            ref = out if ref is None else ref
            dev = f"{np.linalg.norm(out - ref, axis=1).max():.2e}" if fp16 else "-"
            print(f"| {name} | {'fp16' if fp16 else 'fp32'} | {rate:.1f} | {dev} |")
        except Exception as exc:
            print(f"| {name} | {'fp16' if fp16 else 'fp32'} | failed: {type(exc).__name__}: {exc} | |")
PYEOF
run detectors 90 "$PY" - <<'PYEOF'
import time, numpy as np
from PIL import Image
from skimage import data
from workers.contract import FacesParams
from workers.faces.engine import build_detector
imgs = [Image.fromarray(data.astronaut()).resize((1024, 1024))] * 32
print("### Detection, 32 photos of 1024 px\n\n| detector | device | batch | photos/s |\n| --- | --- | --- | --- |")
for name in ("mtcnn", "yunet"):
    for device in ("cpu", "cuda"):
        det = build_detector(FacesParams(detector=name), device)
        det.load()
        for batch in (1, 8, 32):
            det.detect_batch(imgs[:batch])
            t = time.perf_counter()
            for i in range(0, 32, batch):
                det.detect_batch(imgs[i:i + batch])
            print(f"| {name} | {device} | {batch} | {32 / (time.perf_counter() - t):.1f} |")
PYEOF
run style 150 "$PY" - <<'PYEOF'
import time
from PIL import Image
from skimage import data
from workers.contract import StyleParams
from workers.style.engine import StyleEngine
photos = [Image.fromarray(getattr(data, n)()).resize((1024, 768)) for n in ("astronaut", "coffee", "chelsea", "rocket")] * 4
print("### Style transfer, 16 photos of 1024x768, built-in style 7\n\n| device | batch | photos/s |\n| --- | --- | --- |")
for device, batch in (("cpu", 1), ("cuda", 1), ("cuda", 8)):
    try:
        eng = StyleEngine(device=device, max_batch_size=batch)
        v = eng.expand(StyleParams(method="builtin", builtin=[7]), {})[0]
        eng.render(photos[0], v)
        t = time.perf_counter()
        for i in range(0, len(photos), 4):
            eng.render_batch(photos[i:i + 4], v)
        print(f"| {device} | {batch} | {len(photos) / (time.perf_counter() - t):.2f} |")
    except Exception as exc:
        print(f"| {device} | {batch} | failed: {type(exc).__name__}: {exc} |")
PYEOF
run faces 150 "$PY" -m bench.faces --limit 64 --batch 32 --device auto
run video 240 "$PY" -m bench video --skip-quality --device cuda --out "$OUT"
echo "report: $REPORT"
