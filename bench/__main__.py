"""One entry point for every benchmark: ``python -m bench all --out DIR`` (or ``make bench``).

Each benchmark runs in its own process (its peak RSS is its own) and prints Markdown tables; this
runner collects them into ``DIR/report.md`` under a header with the machine's facts and versions.
Benchmarks take their data folder as an argument (``--lfw``, ``--photos``) and build synthetic inputs
without one. ``--full`` runs the large points (10,000 photos, 64 MP, all LFW pairs).

    python -m bench all [--out bench/out] [--lfw DIR] [--full]
    python -m bench NAME [ARGS...]      # one benchmark, e.g. python -m bench style --count 4
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import subprocess
import sys
import time
from pathlib import Path

from bench.common import machine

# the model id the default FacesParams store (bench/lfw.py names its vector cache after it)
DEFAULT_MODEL_ID = "dlib+sface@v1+mirror"
NAMES = [
    "pipeline",
    "style",
    "faces",
    "lfw",
    "embed",
    "cluster",
    "search",
    "scaling",
    "throughput",
    "video",
    "adapt",
    "library",
]


def plan(lfw: Path | None, photos: Path | None, out: Path, full: bool) -> list[tuple[str, list[str], int]]:
    """(benchmark, its arguments, time limit in seconds)."""
    # the default embedder's vectors of every lfw-dev face, written by the lfw benchmark (full mode)
    vectors = ["--cache", str(out / f"{lfw.name}-mtcnn-1024-{DEFAULT_MODEL_ID}.npz")] if lfw and full else []
    p: list[tuple[str, list[str], int]] = [
        (
            "pipeline",
            ["--photos", "24" if full else "12", "--ceiling-photos", "32" if full else "16", "--submissions", "1000"],
            900 if full else 600,
        ),
        ("style", ([str(photos)] if photos else []) + ["--count", "16" if full else "8", "--rounds", "1"], 420),
        ("faces", ([str(photos)] if photos else []) + ["--limit", "64" if full else "24"], 420),
    ]
    if lfw:
        p.append(("lfw", [str(lfw), "--out", str(out)] + ([] if full else ["--limit", "300"]), 3600 if full else 600))
    else:
        p.append(("lfw", ["--help"], 30))  # no data: the table needs LFW (documented in the report)
    p += [
        ("embed", (["--data", str(lfw)] if lfw else []) + ["--faces", "64", "--batches", "1,32"], 300),
        ("cluster", ([str(lfw), *vectors] if lfw and full else []), 1800 if full else 180),
        (
            "search",
            ([str(lfw), *vectors] if lfw and full else []) + ["--sizes", "10000,100000,1000000"],
            1800 if full else 300,
        ),
        (
            "scaling",
            [
                "--out",
                str(out),
                "--faces",
                "100,1000,10000" if full else "100,400",
                "--style-mp",
                "1,4,16,64" if full else "1,4,16",
            ],
            1800 if full else 420,
        ),
        ("throughput", ["--photos", "2000" if full else "400"], 1200 if full else 300),
        (
            "video",
            (["--lfw", str(lfw)] if lfw else [])
            + ["--out", str(out)]
            + ([] if full else ["--frames", "32", "--styles", "3,21"]),
            2400 if full else 1200,
        ),
    ]
    return p


def run_all(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    facts = machine()
    lines = [
        f"# Nightshift benchmarks — {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
        "",
        f"Machine: {facts.get('cores')} cores, {facts.get('ram_gb')} GB RAM, {facts.get('cpu')}; "
        f"GPU: {_gpu()}; Python {facts.get('python')}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()),
        "",
        f"Mode: {'full' if args.full else 'quick (make bench)'}; LFW: {args.lfw or 'not given'}.",
        "",
    ]
    failures = 0
    for name, bench_args, limit in plan(args.lfw, args.photos, out, args.full):
        if args.only and name not in args.only.split(","):
            continue
        t0 = time.perf_counter()
        print(f"== {name} {' '.join(bench_args)}", flush=True)
        argv = [sys.executable, "-m", f"bench.{name}", *bench_args]
        if bench_args != ["--help"] and "--json" in (Path(__file__).parent / f"{name}.py").read_text():
            argv += ["--json", str(out / f"{name}.json")]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=limit)
            body, ok = proc.stdout.strip(), proc.returncode == 0
            if not ok:
                body += f"\n\n(failed, exit {proc.returncode}):\n```\n{proc.stderr[-2000:]}\n```"
        except subprocess.TimeoutExpired:
            body, ok = f"(stopped after its {limit} s limit)", False
        if bench_args == ["--help"]:
            body = "Not run: give the LFW folder with `--lfw` (e.g. `../shared/data/lfw-dev`)."
        failures += not ok
        seconds = time.perf_counter() - t0
        lines += [f"<!-- {name}: {seconds:.0f} s -->", body, ""]
        print(f"   {'ok' if ok else 'FAILED'} in {seconds:.0f} s", flush=True)
    report = out / "report.md"
    report.write_text("\n".join(lines))
    print(f"report: {report}")
    return 1 if failures else 0


def _gpu() -> str:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or "none"
    except (OSError, subprocess.TimeoutExpired):
        return "none"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in NAMES:
        module = importlib.import_module(f"bench.{argv[0]}")
        result = module.main(argv[1:])
        return result if isinstance(result, int) else 0
    ap = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("what", choices=["all"])
    ap.add_argument("--out", default="bench/out")
    ap.add_argument("--lfw", type=Path, help="LFW folder with pairs.txt and images/")
    ap.add_argument("--photos", type=Path, help="a folder of photos for the style and faces benchmarks")
    ap.add_argument("--full", action="store_true", help="the large points too (takes much longer)")
    ap.add_argument("--only", help="comma-separated subset of " + ",".join(NAMES))
    return run_all(ap.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
