"""A real headless browser for the live-page tests: Debian's chromium driven by selenium through chromedriver.

Nothing is downloaded: the driver path and the browser binary are given explicitly, so selenium never runs its
own driver manager. `scripts/sysdeps.sh` installs chromium and chromium-driver where it can; where they are
missing the page tests skip, saying so. Screenshots go to `.cache/screenshots/` (gitignored; the path is printed).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / ".cache" / "screenshots"
CHROMIUM = os.environ.get("KORALL_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("KORALL_CHROMEDRIVER", "/usr/bin/chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
]

T = TypeVar("T")

TAKEN: list[Path] = []
"""The screenshots this run saved (listed at the end of the run by tests/workloads/conftest.py)."""


def missing() -> str | None:
    """Why no browser test can run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (os.path.isfile(path) and os.access(path, os.X_OK)) and shutil.which(path) is None:
            return f"{path} not found: install Debian's {package} (make sysdeps does, where it can)"
    return None


class Browser:
    """One chromium for a test module; `console_errors()` drains what the page logged at level SEVERE."""

    def __init__(self) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="korall-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in [*FLAGS, f"--user-data-dir={self.profile}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        self.driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
        self.driver.set_window_size(1200, 900)

    def close(self) -> None:
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)

    def open(self, url: str) -> None:
        """Load `url` afresh (by way of about:blank: a URL that differs only in its #fragment would not reload)."""
        self.driver.get("about:blank")
        self.console_errors()  # what an earlier page logged is not this page's
        self.driver.get(url)

    def leave(self) -> None:
        """Close the page (and its open streams): a server stopping waits for the streams its clients hold."""
        self.driver.get("about:blank")

    def console_errors(self, expected: Callable[[str], bool] = lambda _: False) -> list[str]:
        """Errors the page logged (uncaught exceptions, console.error, failed loads) since the last call, except
        those `expected` accepts."""
        entries = self.driver.get_log("browser")
        return [e["message"] for e in entries if e["level"] == "SEVERE" and not expected(e["message"])]

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def text(self, css: str) -> str:
        return str(self.js("const e = document.querySelector(arguments[0]); return e ? e.innerText : '';", css))

    def wait(self, check: Callable[[], T | None], timeout: float, what: str) -> T:
        """Poll `check` until it returns something truthy; fail with `what` and the page's text after `timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                shot = self.screenshot(f"timeout-{what[:40].replace(' ', '-')}")
                page = self.text("body")
                raise AssertionError(f"timed out after {timeout} s waiting for {what}; screenshot {shot}\n{page}")
            time.sleep(0.1)

    def screenshot(self, name: str, size: tuple[int, int] | None = None) -> Path:
        """Save the viewport as `.cache/screenshots/NAME.png`, at `size` (width, height) if given."""
        before = self.driver.get_window_size()
        if size:
            self.driver.set_window_size(*size)
            time.sleep(0.3)  # a redraw at the new size
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.driver.save_screenshot(str(path))
        TAKEN.append(path)
        if size:
            self.driver.set_window_size(before["width"], before["height"])
        return path


@dataclass
class TokenGate:
    """Stands in for the services' bearer-token auth until it exists (issue 15): with `token` set, every route but
    the page, its files, /health and /ready answers 401 JSON without `Authorization: Bearer <token>`; `seen` keeps
    (path, Authorization) of each gated call, so a test can see what the page sent."""

    token: str | None = None
    seen: list[tuple[str, str]] = field(default_factory=list)

    def install(self, app: FastAPI) -> None:
        @app.middleware("http")
        async def check(request: Request, call_next: Any) -> Response:
            path = request.url.path
            if self.token is None or path in ("/", "/health", "/ready") or path.startswith("/static/"):
                return await call_next(request)  # type: ignore[no-any-return]
            auth = request.headers.get("authorization", "")
            self.seen.append((path, auth))
            if auth != f"Bearer {self.token}":
                body = {"error": {"code": "unauthorized", "message": "a valid bearer token is needed"}}
                return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})
            return await call_next(request)  # type: ignore[no-any-return]


@contextmanager
def serve(app: FastAPI, browser: Browser | None = None) -> Iterator[str]:
    """Run `app` under uvicorn (uvloop, httptools: as in production) on a free loopback port; yield its URL.

    On the way out the browser leaves its page, then the server gets one second to finish: a stream whose client
    has gone is noticed by the server only at its next write (FastAPI pings idle streams every 15 s), and without a
    bound on the graceful shutdown an idle stream would hold every test's end for that long."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app, host="127.0.0.1", port=port, loop="uvloop", http="httptools", log_level="warning",
        timeout_graceful_shutdown=1,
    )  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        if browser is not None:
            browser.leave()
        server.should_exit = True
        thread.join(timeout=30)
