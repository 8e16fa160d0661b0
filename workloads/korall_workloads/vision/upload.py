"""Reading an uploaded image from a request, bounded in size, memory and time while it streams in.

The Content-Length header is checked first (an honest oversized upload is refused before one byte is read),
then the body is counted chunk by chunk as it arrives, so a chunked or lying upload is cut off at the limit
instead of being buffered whole. Every byte held is reserved on the request's admission ticket first (`admission`:
all bodies together stay within UPLOAD_BUDGET_BYTES, or the request is shed with 503), and the whole body must
arrive within HTTP_BODY_TIMEOUT_S (else 408 and the connection is closed): a stalled upload pins nothing for long.

A multipart body is read the same way, then parsed by python-multipart on a thread (a body of many thousand tiny
parts takes seconds to parse; the event loop must answer /health meanwhile), at most MAX_PARTS parts, keeping only
the file part (no temporary files). A boundary python-multipart refuses (over 256 characters) is a 400.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from python_multipart.exceptions import FormParserError, MultipartParseError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.requests import ClientDisconnect, Request

from korall_workloads.common.accesslog import BYTES_IN_KEY
from korall_workloads.common.errors import MalformedRequest, RequestTimeout, TooLarge, UnsupportedMediaType

from .admission import Ticket

MAX_PARTS = 16
"""Parts a multipart upload may have: an image needs one; parsing stops (400) past this many."""


class EmptyBody(MalformedRequest):
    """No body, or an empty multipart file part."""

    code = "empty_body"


class MissingFile(MalformedRequest):
    """A multipart body without a file part."""

    code = "missing_file"


IMAGE_TYPES = frozenset(
    {"image/jpeg", "image/jpg", "image/pjpeg", "image/png", "image/webp", "image/bmp", "image/gif", "image/tiff"}
)
GENERIC_TYPES = frozenset({"application/octet-stream", ""})
FILE_FIELDS = (b"file", b"image")


def _check_media_type(media_type: str, where: str) -> None:
    if media_type not in IMAGE_TYPES and media_type not in GENERIC_TYPES:
        raise UnsupportedMediaType(
            f"{where} is {media_type!r}; send image/jpeg, image/png (or another image/*), "
            "application/octet-stream, or multipart/form-data with a 'file' part"
        )


async def _bounded_chunks(
    request: Request, limit: int, ticket: Ticket | None, delimiter: bytes | None = None
) -> AsyncIterator[bytes]:
    """The body's chunks, refused (TooLarge) past `limit`; with a multipart `delimiter`, refused as soon as it shows
    more than MAX_PARTS parts (counted per chunk at C speed: a flood of tiny parts is not read to its end)."""
    declared = request.headers.get("content-length")
    delimiters = 0
    reserved = 0
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise MalformedRequest(f"invalid Content-Length header {declared!r}") from None
        if size > limit:
            raise TooLarge(f"body of {size} bytes is over the upload limit of {limit} bytes (MAX_UPLOAD_BYTES)")
        if ticket is not None:
            ticket.reserve(size)
            reserved = size
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            request.scope[BYTES_IN_KEY] = received  # for the access log, even when this body is refused
            if received > limit:
                raise TooLarge(f"body is over the upload limit of {limit} bytes (MAX_UPLOAD_BYTES)")
            if ticket is not None and received > reserved:  # chunked, or more than declared: reserve as it comes
                ticket.reserve(received - reserved)
                reserved = received
            if delimiter is not None:
                delimiters += chunk.count(delimiter)  # a delimiter split across two chunks is missed: no matter
                if delimiters > MAX_PARTS + 1:  # one more for the closing delimiter
                    raise MalformedRequest(
                        f"multipart body has more than {MAX_PARTS} parts; send the image in one 'file' part"
                    )
            if chunk:
                yield chunk
    except ClientDisconnect:
        raise MalformedRequest("client disconnected before the body was complete") from None


async def read_image_bytes(
    request: Request, limit: int, *, ticket: Ticket | None = None, timeout_s: float | None = None
) -> bytes:
    """The image bytes of a raw-body or multipart upload; raises MalformedRequest, TooLarge, UnsupportedMediaType,
    RequestTimeout past `timeout_s`, and `ticket`'s Overloaded when the body does not fit the upload budget."""
    media_type, params = parse_options_header(request.headers.get("content-type", ""))
    mtype = media_type.decode("latin-1").lower().strip()
    boundary = params.get(b"boundary") if mtype == "multipart/form-data" else None
    if mtype == "multipart/form-data" and not boundary:
        raise MalformedRequest("multipart/form-data without a boundary")
    if boundary is None:
        _check_media_type(mtype, "Content-Type")
    try:
        async with asyncio.timeout(timeout_s):
            delimiter = b"--" + boundary if boundary is not None else None
            chunks = [chunk async for chunk in _bounded_chunks(request, limit, ticket, delimiter)]
    except TimeoutError:
        raise RequestTimeout(
            f"the body did not arrive within {timeout_s:g} s (HTTP_BODY_TIMEOUT_S); send it faster or smaller"
        ) from None
    # A body already buffered by the server arrives as one chunk: used as it is, never copied.
    body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    if boundary is not None:
        return await _read_multipart(body, boundary)
    if not body:
        raise EmptyBody("empty body: send the image as the request body or as a multipart 'file' part")
    return body


