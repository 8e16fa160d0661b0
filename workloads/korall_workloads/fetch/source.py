"""Where the link and the request headers come from: a mounted Secret's file, or the environment.

The operator writes a fresh presigned link into the link Secret before the old one expires, and the kubelet
refreshes a mounted Secret's files in place, so the file is read again before every attempt: a download that
retries after a long backoff, or a pod restarted an hour later, uses the newest link.
"""

from __future__ import annotations

from korall_contract import FetchEnv

from .failures import FetchFailure, Reason
from .settings import FetchSettings

# Headers a headers file may not set: the downloader owns them (resume, no compression, one connection).
RESERVED_HEADERS = frozenset({"range", "if-range", "accept-encoding", "host", "connection", "content-length"})


def read_link(settings: FetchSettings) -> str:
    """The link to download, from MODEL_URL_FILE if set, else MODEL_URL; NoLink if there is none."""
    if settings.url_file is not None:
        try:
            text = settings.url_file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            raise FetchFailure(
                Reason.NO_LINK,
                f"{FetchEnv.MODEL_URL_FILE} {settings.url_file} does not exist (is the link Secret mounted?)",
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise FetchFailure(Reason.NO_LINK, f"{FetchEnv.MODEL_URL_FILE} {settings.url_file}: {exc}") from None
        if not text:
            raise FetchFailure(Reason.NO_LINK, f"{FetchEnv.MODEL_URL_FILE} {settings.url_file} is empty")
        if not text.lower().startswith(("http://", "https://")) or any(c.isspace() for c in text):
            raise FetchFailure(Reason.NO_LINK, f"{FetchEnv.MODEL_URL_FILE} {settings.url_file} holds no http(s) URL")
        return text
    if settings.url:
        return settings.url
    raise FetchFailure(Reason.NO_LINK, f"no link: set {FetchEnv.MODEL_URL_FILE} or {FetchEnv.MODEL_URL}")


def read_headers(settings: FetchSettings) -> dict[str, str]:
    """`Name: value` lines of MODEL_HEADERS_FILE (blank lines and # comments skipped); {} when unset."""
    if settings.headers_file is None:
        return {}
    where = f"{FetchEnv.MODEL_HEADERS_FILE} {settings.headers_file}"
    try:
        text = settings.headers_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FetchFailure(Reason.INVALID_CONFIGURATION, f"{where} cannot be read: {exc}") from None
    headers: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        # The line itself is never shown: it holds a credential.
        if not sep or not name or any(c.isspace() for c in name) or not value.strip():
            raise FetchFailure(Reason.INVALID_CONFIGURATION, f"{where} line {number} is not `Name: value`")
        if name.lower() in RESERVED_HEADERS:
            raise FetchFailure(
                Reason.INVALID_CONFIGURATION, f"{where} line {number} sets {name}, which the downloader owns"
            )
        headers[name] = value.strip()
    return headers
