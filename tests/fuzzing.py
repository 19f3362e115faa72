"""Hypothesis strategies for fuzzing protobuf APIs.

`messages(descriptor)` builds any message from its descriptor: strings from empty to ~100 KB
(unicode, control characters, the lengths around every limit), bytes up to 64 KB and now and
then 1 MiB, integers at their boundaries, enums as any int32 (unknown values included),
repeated fields of 0 to 60 items (now and then tens of thousands), maps, nested messages to a
bounded depth. `Hints` mixes in values worth trying for particular fields (real ids, valid
regions) so that requests get past validation and reach deeper code.

`mutations(template, ...)` starts from a valid message and replaces some of its fields.

`payloads(descriptor)` are raw request bytes that are not valid messages (invalid UTF-8 in a
string field, truncated or overlong lengths, broken varints, bad field keys): send them with
identity serializers. Each comes with whether a conforming parser must reject it.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

T = TypeVar("T")

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)

# Lengths around the limits of the API (63: region, 64: tokens and names, 128: names and
# instance ids, 256: usernames, 512: descriptions, 1024: error info, 4096: working dirs) and
# far beyond them.
LONG_LENGTHS = (63, 64, 65, 127, 128, 129, 255, 256, 257, 512, 513, 1024, 1025, 4096, 4097)
HUGE_LENGTHS = (16_384, 65_536, 100_000)
# 12_288 raw bytes are 16_384 bytes of Base64, the default content limit.
BLOB_SIZES = (1, 255, 256, 1024, 12_287, 12_288, 12_289, 16_384, 65_536)
MIB = 1024 * 1024
# More than SQLite's 32_766 bound parameters, and more than anything sane.
HUGE_COUNTS = (1_000, 33_000)

SPECIAL_STRINGS = (
    "",
    " ",
    "\x00",
    "\x00abc",
    "\t\n\r",
    "\x1b[31m",
    "\x7f",
    "\u0085\u2028\u2029",
    "\ufeff",
    "\uffff",
    "\U0010ffff",
    "é",
    "中文",
    "😀",
    "ÿ",
    "²",
    "١٢٣",
    "-",
    "0",
    "-1",
    "99999999999999999999",
    "1e309",
    "NaN",
    "null",
    "true",
    "[]",
    "{}",
    "{{",
    "}}",
    "{{name}}",
    "{{ACS::Unknown}}",
    "../../etc/passwd",
    "/",
    "a/b",
    "%s%n%x",
    "' OR '1'='1",
    '"; DROP TABLE records; --',
    "*",
    "?",
    "%",
    "_",
    "\\",
    "a\x00b",
)
CHARS = ("a", "Z", "9", "-", " ", "\x00", "\n", "é", "中", "😀", "\U0010ffff")

# Byte sequences that are not UTF-8: stray continuation bytes, overlong encodings, surrogates,
# code points past U+10FFFF, truncated sequences, bytes that never occur.
INVALID_UTF8 = (
    b"\xff",
    b"\xfe\xff",
    b"\x80",
    b"\xbf\xbf",
    b"\xc0\xaf",
    b"\xc1\xbf",
    b"\xc3\x28",
    b"\xe0\x80\xaf",
    b"\xe2\x28\xa1",
    b"\xe2\x82",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xf0\x28\x8c\x28",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80",
)


def either(*options: SearchStrategy[T]) -> SearchStrategy[T]:
    """One of `options`, each as likely (repeat one to weigh it more).

    Unlike st.one_of, which flattens nested one_ofs and picks among all their branches, so
    that an option made of many branches crowds out a single one.
    """
    return st.sampled_from(options).flatmap(lambda option: option)


def _int_range(lo: int, hi: int) -> SearchStrategy[int]:
    edges = {lo, lo + 1, -(2**31) - 1, -(2**31), -2, -1, 0, 1, 2, 2**31 - 1, 2**31, 2**32}
    edges |= {2**53 + 1, 10**12, 10**15, hi - 1, hi}
    return st.one_of(
        st.sampled_from(sorted(e for e in edges if lo <= e <= hi)),
        st.integers(max(lo, -1000), min(hi, 1000)),
        st.integers(lo, hi),
    )


def random_bytes(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _random_text(seed: int, size: int) -> str:
    rng = random.Random(seed)
    points: list[int] = []
    while len(points) < size:
        point = rng.choice((rng.randrange(32, 127), rng.randrange(0, 0x110000)))
        if not 0xD800 <= point <= 0xDFFF:  # no surrogates: protobuf strings are UTF-8
            points.append(point)
    return "".join(map(chr, points))


_seeds = st.integers(0, 2**32 - 1)


def strings(*, big: bool = True) -> SearchStrategy[str]:
    """Any text protobuf can carry: empty, special, random unicode, and long."""
    parts: list[SearchStrategy[str]] = [
        st.text(max_size=40),
        st.sampled_from(SPECIAL_STRINGS),
        st.builds(str.__mul__, st.sampled_from(CHARS), st.sampled_from(LONG_LENGTHS)),
    ]
    if big:
        parts.append(st.builds(str.__mul__, st.sampled_from(CHARS), st.sampled_from(HUGE_LENGTHS)))
        parts.append(st.builds(_random_text, _seeds, st.sampled_from(LONG_LENGTHS + HUGE_LENGTHS)))
    return st.one_of(parts)


def blobs(*, big: bool = True) -> SearchStrategy[bytes]:
    """Bytes up to 64 KB (and, when `big`, now and then 1 MiB)."""
    parts: list[SearchStrategy[bytes]] = [
        st.binary(max_size=64),
        st.sampled_from(INVALID_UTF8),
    ]
    if big:
        sizes = (*BLOB_SIZES, MIB)
        parts.append(st.builds(random_bytes, _seeds, st.sampled_from(sizes)))
    else:
        parts.append(st.builds(random_bytes, _seeds, st.sampled_from((1, 255, 1024, 4096))))
    return st.one_of(parts)


@dataclass(frozen=True)
class Hints:
    """Values to try for some fields, by `Message.field` or by field name.

    `mix`: tried alongside random values (for a repeated field: per item; for a map: the
    whole map). `replace`: the only values tried for that field.
    """

    mix: Mapping[str, SearchStrategy[Any]] = field(default_factory=dict)
    replace: Mapping[str, SearchStrategy[Any]] = field(default_factory=dict)

    def lookup(self, table: Mapping[str, SearchStrategy[Any]], f: FieldDescriptor) -> Any:
        owner = f.containing_type.name if f.containing_type is not None else ""
        return table.get(f"{owner}.{f.name}", table.get(f.name))


NO_HINTS = Hints()


def _message_type(f: FieldDescriptor) -> Descriptor:
    assert f.message_type is not None, f"{f.full_name} is not a message field"
    return f.message_type


def _is_map(f: FieldDescriptor) -> bool:
    return f.message_type is not None and f.message_type.GetOptions().map_entry


def scalar(f: FieldDescriptor, *, big: bool = True) -> SearchStrategy[Any]:
    """Random values of a non-message field's type."""
    t = f.type
    if t == FieldDescriptor.TYPE_STRING:
        return strings(big=big)
    if t == FieldDescriptor.TYPE_BYTES:
        return blobs(big=big)
    if t == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if t == FieldDescriptor.TYPE_ENUM:
        assert f.enum_type is not None
        known = st.sampled_from([v.number for v in f.enum_type.values])
        if f.enum_type.is_closed:
            return known
        return st.one_of(known, _int_range(*INT32))  # open enum: unknown values too
    if t in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return _int_range(*INT32)
    if t in (
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_SFIXED64,
    ):
        return _int_range(*INT64)
    if t in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return _int_range(*UINT32)
    if t in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return _int_range(*UINT64)
    if t == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32)
    if t == FieldDescriptor.TYPE_DOUBLE:
        return st.floats()
    raise TypeError(f"no strategy for field {f.full_name} of type {t}")


