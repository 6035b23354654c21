"""What `api.cli` and `api.cli_people` share: the error a user can fix, and how a command prints."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from tqdm import tqdm


class CliError(Exception):
    """A problem the user can fix: printed as one line on stderr, exit code 2."""


Out = Callable[[argparse.Namespace, str, Any], None]


def video_tracks(videos: list[dict[str, Any]]) -> str:
    """ "3 face tracks in 2 videos": what a faces job found in its videos (a track is one face over time)."""
    tracks = sum(int(v.get("tracks") or 0) for v in videos)
    return f"{tracks} face track{'' if tracks == 1 else 's'} in {len(videos)} video{'' if len(videos) == 1 else 's'}"


def progress(total: float, unit: str, desc: str, **kw: Any) -> tqdm:
    """A progress bar on stderr; into a file or a pipe (a log) it writes a line every 30 s, not every tick."""
    interval = 0.1 if sys.stderr.isatty() else 30.0
    return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, mininterval=interval, **kw)
