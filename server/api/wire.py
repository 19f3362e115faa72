"""A check of the protobuf wire format, for the messages the parser does not check.

The upb parser takes any bytes as a message type without fields (they are all unknown fields to
it), even bytes that are no protobuf encoding at all; a request that does not parse must be
INVALID_ARGUMENT whatever its type.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

_VARINT, _FIXED64, _LENGTH, _START_GROUP, _END_GROUP, _FIXED32 = range(6)
_MAX_FIELD = 2**29 - 1
_MAX_DEPTH = 100


def _varint(data: bytes, at: int) -> tuple[int, int]:
    value = 0
    for shift in range(0, 70, 7):
        if at >= len(data):
            raise DecodeError("truncated varint")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if value >= 2**64:
                raise DecodeError("varint too long")
            return value, at
    raise DecodeError("varint too long")


def check_wire_format(data: bytes) -> None:
    """Raises DecodeError unless `data` is a sequence of well-formed fields."""
    groups: list[int] = []  # the field numbers of the groups open
    at = 0
    while at < len(data):
        key, at = _varint(data, at)
        number, wire_type = key >> 3, key & 7
        if not 1 <= number <= _MAX_FIELD:
            raise DecodeError(f"field number {number}")
        if wire_type == _VARINT:
            _, at = _varint(data, at)
        elif wire_type in (_FIXED64, _FIXED32):
            at += 8 if wire_type == _FIXED64 else 4
        elif wire_type == _LENGTH:
            size, at = _varint(data, at)
            at += size
        elif wire_type == _START_GROUP:
            if len(groups) >= _MAX_DEPTH:
                raise DecodeError("groups nested too deep")
            groups.append(number)
        elif wire_type == _END_GROUP:
            if not groups or groups.pop() != number:
                raise DecodeError(f"end of group {number} that is not open")
        else:
            raise DecodeError(f"wire type {wire_type}")
        if at > len(data):
            raise DecodeError("field past the end")
    if groups:
        raise DecodeError("unterminated group")
