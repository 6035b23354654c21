"""The key layout of the bucket, in one place. Every key lives under its tenant's namespace.

    t/<tenant>/uploads/<upload-id>/<name>            files clients uploaded (presigned PUT)
    t/<tenant>/jobs/<job>/inputs/<item>-<name>       a job's own inputs (multipart, archive members)
    t/<tenant>/jobs/<job>/items/<item>/<output>      outputs of one item (a retry overwrites them)
    t/<tenant>/jobs/<job>/parts/<part>.<ext>         batch-level outputs (face tables, embeddings)
    t/<tenant>/jobs/<job>/videos/<video>/<name>      one video's plan, segment specs and joined outputs
    t/<tenant>/jobs/<job>/manifest.json              the finished job's record
    t/<tenant>/jobs/<job>/<name>                     job-level artefacts (contact sheet, people)
    t/<tenant>/galleries/<gallery>/v<version>.json   an enrolled gallery, versioned
    t/<tenant>/library/...                           the tenant's face library (see `storage.library`):
        heads/v<version>.json          one version of the library (immutable, created once)
        HEAD                           a hint: the newest version known
        segments/<segment>/faces.json.gz, embeddings.f32    the faces one job brought (immutable)
        intake/<job>.json              a finished job's segments, waiting to join
        objects/<version>/<name>       the state a version wrote (assignments, people, members, exemplars)
        decisions/<id>.json            one user decision each (names, merges, moves), never rewritten
        adapters/v<version>.json       a head learnt from those decisions, its training and validation
        adapters/weights/<sha256>.bin  that head's matrix (content-addressed, immutable)
    system/styles/index.json                         previews of the built-in styles (one per deployment)
    system/styles/<version>/<index>.jpg

Item NAMES (what a user sees, and the paths a download writes) are not keys: `item_name` cleans what a
client sends, and `output_name` derives each output's name from its item's name, so outputs are unique
within a job when item names are (RecordStore makes them so).
"""

from __future__ import annotations

import hashlib
import posixpath
import re
import unicodedata

_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_UNSAFE = re.compile(r"[^\w.\-]+", re.UNICODE)
MAX_NAME = 120
# characters no common file system takes in a name (Windows is the strictest), and control characters
_NOT_IN_FILE_NAMES = re.compile(r'[<>:"|?*\x00-\x1f\x7f]')
MAX_ITEM_NAME = 1024
MAX_SEGMENT_BYTES = 150  # leaves room for "__<variant>.<ext>" under the usual 255-byte limit of a file name


class BadKey(ValueError):
    """A client-supplied key or name cannot be used (traversal, empty, too long)."""


def check_tenant(tenant: str) -> str:
    if not _TENANT_RE.match(tenant):
        raise BadKey(f"bad tenant id {tenant!r}")
    return tenant


def tenant_root(tenant: str) -> str:
    return f"t/{check_tenant(tenant)}/"


def safe_name(name: str, fallback: str = "file") -> str:
    """A file name safe for a key: no directories, no control characters, bounded length."""
    base = posixpath.basename(name.replace("\\", "/"))
    base = unicodedata.normalize("NFC", base)
    base = _UNSAFE.sub("_", base).strip("._") or fallback
    if len(base) > MAX_NAME:
        stem, dot, ext = base.rpartition(".")
        ext = ext[:10] if dot else ""
        base = (stem if dot else base)[: MAX_NAME - len(ext) - 1] + ("." + ext if ext else "")
    return base


def relative(rel: str) -> str:
    """Validate a client-supplied key relative to the tenant's root (rejects `..`, absolute paths)."""
    if not rel or len(rel) > 1024:
        raise BadKey("an object key must be 1 to 1024 characters")
    if rel.startswith("/") or "\\" in rel or "\x00" in rel:
        raise BadKey(f"object key {rel!r} must be relative, with '/' separators")
    parts = rel.split("/")
    if any(p in ("..", ".") for p in parts):
        raise BadKey(f"object key {rel!r} must not contain '.' or '..' segments")
    return rel


def tenant_key(tenant: str, rel: str) -> str:
    return tenant_root(tenant) + relative(rel)


def strip_tenant(tenant: str, key: str) -> str:
    root = tenant_root(tenant)
    return key[len(root) :] if key.startswith(root) else key


def upload(tenant: str, upload_id: str, index: int, name: str) -> str:
    """The n-th file of an upload grant: the index keeps names that sanitise alike (`a b.zip`, `a_b.zip`) apart."""
    return f"{tenant_root(tenant)}uploads/{upload_id}/{index:04d}-{safe_name(name)}"


def job_root(tenant: str, job_id: str) -> str:
    return f"{tenant_root(tenant)}jobs/{job_id}/"


def job_input(tenant: str, job_id: str, index: int, name: str) -> str:
    return f"{job_root(tenant, job_id)}inputs/{index:07d}-{safe_name(name)}"


def item_prefix(tenant: str, job_id: str, index: int) -> str:
    return f"{job_root(tenant, job_id)}items/{index:07d}/"


