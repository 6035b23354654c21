"""A real headless Chromium for the web tests: Debian's `chromium`, driven by the `playwright` package.

Playwright's own browser download (`playwright install`) is never used: it needs the internet at test time.
The system Chromium is found on PATH, installed with apt-get when we are root on a Debian-like machine,
and otherwise the test is skipped with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM_NAMES = ("chromium", "chromium-browser")
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
APT_TIMEOUT_S = 900
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def _which_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _apt_install_chromium() -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_S, check=False)
        if proc.returncode != 0:
            pytest.skip(
                f"could not install chromium ({' '.join(cmd)} exited {proc.returncode}): {proc.stderr.strip()[-400:]}"
            )


def find_chromium() -> str:
    """The path of a system Chromium, installing Debian's package if we may; skips the test if there is none."""
    path = _which_chromium()
    if path:
        return path
    if not shutil.which("apt-get"):
        pytest.skip(
            "no chromium on PATH and no apt-get to install it: install Chromium (Debian: apt-get install "
            "chromium) to run the browser tests"
        )
    if os.geteuid() != 0:
        pytest.skip(
            "no chromium on PATH and not root, so it cannot be installed here: run "
            "'sudo apt-get install chromium' to run the browser tests"
        )
    _apt_install_chromium()
    path = _which_chromium()
    if not path:
        pytest.skip("apt-get installed chromium but no chromium binary is on PATH")
    return path


def launch_chromium(playwright: Any) -> Any:
    """A headless Chromium browser (playwright Browser) on the system binary, with no network side channels."""
    return playwright.chromium.launch(executable_path=find_chromium(), args=list(CHROMIUM_ARGS), headless=True)


@contextmanager
def failure_screenshot(pg: Any, name: str) -> Iterator[None]:
    """On a failure, what the page looked like goes to test-artifacts/ with the traceback."""
    try:
        yield
    except BaseException:
        shot(pg, name)
        raise


def shot(pg: Any, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / name), full_page=True)


def images_loaded(pg: Any, selector: str) -> int:
    """How many images match; fails unless every one of them decoded (naturalWidth > 0)."""
    pg.wait_for_function(
        "sel => [...document.querySelectorAll(sel)].every(i => i.complete && i.naturalWidth > 0)",
        arg=selector,
        timeout=15_000,
    )
    return int(pg.eval_on_selector_all(selector, "imgs => imgs.length"))
