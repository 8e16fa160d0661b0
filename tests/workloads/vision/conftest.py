"""Fixtures for the vision tests: real photos and one loaded Detector shared by the whole session.

Loading and warming the model takes a fraction of a second, and every app built on the shared detector reuses
it, so the vision test set stays fast.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from korall_workloads.vision.app import create_app
from korall_workloads.vision.detector import Detector
from vision_helpers import EMPTY_SCENE, PHOTOS, encode, photo_rgb, settings


@pytest.fixture(scope="session")
def jpegs() -> dict[str, bytes]:
    return {name: encode(photo_rgb(name), quality=92) for name in [*PHOTOS, EMPTY_SCENE]}


@pytest.fixture(scope="session")
def detector() -> Iterator[Detector]:
    det = Detector(settings())
    det.load()
    yield det
    det.close()


@pytest.fixture(scope="module")
def client(detector: Detector) -> Iterator[TestClient]:
    with TestClient(create_app(settings(), detector=detector)) as c:
        yield c