def item_output(tenant: str, job_id: str, index: int, name: str) -> str:
    return item_prefix(tenant, job_id, index) + safe_name(name)


MAX_VARIANT = 64


def bounded_variant(variant: str) -> str:
    """A variant name of at most MAX_VARIANT characters: long ones keep a prefix and a hash of the whole."""
    variant = _UNSAFE.sub("_", variant).strip("._") or "v"
    if len(variant) <= MAX_VARIANT:
        return variant
    digest = hashlib.sha1(variant.encode()).hexdigest()[:12]
    return f"{variant[: MAX_VARIANT - 13]}-{digest}"


def variant_output(tenant: str, job_id: str, index: int, stem: str, variant: str, ext: str) -> str:
    """The output of one variant of an item: ``<stem>__<variant>.<ext>``, unique by construction.

    Only the stem is shortened to fit the name limit; the variant part is never cut (a long one is
    bounded with a hash of the whole), so two variants of one item never share a key.
    """
    tail = f"__{bounded_variant(variant)}.{safe_name(ext, 'bin')[:10]}"
    room = MAX_NAME - len(tail)
    base = safe_name(stem, "item")
    if len(base) > room:
        base = base[:room].rstrip("._") or "item"
    return item_prefix(tenant, job_id, index) + base + tail


def face_thumbnail(tenant: str, job_id: str, index: int, face: int) -> str:
    """The thumbnail of face `face` of item `index` of an index job."""
    return item_output(tenant, job_id, index, f"face-{face:03d}.jpg")


def face_thumbnail_of(tenant: str, face_id: str) -> str:
    """The thumbnail of a face id ``<job>:<item>:<face>``; raises ValueError for a malformed id."""
    job, item, face = face_id.split(":")
    return face_thumbnail(tenant, job, int(item), int(face))


def part(tenant: str, job_id: str, part_id: str, ext: str) -> str:
    return f"{job_root(tenant, job_id)}parts/{part_id}.{ext}"


def parts_prefix(tenant: str, job_id: str) -> str:
    return f"{job_root(tenant, job_id)}parts/"


def manifest(tenant: str, job_id: str) -> str:
    return f"{job_root(tenant, job_id)}manifest.json"


def job_artifact(tenant: str, job_id: str, name: str) -> str:
    return job_root(tenant, job_id) + safe_name(name)


def gallery(tenant: str, gallery_id: str, version: int) -> str:
    return f"{tenant_root(tenant)}galleries/{gallery_id}/v{version:05d}.json"


def gallery_prefix(tenant: str, gallery_id: str) -> str:
    return f"{tenant_root(tenant)}galleries/{gallery_id}/"


def galleries_prefix(tenant: str) -> str:
    return f"{tenant_root(tenant)}galleries/"


def gallery_input(tenant: str, gallery_id: str, unique: str, name: str) -> str:
    """A photo enrolled into a gallery (kept: the gallery lists the photos behind its vectors)."""
    return f"{tenant_root(tenant)}galleries-input/{safe_name(gallery_id)}/{unique}-{safe_name(name, 'photo')}"


QUERY_FOLDER = "tmp/"


def query_photo(tenant: str, unique: str, name: str) -> str:
    """A photo sent with a question (verify, search, identify); deleted after the answer, and expired by the
    bucket's lifecycle rule on ``t/*/tmp/`` if that fails."""
    return f"{tenant_root(tenant)}{QUERY_FOLDER}{unique}/{safe_name(name, 'photo')}"


def library_root(tenant: str) -> str:
    return f"{tenant_root(tenant)}library/"


def library_head(tenant: str, version: int) -> str:
    return f"{library_root(tenant)}heads/v{version:010d}.json"


def library_heads(tenant: str) -> str:
    return f"{library_root(tenant)}heads/"


def library_head_hint(tenant: str) -> str:
    return f"{library_root(tenant)}HEAD"


def library_segment(tenant: str, segment: str, name: str) -> str:
    return f"{library_root(tenant)}segments/{segment}/{name}"


def library_intake(tenant: str, job_id: str) -> str:
    return f"{library_root(tenant)}intake/{job_id}.json"


def library_intake_prefix(tenant: str) -> str:
    return f"{library_root(tenant)}intake/"


def library_object(tenant: str, version: int, name: str) -> str:
    return f"{library_root(tenant)}objects/v{version:010d}/{name}"


def library_decision(tenant: str, decision_id: str) -> str:
    return f"{library_root(tenant)}decisions/{decision_id}.json"


def library_decisions(tenant: str) -> str:
    return f"{library_root(tenant)}decisions/"


def library_adapter(tenant: str, version: int) -> str:
    """An adapter's document: its figures, whether it was adopted, and the adapter it would replace."""
    return f"{library_root(tenant)}adapters/v{version:06d}.json"


def library_adapters(tenant: str) -> str:
    return f"{library_root(tenant)}adapters/v"


