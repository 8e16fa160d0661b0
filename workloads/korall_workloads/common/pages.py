"""Each service's live page: plain files (HTML, CSS, a little JavaScript) shipped inside the package, no build step.

`GET /` serves the service's `static/index.html`; `GET /static/<file>` serves the service's folder first, then the
shared one (`common/static/`: the stylesheet, the fetch and stream helpers, the icon). Nothing is fetched from the
internet: edge nodes are often offline. Every URL in the pages is relative, so they work the same through
`kubectl port-forward`, a path-prefix proxy or a NodePort.

Caching: every file carries an ETag (Starlette's StaticFiles: from its size and modification time) and
`Cache-Control: no-cache`, so the browser keeps each file and revalidates it on every load with a 304 that has no
body. Long max-age with versioned asset URLs would save those few conditional requests (the files are a few KB),
but it needs a version threaded through every URL; revalidation needs nothing, and after a rollout a page can
never pair the new HTML with the old JavaScript.

The pages and their assets hold no data, so they need no credentials; everything they show comes from the API,
which they call with `fetch` (and a bearer token when the page was given one: see `static/korall.js`).
"""

from __future__ import annotations

import os
from os import PathLike

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import Headers
from starlette.responses import FileResponse
from starlette.staticfiles import NotModifiedResponse
from starlette.types import Receive, Scope, Send

PAGE = "index.html"
STATIC_PATH = "/static"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "img-src 'self' data: blob:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
"""Only this origin's scripts, styles and API: no inline script or style, nothing from elsewhere, no framing."""


class WholeFileResponse(FileResponse):
    """A page file, always sent whole: `Range` is ignored, as RFC 9110 lets a server do. Starlette's FileResponse
    answers a malformed or unsatisfiable range itself, in plain text (400, 416), where every error of the services
    is JSON; the files are a few KB, so ranges gain nothing."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        del self.headers["accept-ranges"]
        headers = [(name, value) for name, value in scope["headers"] if name not in (b"range", b"if-range")]
        await super().__call__({**scope, "headers": headers}, receive, send)


class PageFiles(StaticFiles):
    """StaticFiles (ETag, Last-Modified, 304 on If-None-Match) with `Cache-Control: no-cache` on every file, each
    sent whole (WholeFileResponse)."""

    def file_response(
        self, full_path: PathLike[str] | str, stat_result: os.stat_result, scope: Scope, status_code: int = 200
    ) -> Response:
        response = WholeFileResponse(full_path, status_code=status_code, stat_result=stat_result)
        if self.is_not_modified(response.headers, Headers(scope=scope)):
            return NotModifiedResponse(response.headers)
        return response

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def mount_page(app: FastAPI, service_package: str) -> PageFiles:
    """Serve `service_package`'s `static/index.html` at `GET /` and its assets (then the shared ones) at /static."""
    files = PageFiles(packages=[(service_package, "static"), ("korall_workloads.common", "static")])
    app.mount(STATIC_PATH, files, name="static")

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page(request: Request) -> Response:
        """The live page (see korall_workloads.common.pages)."""
        response = await files.get_response(PAGE, request.scope)
        response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return response

    return files
