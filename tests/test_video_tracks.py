"""Linking face detections into tracks, choosing crops, subtitles of who is on screen, matching people."""

from __future__ import annotations

import numpy as np

from workers.faces.types import Face
from workers.video.attach import match_tracks
from workers.video.tracks import Tracker, frontalness, iou, join_tracklets, webvtt

FRAME = np.zeros((240, 320, 3), np.uint8)


def face(x: float, y: float = 60.0, size: float = 60.0, score: float = 0.99, turn: float = 0.0) -> Face:
    cx = x + size / 2
    lm = np.array(
        [[cx - 12, y + 22], [cx + 12, y + 22], [cx + turn, y + 34], [cx - 10, y + 46], [cx + 10, y + 46]], np.float32
    )
    return Face(box=(x, y, x + size, y + size), score=score, landmarks=lm)


def textured(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, FRAME.shape, dtype=np.uint8)


def test_iou_and_frontalness() -> None:
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == 1 / 3
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0
    assert frontalness(face(0)) > 0.95 > 0.5 > frontalness(face(0, turn=10))


def test_overlapping_boxes_continue_a_track_and_a_cut_or_a_gap_ends_it() -> None:
    tracker = Tracker(link_iou=0.3, max_gap_s=1.0, keep=2)
    a = tracker.feed(0.0, 0, textured(0), [face(10), face(200)])
    b = tracker.feed(0.5, 12, textured(1), [face(205), face(18)])  # both moved a little, listed the other way
    assert b == [a[1], a[0]]
    c = tracker.feed(2.0, 50, textured(2), [face(20)])  # 1.5 s later: past the gap, a new track
    assert c[0] not in a
    tracker.cut()
    d = tracker.feed(2.5, 62, textured(3), [face(20)])  # same place, new shot: a new track
    assert d[0] not in a + c
    tracklets = tracker.finish()
    assert [len(t.times) for t in tracklets] == [2, 2, 1, 1]
    assert all(len(t.best) <= 2 for t in tracklets)


def test_only_the_best_crops_are_kept_for_embedding() -> None:
    tracker = Tracker(keep=2)
    sharp, blurred = textured(5), np.full(FRAME.shape, 128, np.uint8)
    tracker.feed(0.0, 0, blurred, [face(100, score=0.95)])
    tracker.feed(0.5, 1, sharp, [face(102, turn=14)])  # sharp but turned away
    tracker.feed(1.0, 2, sharp, [face(104)])  # sharp and frontal: the best
    tracker.feed(1.5, 3, blurred, [face(106)])
    [track] = tracker.finish()
    assert sorted(c.frame for c in track.best) == [1, 2]
    assert max(track.best).frame == 2


def test_tracks_of_one_person_join_but_never_two_faces_seen_together() -> None:
    tracker = Tracker()
    tracker.feed(0.0, 0, textured(0), [face(10), face(200)])  # tracklets 0 and 1 together
    tracker.cut()
    tracker.feed(5.0, 125, textured(1), [face(10)])  # tracklet 2: person A again
    tracklets = tracker.finish()
    a, b = np.ones(128, np.float32) * 0.1, np.ones(128, np.float32) * 0.1
    b[0] += 0.02  # A and B look alike (closer than the threshold) but were on screen together
    tracks = join_tracklets(tracklets, [a, b, a], [3, 3, 1], tracker.samples, threshold=0.5)
    assert sorted(sorted(tr.id for tr in t.tracklets) for t in tracks) == [[0, 2], [1]]
    [joined] = [t for t in tracks if len(t.tracklets) == 2]
    assert joined.embedded == 4 and joined.ranges(0.25, 10.0) == [(0.0, 0.25), (4.75, 5.25)]


def test_webvtt_lists_who_is_on_screen() -> None:
    tracker = Tracker()
    tracker.feed(1.0, 25, textured(0), [face(10)])
    tracker.feed(2.0, 50, textured(1), [face(12), face(200)])
    tracker.feed(3.0, 75, textured(2), [face(14)])
    tracklets = tracker.finish()
    far = [np.full(128, v, np.float32) for v in (0.0, 1.0)]
    tracks = join_tracklets(tracklets, far, [1, 1], tracker.samples, threshold=0.5)
    vtt = webvtt(tracks, ["Ann", "Bo"], pad=0.25, duration=4.0)
    assert vtt.splitlines()[:2] == ["WEBVTT", ""]
    cues = [block.splitlines() for block in vtt.strip().split("\n\n")[1:]]
    assert [c[1:] for c in cues] == [
        ["00:00:00.750 --> 00:00:01.750", "Ann"],
        ["00:00:01.750 --> 00:00:02.250", "Ann, Bo"],
        ["00:00:02.250 --> 00:00:03.250", "Ann"],
    ]


def test_a_track_joins_a_person_only_on_a_clear_match() -> None:
    people = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 0.1]], np.float32)
    ids = ["ann", "bo", "bo"]
    tracks = [np.array([0.1, 0.0]), np.array([0.5, 0.0]), np.array([0.95, 0.05]), np.array([5.0, 5.0])]
    got = match_tracks(tracks, people, ids, assign=0.45, margin=0.1)
    assert got[0] is not None and got[0][0] == "ann"
    assert got[1] is None  # between the two: not clear
    assert got[2] is not None and got[2][0] == "bo"  # two photos of Bo: the mean of the two nearest counts
    assert got[3] is None  # nobody near: waits as unassigned
    assert match_tracks([], people, ids, assign=0.45, margin=0.1) == []