def library_adapter_version(tenant: str, key: str) -> int:
    """The version of an adapter document's key; raises BadKey for any other key."""
    prefix = library_adapters(tenant)
    number = key[len(prefix) : -len(".json")] if key.startswith(prefix) and key.endswith(".json") else ""
    if not number.isdigit():
        raise BadKey(f"not an adapter of this library: {key!r}")
    return int(number)


def library_adapter_weights(tenant: str, digest: str) -> str:
    """An adapter's matrix, named by the sha256 of its bytes (two writers of one name wrote the same bytes)."""
    if not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise BadKey(f"not a sha256 digest: {digest!r}")
    return f"{library_root(tenant)}adapters/weights/{digest}.bin"


def video_root(tenant: str, job_id: str, video: int) -> str:
    """Everything about one video of a job; `video` is the index of the video's first item."""
    return f"{job_root(tenant, job_id)}videos/{video:07d}/"


def video_plan(tenant: str, job_id: str, video: int) -> str:
    """The video's probe and segment plan, written once at ingest."""
    return video_root(tenant, job_id, video) + "plan.json"


def video_segment(tenant: str, job_id: str, video: int, segment: int) -> str:
    """The spec of one segment item (its input object: a small JSON document, never the video)."""
    return video_root(tenant, job_id, video) + f"segment-{segment:05d}.json"


def is_video_segment(key: str) -> bool:
    """True for the input key of a segment item (see `video_segment`)."""
    return "/videos/" in key and key.rsplit("/", 1)[-1].startswith("segment-") and key.endswith(".json")


def segment_label(name: str, segment: int, segments: int) -> str:
    """The item name of one segment of video `name`: ``clip.mp4 [2/7]`` (the name alone for one segment)."""
    return name if segments == 1 else f"{name} [{segment + 1}/{segments}]"


def video_name(label: str) -> str:
    """The video's own name in a segment item's name (`segment_label` undone): what its outputs are named after."""
    return re.sub(r" \[\d+/\d+\]$", "", label) or label


def video_output(tenant: str, job_id: str, video: int, name: str) -> str:
    """A job-level output of one video (the joined, stylized video; a tracks table)."""
    return video_root(tenant, job_id, video) + safe_name(name)


def library_person_videos(tenant: str, person_id: str) -> str:
    """The videos a person appears in (one `PersonVideo` document each)."""
    return f"{library_root(tenant)}videos/{safe_name(person_id)}/"


def library_person_video(tenant: str, person_id: str, job_id: str, item: int) -> str:
    return f"{library_person_videos(tenant, person_id)}{safe_name(job_id)}-{item:07d}.json"


def item_name(raw: str | None, fallback: str) -> str:
    """A photo's display name: its path relative to the folder the user gave, with '/' separators.

    Backslashes become '/', empty, '.' and '..' segments go (a name is never absolute and never climbs),
    characters that file systems refuse become '_', and segments are bounded, so the name can be used
    as a relative path on the user's disk when results are downloaded.
    """
    text = unicodedata.normalize("NFC", (raw or "").replace("\\", "/"))
    parts = []
    for segment in text.split("/"):
        segment = _NOT_IN_FILE_NAMES.sub("_", segment).strip()
        if segment in ("", ".", ".."):
            continue
        parts.append(segment.encode()[:MAX_SEGMENT_BYTES].decode(errors="ignore"))
    name = "/".join(parts)[:MAX_ITEM_NAME].strip("/")
    return name or fallback


def split_name(name: str) -> tuple[str, str]:
    """``("DCIM/IMG_0001", ".JPG")`` for ``DCIM/IMG_0001.JPG``: the path without its extension, and the extension."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.rpartition(".")
    if not dot or not stem:  # no extension, or a dot file such as ".profile"
        return name, ""
    return (f"{head}/{stem}" if head else stem), "." + ext


def output_name(item: str, key: str) -> str:
    """The name of one output of an item: the item's path without its extension, ``__``, and what the output is.

    ``DCIM/IMG_0001.JPG`` with key ``.../IMG_0001__builtin-b7-s1.0-none-x1.0.png`` is named
    ``DCIM/IMG_0001__builtin-b7-s1.0-none-x1.0.png``; its face thumbnail ``face-003.jpg`` is
    ``DCIM/IMG_0001__face-003.jpg``. Outputs of one item differ in that last part (variant slugs and face
    numbers are unique per item), so names are unique within a job when item stems are.
    """
    base = key.rsplit("/", 1)[-1]
    # variant outputs are <safe stem>__<variant>.<ext>; the variant never holds "__" (bounded_variant)
    what = base.rsplit("__", 1)[-1]
    return f"{split_name(item)[0]}__{what}"


SYSTEM_ROOT = "system/"


def style_previews_index() -> str:
    """Which previews of the built-in styles exist (written last, after every preview)."""
    return f"{SYSTEM_ROOT}styles/index.json"


def style_preview(version: str, index: int) -> str:
    """The preview of built-in style `index`, rendered by model `version` (a new model renders anew)."""
    return f"{SYSTEM_ROOT}styles/{safe_name(version, 'v')}/{index:02d}.jpg"
