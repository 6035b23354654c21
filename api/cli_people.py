"""`nightshift people ...`, `verify`, `identify`, `faces --unassigned`: the library of people from the command
line (built on api.client; `api.cli` adds these commands to its parser)."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

from api.cli_common import CliError, Out, progress, video_tracks
from api.client import Client


def _when(ts: float | None) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d") if ts else "date unknown"


def _people(n: int) -> str:
    return "1 person" if n == 1 else f"{n} people"


def person_line(p: dict[str, Any]) -> str:
    name = p.get("name") or "(unnamed)"
    hidden = "  [hidden]" if p.get("hidden") else ""
    return (
        f"{p['id']}  {name:<28} {p['faces']:>5} faces in {p['photos']:>5} photos, latest {_when(p.get('latest'))}"
        + hidden
    )


def faces_summary(job: dict[str, Any]) -> str | None:
    """The last line of `nightshift faces --wait`: "N faces in M photos; P people (K new, J grew), U unassigned"."""
    summary = job.get("summary") or {}
    lib = summary.get("library")
    faces = summary.get("faces")
    if faces is None:
        return None
    line = f"{faces} faces in {summary.get('photos', 0)} photos"
    if summary.get("videos"):
        line += f" and {video_tracks(summary['videos'])}"
    if not lib:
        return line
    if lib.get("pending"):
        return f"{line}; the library is busy: they join it shortly (nightshift people refresh)"
    refused = "".join(f"\n  not added: {r}" for r in lib.get("refused", []))
    return (
        f"{line}; {_people(lib.get('people', 0))} ({lib.get('new_people', 0)} new, {lib.get('grew', 0)} grew), "
        f"{lib.get('unassigned', 0)} unassigned" + refused
    )


def cmd_people(args: argparse.Namespace, client: Client, out: Out) -> int:
    action = args.action or "list"
    if action == "list":
        people = list(client.people("all" if args.all else "visible"))
        lib = client.library()
        stats = lib.get("stats", {})
        hidden = "" if args.all or not stats.get("hidden") else f", {stats['hidden']} hidden (--all lists them)"
        header = (
            f"{_people(stats.get('people', 0))} ({stats.get('named', 0)} named{hidden}), "
            f"{stats.get('faces', 0)} faces, {stats.get('unassigned', 0)} unassigned"
        )
        out(args, "\n".join([header, *(person_line(p) for p in people)]), {"library": lib, "people": people})
        return 0
    if action == "show":
        return _show(args, client, out)
    if action == "name":
        person = client.update_person(args.person, name=" ".join(args.name))
        out(args, f"{person['person']['id']} is now {person['person']['name'] or '(unnamed)'}", person)
        return 0
    if action in ("hide", "unhide"):
        person = client.update_person(args.person, hidden=action == "hide")
        out(args, f"{person['person']['id']} {'hidden' if action == 'hide' else 'shown again'}", person)
        return 0
    if action == "merge":
        merged = client.merge(args.person, args.other)
        p = merged["person"]
        out(args, f"merged {args.other} into {p['id']} ({p['name'] or 'unnamed'}): {p['faces']} faces", merged)
        return 0
    if action == "recluster":
        job = client.recluster()
        out(
            args,
            f"re-clustering the library: job {job['id']} (names, merges and moves are kept); "
            f"follow with: nightshift wait {job['id']}",
            job,
        )
        return 0
    if action == "refresh":
        res = client.request("POST", "/v1/people/refresh")
        out(args, f"folding {res['waiting_jobs']} waiting job(s) into the library", res)
        return 0
    if action in ("learn", "learned", "rollback"):
        return _learning(action, args, client, out)
    raise CliError(f"nightshift people: unknown action {action!r}")


def adapter_line(a: dict[str, Any]) -> str:
    before, after = a["before"], a["after"]
    mark = "in use" if a["in_use"] else ("accepted" if a["accepted"] else "refused")
    return (
        f"v{a['version']}  {_when(a['created_at'])}  {mark:<8}  held-out faces right {before['right']} -> "
        f"{after['right']}, wrong {before['wrong']} -> {after['wrong']}; verification "
        f"{before['verification']:.3f} -> {after['verification']:.3f}; {a['changed_people']} of "
        f"{a['unlabelled_people']} unnamed people would change"
    )


def _learning(action: str, args: argparse.Namespace, client: Client, out: Out) -> int:
    if action == "learned":
        res = client.learned()
        head = f"in use: v{res['in_use']}" if res["in_use"] else "in use: nothing learnt (the raw face vectors)"
        out(args, "\n".join([head, *(adapter_line(a) for a in res["adapters"])]), res)
        return 0
    if action == "rollback":
        res = client.rollback_learning(recluster=args.recluster)
        back = f"v{res['in_use']}" if res["in_use"] else "the raw face vectors"
        line = f"stopped using v{res['rolled_back']}; faces are compared with {back} again"
        if res.get("pending"):
            line += " (the library is busy: it applies when that ends)"
        if res.get("job"):
            line += f"; re-clustering: job {res['job']['id']}"
        out(args, line, res)
        return 0
    job = client.learn(**({"recluster": True} if args.recluster else {}))
    if not args.wait:
        out(
            args,
            f"learning from your names: job {job['id']}; follow with: nightshift wait {job['id']}, then "
            "nightshift people learned",
            job,
        )
        return 0
    done = client.wait(job["id"])
    summary = done.get("summary") or {}
    if done["state"] != "succeeded":
        errors = [r.get("error") for r in client.results(job["id"]) if r.get("error")]
        out(args, f"learning failed: {errors[0] if errors else done.get('error') or done['state']}", done)
        return 1
    verdict = "now in use" if summary.get("adopted") else "not used"
    out(args, f"learnt head v{summary.get('adapter')}: {verdict}. {summary.get('reason', '')}", done)
    return 0


def _show(args: argparse.Namespace, client: Client, out: Out) -> int:
    page = client.person(args.person, limit=1000)
    p = page["person"]
    lines = [person_line(p)]
    photos = list(client.person_photos(p["id"]))
    for photo in photos:
        faces = ", ".join(f["face"] for f in photo["faces"])
        lines.append(f"  {_when(photo.get('taken'))}  {photo.get('name') or photo['key']}  face {faces}")
    for video in page.get("videos", []):
        ranges = ", ".join(f"{a:.1f}-{b:.1f} s" for a, b in video["ranges"])
        lines.append(f"  video {video['name']}: on screen {ranges}")
    if photos:
        lines.append("(a face that is not them: nightshift assign FACE none)")
    if args.download:
        folder = Path(args.download) / (p["name"] or p["id"])
        folder.mkdir(parents=True, exist_ok=True)
        bar = None if args.json else progress(len(photos), "photo", "download")
        written = 0
        for photo in photos:
            name = Path(photo.get("name") or photo["key"]).name  # the name the user gave the photo, when known
            target = folder / name
            if target.exists():
                target = folder / f"{photo['photo'][:8]}-{name}"
            if not target.exists():
                client.download(photo["url"], target)
                written += 1
            if bar is not None:
                bar.update(1)
        if bar is not None:
            bar.close()
        lines.append(f"{written} photos in {folder}")
    out(args, "\n".join(lines), {**page, "photos": photos})
    return 0


def cmd_unassigned(args: argparse.Namespace, client: Client, out: Out) -> int:
    faces = list(client.unassigned())
    lines = [f"{len(faces)} faces belong to nobody yet (assign one: nightshift assign FACE PERSON)"]
    lines += [
        f"  {f['face']}  {f.get('photo_name') or f['photo_key']}"
        + (f"  (not {', '.join(f['not'])})" if f.get("not") else "")
        for f in faces
    ]
    out(args, "\n".join(lines), faces)
    return 0


def cmd_assign(args: argparse.Namespace, client: Client, out: Out) -> int:
    person = None if args.person in ("none", "nobody", "-") else args.person
    res = client.set_face_person(args.face, person)
    out(args, f"face {args.face} -> {person or 'nobody (moved out)'}", res)
    return 0


def cmd_verify(args: argparse.Namespace, client: Client, out: Out) -> int:
    res = client.verify(args.a, args.b)
    verdict = "the same person" if res["same_person"] else "different people"
    out(args, f"{verdict} (distance {res['distance']:.3f}, threshold {res['threshold']:.3f}, {res['model']})", res)
    return 0 if res["same_person"] else 1


def cmd_identify(args: argparse.Namespace, client: Client, out: Out) -> int:
    res = client.identify(args.photo)
    lines = [f"{len(res['faces'])} face(s) in {args.photo}"]
    for n, f in enumerate(res["faces"], 1):
        who = f["name"] or (f"{f['person']} (unnamed)" if f["person"] else "unknown")
        lines.append(f"  face {n} at {[round(v) for v in f['box']]}: {who}")
    out(args, "\n".join(lines), res)
    return 0


Command = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def add_parsers(command: Command, client_of: Callable[[argparse.Namespace], Client], out: Out) -> None:
    """The library's commands, added with `api.cli`'s `command(name, func, help)`; each runs with the client
    `client_of(args)` gives and prints through `out`."""

    def run(func: Callable[[argparse.Namespace, Client, Out], int]) -> Callable[[argparse.Namespace], int]:
        return lambda args: func(args, client_of(args), out)

    pe = command("people", run(_people_args), "the library's people: list, show, name, merge, hide, recluster, learn")
    pe.add_argument(
        "action",
        nargs="?",
        choices=[
            "list",
            "show",
            "name",
            "merge",
            "hide",
            "unhide",
            "recluster",
            "refresh",
            "learn",
            "learned",
            "rollback",
        ],
        help="default: list. learn: learn from your names (a head used only when it helps); "
        "learned: what was learnt; rollback: stop using the head in use",
    )
    pe.add_argument("person", nargs="?", help="a person id (show, name, merge, hide)")
    pe.add_argument("rest", nargs="*", help="name: the name; merge: the person to merge into PERSON")
    pe.add_argument("--all", action="store_true", help="list hidden people too")
    pe.add_argument("--download", metavar="DIR", help="show: download the person's photos into DIR/<name>")
    pe.add_argument("--wait", action="store_true", help="learn: wait for the verdict")
    pe.add_argument("--recluster", action="store_true", help="learn, rollback: then re-cluster the library")
    asg = command("assign", run(cmd_assign), "say who a face is: nightshift assign FACE PERSON (or none)")
    asg.add_argument("face")
    asg.add_argument("person")
    ve = command("verify", run(cmd_verify), "are two photos the same person?")
    ve.add_argument("a")
    ve.add_argument("b")
    ide = command("identify", run(cmd_identify), "who is in a photo, by the library's people")
    ide.add_argument("photo")


def _people_args(args: argparse.Namespace, client: Client, out: Out) -> int:
    if args.action in ("show", "name", "merge", "hide", "unhide") and not args.person:
        raise CliError(f"nightshift people {args.action}: give a person id (see nightshift people)")
    if args.action == "name":
        if not args.rest:
            raise CliError("nightshift people name PERSON NAME...: give the name")
        args.name = args.rest
    if args.action == "merge":
        if len(args.rest) != 1:
            raise CliError("nightshift people merge INTO OTHER: two person ids")
        args.other = args.rest[0]
    return cmd_people(args, client, out)
