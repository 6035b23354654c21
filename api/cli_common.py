"""What `api.cli` and `api.cli_people` share: the error a user can fix, and how a command prints."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any


class CliError(Exception):
    """A problem the user can fix: printed as one line on stderr, exit code 2."""


Out = Callable[[argparse.Namespace, str, Any], None]