class _FilePart:
    """Collects the first file-like part of a multipart body while the parser streams."""

    def __init__(self) -> None:
        self.headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""
        self._current = bytearray()
        self._take = False
        self.data: bytes | None = None
        self.content_type = ""
        self.parts = 0

    def on_part_begin(self) -> None:
        self.headers, self._current, self._take = {}, bytearray(), False
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise MalformedRequest(f"multipart body has more than {MAX_PARTS} parts; send the image in one 'file' part")

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self._field.lower()] = self._value
        self._field, self._value = b"", b""

    def on_headers_finished(self) -> None:
        if self.data is not None:
            return
        _, disposition = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"")
        self._take = name in FILE_FIELDS or b"filename" in disposition

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._take:
            self._current += data[start:end]

    def on_part_end(self) -> None:
        if self._take and self.data is None:
            self.data = bytes(self._current)
            ctype, _ = parse_options_header(self.headers.get(b"content-type", b""))
            self.content_type = ctype.decode("latin-1").lower()
        self._current = bytearray()


async def _read_multipart(body: bytes, boundary: bytes) -> bytes:
    """The file part of a multipart `body`, parsed on a thread (see the module docstring)."""
    if not body:
        raise EmptyBody("empty body: send the image as a multipart 'file' part")
    part = await asyncio.to_thread(_parse_multipart, body, boundary)
    if part.data is None:
        raise MissingFile(
            f"multipart body has no file part ({part.parts} part(s)); send the image in a part named 'file'"
        )
    _check_media_type(part.content_type, "the file part's Content-Type")
    if not part.data:
        raise EmptyBody("the multipart file part is empty")
    return part.data


def _without_preamble(body: bytes, boundary: bytes) -> bytes:
    """`body` from its first delimiter on: RFC 2046 allows text before it (a preamble, which mail clients write),
    and python-multipart refuses one. Without a delimiter the body is left as it is, for the parser to refuse."""
    delimiter = b"--" + boundary
    if body.startswith(delimiter):
        return body
    at = body.find(b"\r\n" + delimiter)
    return body[at + 2 :] if at >= 0 else body


def _parse_multipart(body: bytes, boundary: bytes) -> _FilePart:
    part = _FilePart()
    body = _without_preamble(body, boundary)
    try:
        parser = MultipartParser(
            boundary,
            {
                "on_part_begin": part.on_part_begin,
                "on_header_field": part.on_header_field,
                "on_header_value": part.on_header_value,
                "on_header_end": part.on_header_end,
                "on_headers_finished": part.on_headers_finished,
                "on_part_data": part.on_part_data,
                "on_part_end": part.on_part_end,
            },
        )
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, FormParserError) as exc:
        raise MalformedRequest(f"malformed multipart body: {exc}") from None
    if parser.state != MultipartState.END:  # python-multipart takes a cut body as it is: its last part never ends
        raise MalformedRequest(f"multipart body ends before its closing boundary (--{boundary.decode('latin-1')}--)")
    return part
