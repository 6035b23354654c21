"""Item names keep the path relative to the folder a user gave; outputs are named after them, unique in a job."""

from __future__ import annotations

import pytest

from storage import keys
from storage.names import JobKind, JobState
from storage.records import Item, Job
from tests.conftest import Services


def test_item_names_are_clean_relative_paths() -> None:
    assert keys.item_name("DCIM/100CANON/IMG_0001.JPG", "f") == "DCIM/100CANON/IMG_0001.JPG"
    assert keys.item_name("..\\..\\etc/passwd", "f") == "etc/passwd"  # never climbs, never absolute
    assert keys.item_name("/abs/./x.jpg", "f") == "abs/x.jpg"
    assert keys.item_name("C:\\Users\\me\\a<b>?.jpg", "f") == "C_/Users/me/a_b__.jpg"
    assert keys.item_name("\x00\x1f", "fallback") == "__"
    assert keys.item_name("", "fallback") == keys.item_name("../..", "fallback") == "fallback"
    long = keys.item_name("é" * 400 + ".jpg", "f")
    assert len(long.encode()) <= keys.MAX_SEGMENT_BYTES  # room left for "__<variant>.<ext>" in a file name


def test_output_names_are_the_item_path_plus_what_the_output_is() -> None:
    key = keys.variant_output("t1", "j1", 3, "IMG_0001", "builtin-b7-s1.0-none-x1.0", "png")
    named = keys.output_name("DCIM/100CANON/IMG_0001.JPG", key)
    assert named == "DCIM/100CANON/IMG_0001__builtin-b7-s1.0-none-x1.0.png"
    # a stem with "__" of its own still names the variant
    key = keys.variant_output("t1", "j1", 3, "my__photo", "builtin-b3-s1.0-none-x1.0", "jpg")
    assert keys.output_name("a/my__photo.jpg", key) == "a/my__photo__builtin-b3-s1.0-none-x1.0.jpg"
    thumb = keys.face_thumbnail("t1", "j1", 3, 12)
    assert keys.output_name("DCIM/100CANON/IMG_0001.JPG", thumb) == "DCIM/100CANON/IMG_0001__face-012.jpg"
    assert keys.split_name(".profile") == (".profile", "") and keys.split_name("a.b/c") == ("a.b/c", "")


@pytest.mark.integration
def test_item_names_are_unique_in_a_job_even_across_later_additions(services: Services) -> None:
    records = services.records
    job = Job(id="jnames1", kind=JobKind.STYLE, tenant="t1", state=JobState.QUEUED, params={}, inputs={})
    records.create_job(
        job,
        [
            Item(0, "a/1.jpg", "k"),
            Item(1, "b/1.jpg", "k"),
            Item(2, "a/1.png", "k"),
            Item(3, "A/1.JPG", "k"),
            Item(4, "../../x.jpg", "k"),
        ],
    )
    # an archive listed later holds the same paths
    later = [Item(5, "a/1.jpg", "k"), Item(6, "a/1~2.jpg", "k")]
    records.add_items(job.id, later)
    names = [it.name for it in records.get_items(job.id, range(7))]
    assert names == ["a/1.jpg", "b/1.jpg", "a/1~2.png", "A/1~3.JPG", "x.jpg", "a/1~4.jpg", "a/1~2~2.jpg"]
    # outputs drop the extension and are written to case-insensitive disks: no two stems may fold alike
    stems = [keys.split_name(n)[0].casefold() for n in names]
    assert len(set(stems)) == len(stems)
    # a redelivered listing (same item indices) gets the same names again
    assert records._unique_names(job.id, later) == [Item(5, "a/1~4.jpg", "k"), Item(6, "a/1~2~2.jpg", "k")]
    records.mark_ingested(job.id)  # no item comes after: the names are not kept


@pytest.mark.integration
def test_many_copies_of_one_name_stay_cheap(services: Services) -> None:
    records = services.records
    job = Job(id="jnames2", kind=JobKind.STYLE, tenant="t1", state=JobState.QUEUED, params={}, inputs={}, ingested=True)
    records.create_job(job, [Item(i, "IMG_0001.JPG", "k") for i in range(2000)])
    names = {it.name for it in records.get_items(job.id, range(2000))}
    assert len(names) == 2000 and "IMG_0001~2000.JPG" in names
