"""Applying a logged decision to a library version (each commit applies the ones not yet applied)."""

from __future__ import annotations

import logging

from storage.library.documents import Decision
from storage.library.state import DecisionInvalid, LibraryState

log = logging.getLogger("nightshift.library")


def apply_decision(state: LibraryState, decision: Decision) -> bool:
    """Apply one decision; False when it no longer fits (e.g. its face was taken out of the library since).

    Either way it counts as applied: the log keeps it, and a re-cluster still honours what it said through
    the confirmations and rejections it left.
    """
    if decision.id in state.applied:
        return False
    try:
        check_decision(state, decision)
        ok = True
    except DecisionInvalid as exc:
        log.warning("decision %s (%s) no longer applies: %s", decision.id, decision.kind, exc)
        state.refused[decision.id] = str(exc)
        ok = False
    state.applied.append(decision.id)
    return ok


def check_decision(state: LibraryState, d: Decision) -> None:
    """Apply a decision to `state`, raising DecisionInvalid when it does not fit (the API's validation)."""
    person = d.person or ""
    if d.kind == "name":
        state.rename(person, d.name)
    elif d.kind == "hide":
        state.hide(person, bool(d.hidden))
    elif d.kind == "cover":
        state.set_cover(person, d.face)
    elif d.kind == "merge":
        state.merge(person, d.other or "")
    elif d.kind == "move_out":
        state.move_out(d.face or "", person)
    elif d.kind == "assign":
        state.assign_face(d.face or "", person)
    elif d.kind == "confirm":
        state.confirm(person, d.faces)
    elif d.kind == "adapter":
        state.adopt(d.adapter)
