"""Do the built-in styles erase faces? Detection and identity of LFW faces before and after stylizing.

For each LFW photo (250 x 250, one centred face of about 110 px, like a face in a group photo) the face
is found in the original with MTCNN, then every built-in style is rendered at several strengths, with
and without face protection (`StyleParams.protect_faces`), and we ask two questions of each render:

- detected: does MTCNN still find a face overlapping the original box (IoU >= 0.5)?
- same person: does the dlib ResNet descriptor of that face (aligned in the render, inside the original
  box) stay within 0.6 of the original's (dlib's threshold for "same person")?

    python -m bench style_faces /work/shared/data/lfw-dev --photos 60

Results are cached per (style, strength, protection) in bench/out/style_faces.json; the table is
printed as Markdown. The LFW folder is an argument and never part of the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

SAME_PERSON = 0.6  # dlib's distance threshold for one person
OUT = Path(__file__).resolve().parent / "out" / "style_faces.json"


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    x1, y1, x2, y2 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area > 0 else 0.0


def photos(folder: Path, count: int) -> list[Path]:
    """The first photo of each of the first `count` people (sorted), so no person counts twice."""
    people = sorted(p for p in (folder / "images").iterdir() if p.is_dir())
    return [sorted(p.glob("*.jpg"))[0] for p in people[:count]]


def hog_recall(folder: Path, count: int) -> None:
    """How often the style worker's own detector (find_faces) finds the LFW face that protection needs."""
    from workers.faces.detectors import MTCNNDetector
    from workers.style.faces import find_faces

    detector = MTCNNDetector(min_face_size=20, score_threshold=0.9, device="cpu")
    found = total = extra = 0
    for path in photos(folder, count):
        image = Image.open(path).convert("RGB")
        reference = detector.detect(image)
        if not reference:
            continue
        total += 1
        boxes = find_faces(image)
        found += any(iou(box, face.box) >= 0.3 for box in boxes for face in reference)
        extra += sum(1 for box in boxes if not any(iou(box, face.box) >= 0.3 for face in reference))
    print(f"find_faces found the MTCNN face in {found}/{total} photos ({found / total:.0%}); {extra} other boxes")


