"""Shared by the workload tests: a real headless browser (tests/workloads/browser.py) for the live pages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browser import Browser, missing


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One chromium per test module (about 1.5 s to start); skipped, with the reason, where it is not installed."""
    why = missing()
    if why:
        pytest.skip(why)
    started = Browser()
    try:
        yield started
    finally:
        started.close()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say where the live pages' screenshots of this run are."""
    from browser import TAKEN

    if TAKEN:
        terminalreporter.write_sep("-", f"{len(TAKEN)} screenshots of the live pages")
        for path in TAKEN:
            terminalreporter.write_line(str(path))
