"""The kinds of error a workload's client may be told about, as the domain sees them: no HTTP in here.

Code below the HTTP layer (image decoding, the detector, the model catalog, the audio capture, the camera) raises
subclasses of these kinds. Each error carries a stable machine-readable `code` (`invalid_image`, `not_ready`...)
and a message a person can act on, never a status: which HTTP answer a kind gets is decided in one place,
`korall_workloads.common.responses` (KServe's split between `errors.py` and `protocol/rest/server.py`).
"""

from __future__ import annotations


class ServiceError(Exception):
    """Something a client asked for went wrong in a way the service understands (the base of every kind).

    `retry_after_s`, when set, tells the client when trying again makes sense (a rate limit, a full queue).
    """

    code = "internal_error"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class MalformedRequest(ServiceError):
    """The request itself is broken: no body, a bad header, a malformed multipart body."""

    code = "bad_request"


class RequestTimeout(MalformedRequest):
    """The client took too long to send its request head or body (a stalled or trickling upload)."""

    code = "request_timeout"


class HeadTooLarge(MalformedRequest):
    """The request line and headers together are over the configured size."""

    code = "header_too_large"


class Unauthenticated(ServiceError):
    """No credential, or one that matches no token: who is asking is unknown.

    `invalid_token` is True when a credential was given but is not a valid one (RFC 6750 tells the two apart).
    """

    code = "unauthorized"

    def __init__(self, message: str, *, invalid_token: bool = False) -> None:
        super().__init__(message)
        self.invalid_token = invalid_token


class Forbidden(ServiceError):
    """A valid token that may not do this: its scopes do not include `scope`."""

    code = "forbidden"

    def __init__(self, message: str, *, scope: str = "") -> None:
        super().__init__(message)
        self.scope = scope


class RateLimited(ServiceError):
    """Over a rate limit (per token or per client address); `retry_after_s` says when one more request fits."""

    code = "rate_limited"


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


class Overloaded(Unavailable):
    """The service is at capacity (inference queue, upload memory, connections): shed now, retry after a while."""

    code = "overloaded"


class DeadlineExceeded(ServiceError):
    """The work took longer than its configured deadline."""

    code = "timeout"