def pictures(folder: Path) -> None:
    """The pictures of docs/styles.md, from scikit-image's astronaut (a NASA photo, public domain)."""
    from PIL import ImageDraw
    from skimage import data

    from workers.contract import BUILTIN_STYLE_NAMES, StyleParams
    from workers.style.engine import StyleEngine, expand_variants
    from workers.style.faces import default_protection, find_faces, protect_faces
    from workers.style.sheet import _font, wrap

    engine = StyleEngine(device="cpu", threads=1)
    folder.mkdir(parents=True, exist_ok=True)
    font = _font(12)
    side, label = 150, 30
    grid = Image.new("RGB", (7 * side, 4 * (side + label)), "white")
    draw = ImageDraw.Draw(grid)
    photo = Image.fromarray(data.astronaut()).resize((side, side), Image.Resampling.LANCZOS)
    faces = find_faces(photo)
    for i, name in enumerate(BUILTIN_STYLE_NAMES):
        variant = expand_variants(StyleParams(method="builtin", builtin=[i]))[0]
        x, y = (i % 7) * side, (i // 7) * (side + label)
        render = engine.render(photo, variant)
        grid.paste(protect_faces(render, photo, faces, default_protection(variant.builtin)), (x, y))  # as jobs do
        for n, line in enumerate(wrap(draw, f"{i} {name}", side - 4, font)):
            draw.text((x + 2, y + side + 1 + n * 14), line, fill=(20, 20, 20), font=font)
    grid.save(folder / "styles.jpg", quality=80, optimize=True)

    photo = Image.fromarray(data.astronaut()[:320, 60:380]).resize((240, 240), Image.Resampling.LANCZOS)
    boxes = find_faces(photo)
    styles = (3, 7, 17, 1)
    sheet = Image.new("RGB", (3 * 240, len(styles) * 240 + 24), "white")
    draw = ImageDraw.Draw(sheet)
    for c, text in enumerate(
        ("no protection (protect_faces 0)", "default (0.65; 0.8 for 15 and 17)", "protect_faces 0.9")
    ):
        draw.text((c * 240 + 4, 5), text, fill=(20, 20, 20), font=font)
    for r, style in enumerate(styles):
        variant = expand_variants(StyleParams(method="builtin", builtin=[style]))[0]
        render = engine.render(photo, variant)
        for c, amount in enumerate((0.0, default_protection(variant.builtin), 0.9)):
            sheet.paste(protect_faces(render, photo, boxes, amount), (c * 240, 24 + r * 240))
    sheet.save(folder / "faces-protect.jpg", quality=82, optimize=True)
    print(f"wrote {folder / 'styles.jpg'} and {folder / 'faces-protect.jpg'} ({len(boxes)} face found)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lfw", type=Path, nargs="?", help="the LFW folder (with images/)")
    ap.add_argument("--photos", type=int, default=60)
    ap.add_argument("--styles", default="all", help="comma-separated indices, or all")
    ap.add_argument("--strengths", default="1.0,0.7,0.5")
    ap.add_argument("--protect", default="0,1", help="protect_faces values to compare (0 = off)")
    ap.add_argument("--hog-recall", action="store_true", help="only measure the style worker's face detector")
    ap.add_argument("--pictures", type=Path, help="only draw the pictures of docs/styles.md into this folder")
    args = ap.parse_args(argv)
    if args.pictures:
        pictures(args.pictures)
        return
    if args.hog_recall:
        hog_recall(args.lfw, args.photos)
        return

    from workers.contract import NUM_BUILTIN_STYLES, StyleParams
    from workers.faces.detectors import MTCNNDetector
    from workers.faces.embedders import get_embedder
    from workers.style.engine import StyleEngine, expand_variants
    from workers.style.faces import protect_faces

    styles = range(NUM_BUILTIN_STYLES) if args.styles == "all" else [int(s) for s in args.styles.split(",")]
    strengths = [float(s) for s in args.strengths.split(",")]
    protections = [float(p) for p in args.protect.split(",")]
    detector = MTCNNDetector(min_face_size=20, score_threshold=0.9, device="cpu")
    embedder = get_embedder("dlib-resnet", "cpu")
    engine = StyleEngine(device="cpu", threads=1)

    originals = []
    for path in photos(args.lfw, args.photos):
        image = Image.open(path).convert("RGB")
        faces = detector.detect(image)
        if not faces:
            continue
        centre = min(faces, key=lambda f: abs((f.box[0] + f.box[2]) / 2 - 125) + abs((f.box[1] + f.box[3]) / 2 - 125))
        vector = embedder.embed_many([np.asarray(image)], [[centre]])[0][0]
        originals.append((image, centre, vector))
    cache: dict[str, Any] = json.loads(OUT.read_text()) if OUT.exists() else {}
    meta = {"photos": len(originals), "lfw": str(args.lfw)}
    if cache.get("_meta", {}).get("photos") != len(originals):
        cache = {}
    cache["_meta"] = meta
    t0 = time.perf_counter()
    for style in styles:
        for strength in strengths:
            todo = [p for p in protections if f"{style}/{strength}/{p}" not in cache]
            if not todo:
                continue
            variant = expand_variants(StyleParams(method="builtin", builtin=[style], strength=strength))[0]
            counts = {p: {"detected": 0, "same": 0, "distances": []} for p in todo}
            for image, face, vector in originals:
                render = engine.render(image, variant)
                for p in todo:
                    out = protect_faces(render, image, [face.box], p) if p else render
                    found = detector.detect(out)
                    c = counts[p]
                    c["detected"] += any(iou(f.box, face.box) >= 0.5 for f in found)
                    d = float(np.linalg.norm(embedder.embed_many([np.asarray(out)], [[face]])[0][0] - vector))
                    c["distances"].append(d)
                    c["same"] += d < SAME_PERSON
            n = len(originals)
            for p, c in counts.items():
                key = f"{style}/{strength}/{p}"
                cache[key] = {
                    "detected": c["detected"] / n,
                    "same_person": c["same"] / n,
                    "median_distance": float(np.median(c["distances"])),
                }
                print(f"{key}: {cache[key]}  ({time.perf_counter() - t0:.0f} s)", flush=True)
            OUT.parent.mkdir(parents=True, exist_ok=True)
            OUT.write_text(json.dumps(cache, indent=1))
    report(cache, styles, strengths, protections)


def report(cache: dict[str, Any], styles: Any, strengths: list[float], protections: list[float]) -> None:
    """Per style: without protection at each strength, then at full strength with each protection."""
    from workers.contract import BUILTIN_STYLE_NAMES

    n = cache["_meta"]["photos"]
    top = max(strengths)
    columns = [(s, 0.0) for s in strengths] + [(top, p) for p in protections if p]
    head = [f"strength {s:g}" + (f", protect {p:g}" if p else "") for s, p in columns]
    print(f"\n### Faces after stylizing ({n} LFW photos): found by MTCNN / still the same person (dlib < 0.6)\n")
    print("| style | " + " | ".join(head) + " |")
    print("| --- | " + " | ".join("---" for _ in head) + " |")
    totals: dict[tuple[float, float], list[float]] = {c: [] for c in columns}
    for style in styles:
        cells = []
        for s, p in columns:
            r = cache.get(f"{style}/{s}/{p}")
            if r:
                totals[(s, p)].append(r["same_person"])
            cells.append(f"{r['detected']:.0%} / {r['same_person']:.0%}" if r else "")
        print(f"| {style} {BUILTIN_STYLE_NAMES[style]} | " + " | ".join(cells) + " |")
    means = [f"{sum(v) / len(v):.0%}" if v else "" for v in totals.values()]
    print("| mean same person | " + " | ".join(means) + " |")
    for s, p in columns:
        kept = [st for st in styles if (r := cache.get(f"{st}/{s}/{p}")) and r["same_person"] < 0.9]
        print(f"- strength {s:g}, protect {p:g}: styles keeping fewer than 90 % of people: {kept}")


if __name__ == "__main__":
    main()
