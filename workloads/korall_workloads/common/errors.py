"""The kinds of error a workload's client may be told about, as the domain sees them: no HTTP in here.

Code below the HTTP layer (image decoding, the detector, the model catalog, the audio capture, the camera) raises
subclasses of these kinds. Each error carries a stable machine-readable `code` (`invalid_image`, `not_ready`...)
and a message a person can act on, never a status: which HTTP answer a kind gets is decided in one place,
`korall_workloads.common.responses` (KServe's split between `errors.py` and `protocol/rest/server.py`).
"""

from __future__ import annotations


class ServiceError(Exception):
    """Something a client asked for went wrong in a way the service understands (the base of every kind)."""

    code = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class MalformedRequest(ServiceError):
    """The request itself is broken: no body, a bad header, a malformed multipart body."""

    code = "bad_request"


class NotFound(ServiceError):
    """What was asked for does not exist here (a camera route without a camera)."""

    code = "not_found"


class TooLarge(ServiceError):
    """Over a configured size limit (the upload, or the image's pixel count)."""

    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    """A content type the service does not take."""

    code = "unsupported_media_type"


class InvalidInput(ServiceError):
    """Well-formed, but not a value the service can use (a parameter out of range, data that is not an image)."""

    code = "invalid_input"


class Unavailable(ServiceError):
    """Cannot serve it now, may later: the model still loading, a source down, no room for another client."""

    code = "not_ready"


class DeadlineExceeded(ServiceError):
    """The work took longer than its configured deadline."""

    code = "timeout"
