"""A tenant's face library in the object store: every indexed photo and face, and one set of people.

The object store is the system of record (Redis only coordinates writers). Layout, under
``t/<tenant>/library/`` (key functions in `storage.keys`):

- ``segments/<id>/``: the faces one faces job brought (`SegmentDoc` rows, float32 vectors); immutable.
- ``heads/v<n>.json``: one version (`Head`): its segments and, per segment, who each face is; the people
  document (names, hidden, covers, counts, member lists, exemplar vectors); merge suggestions. Created
  once, with a conditional write: two writers can never both make version n.
- ``decisions/<id>.json``: every name, merge, move, cover and hide a user made, written before it is
  applied and never rewritten; each commit applies those not yet applied.

`LibraryStore` reads and commits, `LibraryState` is one version being changed. Reading needs only numpy
and pydantic (the API reads and changes the library; workers add faces and re-cluster).
"""

from storage.library.documents import Decision, Head, Member, Person, SegmentDoc, SegmentFace, SegmentRef
from storage.library.state import DecisionInvalid, LibraryState
from storage.library.store import LibraryBusy, LibraryStore

__all__ = [
    "Decision",
    "DecisionInvalid",
    "Head",
    "LibraryBusy",
    "LibraryState",
    "LibraryStore",
    "Member",
    "Person",
    "SegmentDoc",
    "SegmentFace",
    "SegmentRef",
]
