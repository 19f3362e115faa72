"""The gRPC-Web wire format (binary mode), as the protocol's spec (PROTOCOL-WEB.md) defines it.

A body is a series of frames: one flag byte (0x00 a message, 0x80 trailers; bit 0x01 would
mark a compressed message, which no browser client here sends), a 4-byte big-endian length,
then the bytes. A response ends with a trailers frame whose payload is HTTP/1-style header
lines; an answer with no message may put the status in the HTTP headers instead
("trailers-only").
"""

from __future__ import annotations

import base64
import re
import struct

import grpc

CONTENT_TYPES = ("application/grpc-web", "application/grpc-web+proto")
RESPONSE_CONTENT_TYPE = "application/grpc-web+proto"
DATA_FLAG = 0x00
COMPRESSED_FLAG = 0x01
TRAILERS_FLAG = 0x80
HEADER_BYTES = 5
STATUS_DETAILS_KEY = "grpc-status-details-bin"

_TIMEOUT = re.compile(r"(\d{1,8})([HMSmun])")
_TIMEOUT_SECONDS = {"H": 3600.0, "M": 60.0, "S": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9}


class FramingError(ValueError):
    """The request body is not one uncompressed gRPC-Web message."""


def frame(message: bytes, flag: int = DATA_FLAG) -> bytes:
    return struct.pack(">BI", flag, len(message)) + message


def unframe_request(body: bytes) -> bytes:
    """The one message of a unary or server-streaming request's body."""
    if len(body) < HEADER_BYTES:
        raise FramingError("the body holds no gRPC-Web frame")
    flag, length = struct.unpack(">BI", body[:HEADER_BYTES])
    if flag & COMPRESSED_FLAG:
        raise FramingError("compressed messages are not accepted (grpc-encoding: identity)")
    if flag != DATA_FLAG:
        raise FramingError(f"the first frame is not a message (flag 0x{flag:02x})")
    if len(body) != HEADER_BYTES + length:
        raise FramingError(
            f"the body is {len(body)} bytes; one message frame of {length} bytes takes "
            f"{HEADER_BYTES + length}"
        )
    return body[HEADER_BYTES:]


def percent_encode(text: str) -> str:
    """grpc-message's encoding: UTF-8, with '%' and bytes outside 0x20-0x7E as %XX."""
    return "".join(
        chr(b) if 0x20 <= b <= 0x7E and b != 0x25 else f"%{b:02X}" for b in text.encode()
    )


def status_headers(
    code: grpc.StatusCode, message: str = "", details: bytes | None = None
) -> dict[str, str]:
    """grpc-status, grpc-message and grpc-status-details-bin (a serialized google.rpc.Status,
    Base64), as trailers or as the headers of a trailers-only answer."""
    headers = {"grpc-status": str(code.value[0])}
    if message:
        headers["grpc-message"] = percent_encode(message)
    if details:
        headers[STATUS_DETAILS_KEY] = base64.b64encode(details).decode()
    return headers


def trailers_frame(headers: dict[str, str]) -> bytes:
    lines = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
    return frame(lines.encode(), TRAILERS_FLAG)


def parse_timeout(value: str) -> float | None:
    """grpc-timeout ("10S", "250m") in seconds; None when absent or malformed."""
    match = _TIMEOUT.fullmatch(value.strip())
    if match is None:
        return None
    return int(match.group(1)) * _TIMEOUT_SECONDS[match.group(2)]
