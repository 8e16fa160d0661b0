"""Every way a model download can fail: one reason word, one exit code, one line for the termination message.

The operator reads the init container's termination message (`ModelDownloadFailed: <Reason>: <detail>`) and
turns it into the InferenceModel's Degraded condition, a Warning Event and `lastFailure`; the exit code says
the same to anyone looking at the pod. This table is the only place that defines both.
"""

from __future__ import annotations

import enum
import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from korall_contract import MODEL_DOWNLOAD_FAILED

MAX_MESSAGE_CHARS = 1024  # Kubernetes keeps 4096 bytes of a termination message; one line a person reads is less


class Reason(enum.Enum):
    """Reason word and exit code of each failure (0 is success, 1 an unexpected bug)."""

    UNEXPECTED = ("Unexpected", 1)
    INVALID_CONFIGURATION = ("InvalidConfiguration", 2)  # a bad environment value or headers file
    NO_LINK = ("NoLink", 3)  # no link: MODEL_URL_FILE missing or empty and no MODEL_URL
    CHECKSUM_MISMATCH = ("ChecksumMismatch", 4)  # the bytes do not hash to MODEL_SHA256; nothing was kept
    LINK_EXPIRED = ("LinkExpired", 5)  # 403 Request has expired (a presigned link used too late)
    ACCESS_DENIED = ("AccessDenied", 6)  # 401/403 otherwise: bad signature, wrong credentials, no permission
    NOT_FOUND = ("NotFound", 7)  # 404/410: no such object or bucket
    SIZE_LIMIT_EXCEEDED = ("SizeLimitExceeded", 8)  # larger than MODEL_MAX_BYTES
    DISK_FULL = ("DiskFull", 9)  # ENOSPC/EDQUOT, or the announced length does not fit
    HTTP_ERROR = ("HttpError", 10)  # any other status the server refused with (not retried)
    NETWORK_ERROR = ("NetworkError", 11)  # connection failures, 5xx, timeouts: every attempt used up
    LOCK_TIMEOUT = ("LockTimeout", 12)  # another process on the node held the download's lock too long
    CACHE_ERROR = ("CacheError", 13)  # the cache folder cannot be written (permissions, read-only, not a dir)

    @property
    def word(self) -> str:
        return self.value[0]

    @property
    def exit_code(self) -> int:
        return self.value[1]


class FetchFailure(Exception):
    """A download that ended for good; `message` says what happened and what to fix, without secrets."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(f"{reason.word}: {message}")
        self.reason = reason
        self.message = message

    def termination_line(self) -> str:
        return one_line(f"{MODEL_DOWNLOAD_FAILED}: {self.reason.word}: {self.message}")


def one_line(text: str) -> str:
    """Collapse whitespace to single spaces and cut to MAX_MESSAGE_CHARS."""
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if len(flat) <= MAX_MESSAGE_CHARS else flat[: MAX_MESSAGE_CHARS - 3] + "..."


def redact(url: str) -> str:
    """The URL without its query, fragment and user info: a presigned link's query carries its signature."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    shown = urlunsplit((parts.scheme, host, parts.path, "", ""))
    return shown + ("?..." if parts.query else "")


def write_termination_message(path: Path, line: str) -> None:
    """Write the outcome where Kubernetes reads it. Only into an existing file: the kubelet creates it, and a
    run outside a pod must not create /dev/termination-log."""
    try:
        with path.open("r+", encoding="utf-8") as f:
            f.truncate(0)
            f.write(line + "\n")
    except OSError:
        pass
