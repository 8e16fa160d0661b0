"""Fixtures for the downloader tests (helpers in fetch_helpers.py: a module named conftest is not importable
from tests, as every test folder has one)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fetch_helpers import Run, RunFetch, run_fetch_process
from object_server import ObjectServer


@pytest.fixture
def run_fetch(tmp_path: Path) -> RunFetch:
    def run(**env: str) -> Run:
        return run_fetch_process(tmp_path, **env)

    return run


@pytest.fixture
def server() -> Iterator[ObjectServer]:
    with ObjectServer() as srv:
        yield srv