def _single(
    f: FieldDescriptor, hints: Hints, depth: int, max_depth: int, *, big: bool
) -> SearchStrategy[Any]:
    """One value of the field (one item, for a repeated field)."""
    replaced = hints.lookup(hints.replace, f)
    if replaced is not None:
        return replaced  # type: ignore[no-any-return]
    if f.type == FieldDescriptor.TYPE_MESSAGE:
        base: SearchStrategy[Any] = messages(
            _message_type(f), hints, depth=depth + 1, max_depth=max_depth, big=big
        )
    else:
        base = scalar(f, big=big)
    mixed = hints.lookup(hints.mix, f)
    return base if mixed is None else either(mixed, base)


def _size(value: Any) -> int:
    if isinstance(value, Message):
        return value.ByteSize()
    return len(value) if isinstance(value, str | bytes) else 8


def _repeat(item: Any, count: int) -> list[Any]:
    """`count` copies of `item`, but no more than about 2 MB of them."""
    return [item] * min(count, 2_000_000 // (_size(item) + 2))


def field_values(
    f: FieldDescriptor,
    hints: Hints = NO_HINTS,
    *,
    depth: int = 0,
    max_depth: int = 3,
    big: bool = True,
) -> SearchStrategy[Any]:
    """Values of one field: a list for a repeated field, a dict for a map."""
    if _is_map(f):
        whole = hints.lookup(hints.replace, f)
        if whole is not None:
            return whole  # type: ignore[no-any-return]
        key_field = _message_type(f).fields_by_name["key"]
        value_field = _message_type(f).fields_by_name["value"]
        base = st.dictionaries(
            _single(key_field, hints, depth, max_depth, big=False),
            _single(value_field, hints, depth, max_depth, big=False),
            max_size=60,
        )
        mixed = hints.lookup(hints.mix, f)
        return base if mixed is None else either(mixed, base)
    if f.is_repeated:
        item = _single(f, hints, depth, max_depth, big=False)
        few = st.lists(item, min_size=1, max_size=3)
        return st.one_of(
            st.lists(item, max_size=60),
            few,
            st.lists(item, max_size=60),
            few,
            # The same item many times over: more than any limit, and than SQLite's
            # bound-parameter limit.
            st.builds(_repeat, item, st.sampled_from(HUGE_COUNTS)),
        )
    return _single(f, hints, depth, max_depth, big=big)


def set_field(message: Message, f: FieldDescriptor, value: Any) -> None:
    """Sets a field of `message` from a value drawn by `field_values`."""
    name = f.name
    if _is_map(f):
        target = getattr(message, name)
        value_is_message = _message_type(f).fields_by_name["value"].message_type is not None
        for key, item in value.items():
            if value_is_message:
                target[key].CopyFrom(item)
            else:
                target[key] = item
    elif f.is_repeated:
        target = getattr(message, name)
        if f.type == FieldDescriptor.TYPE_MESSAGE:
            for item in value:
                target.add().CopyFrom(item)
        else:
            target.extend(value)
    elif f.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(message, name).CopyFrom(value)
        getattr(message, name).SetInParent()
    else:
        setattr(message, name, value)


def _build(cls: type[Message], descriptor: Descriptor, values: Mapping[str, Any]) -> Message:
    message = cls()
    for name, value in values.items():
        set_field(message, descriptor.fields_by_name[name], value)
    return message


def messages(
    descriptor: Descriptor,
    hints: Hints = NO_HINTS,
    *,
    depth: int = 0,
    max_depth: int = 3,
    big: bool = True,
) -> SearchStrategy[Message]:
    """Messages of `descriptor`'s type with any subset of their fields set."""
    cls = message_factory.GetMessageClass(descriptor)
    if depth >= max_depth:
        return st.just(cls())
    optional = {
        f.name: field_values(f, hints, depth=depth, max_depth=max_depth, big=big)
        for f in descriptor.fields
    }
    return st.fixed_dictionaries({}, optional=optional).map(
        lambda values: _build(cls, descriptor, values)
    )


def _patched(template: Message, descriptor: Descriptor, values: Mapping[str, Any]) -> Message:
    message = type(template)()
    message.CopyFrom(template)
    for name, value in values.items():
        f = descriptor.fields_by_name[name]
        message.ClearField(name)
        if value is not None:
            set_field(message, f, value)
    return message


def mutations(
    template: Message, hints: Hints = NO_HINTS, *, max_changes: int = 2, max_depth: int = 3
) -> SearchStrategy[Message]:
    """`template` with 1 to `max_changes` of its fields replaced by random values, or cleared:
    mostly valid requests, which get further into the server than random ones."""
    descriptor = cast(Descriptor, template.DESCRIPTOR)
    values = {
        f.name: either(st.none(), *[field_values(f, hints, max_depth=max_depth)] * 3)
        for f in descriptor.fields
    }
    if not values:
        return st.just(template)

    @st.composite
    def changed(draw: st.DrawFn) -> Message:
        fields = st.sampled_from(sorted(values))
        names = draw(st.lists(fields, min_size=1, max_size=max_changes, unique=True))
        return _patched(template, descriptor, {name: draw(values[name]) for name in names})

    return changed()


# Raw bytes --------------------------------------------------------------------------------


def varint(value: int) -> bytes:
    value &= 2**64 - 1
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def _string_paths(
    descriptor: Descriptor, depth: int = 0, max_depth: int = 3
) -> list[tuple[FieldDescriptor, ...]]:
    """Every way down to a string field (through message fields), to `max_depth` levels."""
    paths: list[tuple[FieldDescriptor, ...]] = []
    for f in descriptor.fields:
        if f.type == FieldDescriptor.TYPE_STRING:
            paths.append((f,))
        elif f.type == FieldDescriptor.TYPE_MESSAGE and depth + 1 < max_depth:
            paths.extend((f, *rest) for rest in _string_paths(_message_type(f), depth + 1))
    return paths


def _nest(path: Sequence[FieldDescriptor], payload: bytes) -> bytes:
    """`payload` as the value of the last field of `path`, inside the messages before it."""
    for f in reversed(path):
        payload = key(f.number, 2) + varint(len(payload)) + payload
    return payload


def _bad_utf8(valid: bytes, path: tuple[FieldDescriptor, ...], junk: bytes) -> bytes:
    """`valid` with one more occurrence of a (nested) string field, holding `junk`.

    A repeated message or a map entry is encoded like a nested message, so this reaches
    strings in those too.
    """
    return valid + _nest(path, junk)


def _overlong(valid: bytes, number: int, claimed: int, data: bytes) -> bytes:
    """A length-delimited field whose length runs past the end of the message."""
    return valid + key(number, 2) + varint(len(data) + claimed) + data


def _truncated(valid: bytes, cut: int) -> bytes:
    return valid[: max(0, len(valid) - cut)]


class Payload:
    """Raw request bytes; `undecodable`: every conforming parser rejects them.

    Not a dataclass: hypothesis prints the fields of one, megabytes of bytes included.
    """

    __slots__ = ("data", "kind", "undecodable")

    def __init__(self, data: bytes, undecodable: bool, kind: str) -> None:
        self.data = data
        self.undecodable = undecodable
        self.kind = kind

    def __repr__(self) -> str:
        head = self.data if len(self.data) <= 300 else self.data[:300] + b"..."
        size = len(self.data)
        return f"Payload({self.kind!r}, {size} bytes, undecodable={self.undecodable}: {head!r})"


def payloads(descriptor: Descriptor, hints: Hints = NO_HINTS) -> SearchStrategy[Payload]:
    """Request bytes that are not (or may not be) a valid message of `descriptor`'s type."""
    valid = messages(descriptor, hints, max_depth=2, big=False).map(lambda m: m.SerializeToString())
    junk = st.builds(
        lambda pre, bad, post: pre.encode() + bad + post.encode(),
        st.text(max_size=8),
        st.sampled_from(INVALID_UTF8),
        st.text(max_size=8),
    )
    numbers = st.sampled_from([f.number for f in descriptor.fields] or [1])
    rejected: list[SearchStrategy[Payload]] = [
        st.builds(_overlong, valid, numbers, st.integers(1, 2**32), st.binary(max_size=16)).map(
            lambda b: Payload(b, True, "length past the end")
        ),
        st.builds(lambda v, n: v + b"\xff" * n, valid, st.integers(10, 12)).map(
            lambda b: Payload(b, True, "varint too long")
        ),
        st.builds(lambda v, n: v + key(n, 7), valid, numbers).map(
            lambda b: Payload(b, True, "wire type 7")
        ),
        valid.map(lambda v: Payload(v + key(0, 0) + b"\x00", True, "field number 0")),
        valid.map(lambda v: Payload(v + key(1, 3), True, "unterminated group")),
    ]
    paths = _string_paths(descriptor)
    if paths:
        rejected.append(
            st.builds(_bad_utf8, valid, st.sampled_from(paths), junk).map(
                lambda b: Payload(b, True, "invalid UTF-8")
            )
        )
    maybe: list[SearchStrategy[Payload]] = [
        st.binary(max_size=128).map(lambda b: Payload(b, False, "noise")),
        st.builds(_truncated, valid, st.integers(1, 16)).map(
            lambda b: Payload(b, False, "truncated")
        ),
        # A field sent with another wire type than its own: an unknown field to the parser.
        st.builds(
            lambda v, n, x: v + key(n, 0) + varint(x), valid, numbers, _int_range(*INT64)
        ).map(lambda b: Payload(b, False, "wrong wire type")),
    ]
    return st.one_of(*rejected, *maybe)
