"""Tags on instances, and tag selectors that pick the instances of an invocation."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument

MAX_TAGS = 20
KEY_CHARS = 128
VALUE_CHARS = 128
RESERVED_PREFIXES = ("acs:", "cloudassist:")

# (key, value) pairs; an empty value in a selector matches any value.
TagPairs = tuple[tuple[str, str], ...]


def _check_pair(key: str, value: str, field: str) -> None:
    if not key or len(key) > KEY_CHARS or key != key.strip():
        raise InvalidArgument(
            reasons.TAG_KEY_MALFORMED,
            f"{field}: tag key {key[:KEY_CHARS]!r} must be 1 to {KEY_CHARS} characters without "
            "leading or trailing spaces",
            field=field,
        )
    if key.lower().startswith(RESERVED_PREFIXES):
        raise InvalidArgument(
            reasons.TAG_KEY_MALFORMED,
            f"{field}: tag key {key!r} starts with a reserved prefix "
            f"({', '.join(RESERVED_PREFIXES)})",
            field=field,
        )
    if len(value) > VALUE_CHARS:
        raise InvalidArgument(
            reasons.TAG_VALUE_MALFORMED,
            f"{field}: the value of tag {key!r} is longer than {VALUE_CHARS} characters",
            field=field,
        )


def check_tags(pairs: Iterable[tuple[str, str]], field: str = "tags") -> dict[str, str]:
    """Tags to set on a resource: valid keys and values, each key once, at most 20."""
    tags: dict[str, str] = {}
    for key, value in pairs:
        _check_pair(key, value, field)
        if key in tags:
            raise InvalidArgument(
                reasons.TAG_KEY_MALFORMED, f"{field}: tag key {key!r} is given twice", field=field
            )
        tags[key] = value
    if len(tags) > MAX_TAGS:
        raise InvalidArgument(
            reasons.TAGS_EXCEED_LIMIT,
            f"{field}: {len(tags)} tags, the limit is {MAX_TAGS}",
            field=field,
            metadata={"count": str(len(tags)), "limit": str(MAX_TAGS)},
        )
    return tags


def check_selector(pairs: Iterable[tuple[str, str]], field: str) -> TagPairs:
    """A tag selector: the same rules as tags; values may be empty (any value)."""
    return tuple(sorted(check_tags(pairs, field).items()))


def merged_tags(current: Mapping[str, str], added: Mapping[str, str]) -> dict[str, str]:
    """An instance's tags after TagInstances, or InvalidArgument past the limit."""
    merged = {**current, **added}
    if len(merged) > MAX_TAGS:
        raise InvalidArgument(
            reasons.TAGS_EXCEED_LIMIT,
            f"tags: an instance would have {len(merged)} tags, the limit is {MAX_TAGS}",
            field="tags",
            metadata={"count": str(len(merged)), "limit": str(MAX_TAGS)},
        )
    return merged


def matches(tags: Mapping[str, str], selector: TagPairs) -> bool:
    return all(key in tags and (not value or tags[key] == value) for key, value in selector)
