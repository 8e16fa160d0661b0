"""One HTTP GET of the model, resumed where the partial file ends and streamed through the hash to disk.

Standard library only (urllib: HTTPS, proxies from the environment, redirects). Memory stays flat whatever
the file's size: blocks of 1 MiB are read, written and hashed (partial.py) through a ring of four buffers.
Each outcome of an attempt is
classified here: done, `Transient` (another attempt may fix it: a dropped connection, a timeout, a 5xx, a
refused range) or a `FetchFailure` that no retry fixes (403, 404, too large, a full disk).
"""

from __future__ import annotations

import http.client
import logging
import re
import shutil
import urllib.error
import urllib.request
from urllib.parse import urlsplit

from .failures import FetchFailure, Reason, redact
from .partial import Partial

log = logging.getLogger(__name__)

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class Transient(Exception):
    """An attempt failed in a way that another attempt (after a backoff) may fix."""


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follow up to 5 redirects; headers from the headers file go to the original host only (as curl does)."""

    max_redirections = 5

    def redirect_request(
        self, req: urllib.request.Request, fp: object, code: int, msg: str, headers: object, newurl: str
    ) -> urllib.request.Request | None:
        if urlsplit(newurl).scheme not in ("http", "https"):  # urllib would follow ftp:// too
            return None  # not followed: the 3xx itself becomes the (HttpError) answer
        new = super().redirect_request(req, fp, code, msg, headers, newurl)  # type: ignore[arg-type]
        if new is not None and urlsplit(newurl).netloc != urlsplit(req.full_url).netloc:
            for name in [n for n in new.headers if n.lower() != "range"]:
                new.remove_header(name)
        return new


_OPENER = urllib.request.build_opener(_Redirects)


def _refusal(exc: urllib.error.HTTPError, url: str) -> Exception:
    """Map an HTTP error status to a FetchFailure (final) or Transient (retry)."""
    try:
        body = exc.read(4096).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException):
        body = ""
    finally:
        exc.close()
    code = re.search(r"<Code>([^<]{1,100})</Code>", body)
    text = re.search(r"<Message>([^<]{1,300})</Message>", body)
    s3 = f" ({code.group(1)}: {text.group(1)})" if code and text else f" ({code.group(1)})" if code else ""
    where = f"{exc.code} from {redact(url)}{s3}"
    if exc.code in RETRYABLE_STATUS:
        return Transient(f"HTTP {where}")
    if exc.code == 403 and "expired" in body.lower():
        return FetchFailure(Reason.LINK_EXPIRED, f"the link expired before it was used: HTTP {where}")
    if exc.code in (401, 403):
        return FetchFailure(Reason.ACCESS_DENIED, f"the server refused the link: HTTP {where}")
    if exc.code in (404, 410):
        return FetchFailure(Reason.NOT_FOUND, f"no such object: HTTP {where}")
    if exc.code == 416:
        return Transient(f"HTTP {where}: the partial file is not a prefix of the object; starting over")
    return FetchFailure(Reason.HTTP_ERROR, f"HTTP {where}")


def _expected_total(resp: http.client.HTTPResponse, partial: Partial) -> int | None:
    """The object's full length if the server said it; restarts the partial if the server ignored Range."""
    length = resp.getheader("Content-Length")
    if resp.status == 206:
        match = _CONTENT_RANGE.match(resp.getheader("Content-Range") or "")
        if not match or int(match.group(1)) != partial.size:
            asked = partial.size
            partial.restart()
            raise Transient(f"the server answered the range from byte {asked} with {match and match.group(0)!r}")
        return int(match.group(3)) if match.group(3) != "*" else None
    if partial.size:
        log.info("the server ignored the Range request (200 instead of 206); downloading from the start")
        partial.restart()
    return int(length) if length and length.isdigit() else None


def download(
    url: str, headers: dict[str, str], partial: Partial, *, max_bytes: int, timeout_s: float, free_bytes_dir: str
) -> None:
    """One attempt: GET the object from `partial.size` on and append it. Returns when the body is complete."""
    request = urllib.request.Request(url, headers={**headers, "Accept-Encoding": "identity"})
    if partial.size:
        request.add_header("Range", f"bytes={partial.size}-")
    try:
        resp = _OPENER.open(request, timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        if exc.code == 416:  # the partial file is as long as the object or longer, yet did not verify
            partial.restart()
        raise _refusal(exc, url) from None
    except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError, refused, reset, timeout, bad URL
        if isinstance(exc, ValueError):
            raise FetchFailure(Reason.NO_LINK, f"the link {redact(url)} is not a valid URL: {exc}") from None
        raise Transient(f"cannot reach {redact(url)}: {getattr(exc, 'reason', None) or exc}") from None
    with resp:
        total = _expected_total(resp, partial)
        if total is not None:
            if total > max_bytes:
                raise FetchFailure(
                    Reason.SIZE_LIMIT_EXCEEDED, f"the object is {total} bytes, over MODEL_MAX_BYTES={max_bytes}"
                )
            _check_space(free_bytes_dir, total - partial.size)
        try:
            _receive(resp, partial, max_bytes)
        except (OSError, http.client.HTTPException) as exc:  # IncompleteRead, reset, timeout mid-body
            raise Transient(f"the connection broke after {partial.size} bytes: {type(exc).__name__}: {exc}") from None
    if total is not None and partial.size != total:
        raise Transient(f"the body ended at {partial.size} of {total} bytes")


def _receive(resp: http.client.HTTPResponse, partial: Partial, max_bytes: int) -> None:
    """Read the body block by block into the partial file, through the hash, within the size limit."""
    while True:
        buf = partial.hashing.buffer()
        handed_over = False
        try:
            n = resp.readinto(buf)
            if not n:
                return
            if partial.size + n > max_bytes:
                raise FetchFailure(
                    Reason.SIZE_LIMIT_EXCEEDED, f"the object streams past MODEL_MAX_BYTES={max_bytes} bytes"
                )
            partial.append(buf, n)
            handed_over = True
        finally:
            if not handed_over:
                partial.hashing.release(buf)


def _check_space(folder: str, needed: int) -> None:
    """Refuse up front a download that cannot fit (DiskFull), rather than filling the node's disk first."""
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if needed > free:
        raise FetchFailure(
            Reason.DISK_FULL, f"the model needs {needed} more bytes but the cache's disk has {free} free"
        )
